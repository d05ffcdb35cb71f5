// Package smtp is the SMTP submission proxy: it relays a mail client's
// session to the real submission server, signing and encrypting each message
// on its way, and answers the client with the upstream's own replies.
package smtp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/policy"
	"smimeproxy/proxy"
)

// fallbackMaxMessage bounds a message, in bytes, when the upstream
// advertises no SIZE limit or could not be asked: the proxy holds each
// message in memory while it signs and encrypts it. The memory budget may
// bound it further (maxMessageSize).
const fallbackMaxMessage = 64 << 20

// Proxy is the submission proxy: mail clients submit to it as they would to
// their provider, and it relays to the upstream server what policy asks for,
// signed and encrypted. See New.
type Proxy struct {
	mu      sync.Mutex
	opts    proxy.Options // the latest, for Start and Reload
	lns     []net.Listener
	started bool
	closed  bool

	gen     atomic.Pointer[gen] // what new connections get
	conns   map[*conn]struct{}
	limiter *proxy.Limiter // connection limits, across generations

	// life ends when Shutdown begins (the re-probe stops); base ends when
	// Shutdown stops waiting, cancelling every session's upstream I/O.
	life, base             context.Context
	endLife, endBase       context.CancelFunc
	loops, serving, probes sync.WaitGroup
}

// gen is one generation of settings: Start makes the first and Reload
// the next. New connections go to the newest; open sessions keep theirs.
type gen struct {
	srv      *Proxy
	opts     proxy.Options
	cfg      config.SMTP
	policy   *policy.Policy
	timeouts config.Timeouts
	up       *proxy.Upstream
	caps     upstreamCaps
	name     string // the proxy's name, in the greeting and its own EHLO
	tls      *tls.Config
	log      *slog.Logger
	metrics  *proxy.Metrics
	budget   *proxy.Budget
	servers  []*gosmtp.Server // one per listener, in config order
	feeds    []*feed
}

// New checks opts and returns a proxy that is not yet listening.
func New(opts proxy.Options) (*Proxy, error) {
	opts, err := checkSMTPOptions(opts)
	if err != nil {
		return nil, err
	}
	s := &Proxy{opts: opts, conns: map[*conn]struct{}{}, limiter: proxy.NewLimiter("smtp", opts.Config.SMTP.Limits, opts.Metrics)}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.base, s.endBase = context.WithCancel(context.Background())
	return s, nil
}

// checkSMTPOptions enforces what config.Validate checks, since the options
// may come from elsewhere, and fills in the defaults.
func checkSMTPOptions(opts proxy.Options) (proxy.Options, error) {
	if opts.Config == nil || opts.Policy == nil || opts.Keys == nil || opts.Certs == nil {
		return opts, errors.New("proxy: SMTP needs Config, Policy, Keys and Certs")
	}
	c := opts.Config.SMTP
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("smtp.listen: no listener"))
	}
	for i, l := range c.Listen {
		host, _, err := net.SplitHostPort(l.Addr)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("smtp.listen[%d]: invalid address %q", i, l.Addr))
		case l.TLS == config.TLSNone && !l.InsecurePlaintext && !config.IsLoopback(host):
			errs = append(errs, fmt.Errorf("smtp.listen[%d]: tls: none on %s is allowed on loopback only, unless insecure_plaintext is set", i, l.Addr))
		case l.TLS != config.TLSNone && l.TLS != config.TLSStartTLS && l.TLS != config.TLSImplicit:
			errs = append(errs, fmt.Errorf("smtp.listen[%d]: invalid tls %q", i, l.TLS))
		case l.TLS != config.TLSNone && opts.Cert == nil:
			errs = append(errs, fmt.Errorf("smtp.listen[%d]: tls: %s needs a certificate", i, l.TLS))
		}
	}
	up := c.Upstream
	if host, _, err := net.SplitHostPort(up.Addr); err != nil {
		errs = append(errs, fmt.Errorf("smtp.upstream: invalid address %q", up.Addr))
	} else if up.TLS == config.TLSNone && !up.InsecurePlaintext && !config.IsLoopback(host) {
		errs = append(errs, fmt.Errorf("smtp.upstream: tls: none to %s is allowed on loopback only, unless insecure_plaintext is set", up.Addr))
	} else if up.TLS != config.TLSNone && up.TLS != config.TLSStartTLS && up.TLS != config.TLSImplicit {
		errs = append(errs, fmt.Errorf("smtp.upstream: invalid tls %q", up.TLS))
	}
	if opts.Budget == nil && opts.Config.MemoryBudgetMB <= 0 {
		errs = append(errs, errors.New("memory_budget_mb: must be positive"))
	}
	if t := c.Timeouts; t.Connect <= 0 || t.Command <= 0 || t.Data <= 0 {
		errs = append(errs, errors.New("smtp.timeouts: connect, command and data must all be positive"))
	}
	if l := c.Limits; l.MaxConnections < 0 || l.MaxConnectionsPerIP < 0 || l.PreAuthIdle < 0 || l.PreAuthTime < 0 {
		errs = append(errs, errors.New("smtp.limits: no limit may be negative (0: none)"))
	}
	if err := errors.Join(errs...); err != nil {
		return opts, fmt.Errorf("proxy: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = proxy.NewMetrics(nil)
	}
	if opts.Budget == nil {
		opts.Budget = proxy.NewBudget(int64(opts.Config.MemoryBudgetMB)<<20, opts.Metrics)
	}
	return opts, nil
}

// newGen builds the settings a generation of sessions uses. The servers and
// their feeds are made by serve.
func (s *Proxy) newGen(opts proxy.Options) (*gen, error) {
	c := opts.Config.SMTP
	up, err := proxy.NewUpstream(c.Upstream, c.Timeouts.Connect.D())
	if err != nil {
		return nil, err
	}
	name := opts.Config.ServerName
	if name == "" {
		if name, err = os.Hostname(); err != nil || name == "" {
			name = "localhost"
		}
	}
	g := &gen{
		srv: s, opts: opts, cfg: c, policy: opts.Policy, timeouts: c.Timeouts, up: up, name: name,
		log: opts.Logger.With("proto", "smtp"), metrics: opts.Metrics, budget: opts.Budget,
	}
	if opts.Cert != nil {
		g.tls = opts.Cert.ServerConfig()
	}
	return g, nil
}

// probe asks the upstream what it offers. When it cannot be reached the
// generation offers a conservative set (no SMTPUTF8, no DSN, the fallback
// size, AUTH PLAIN LOGIN) and a re-probe replaces it once the upstream answers.
func (s *Proxy) probe(ctx context.Context, g *gen) bool {
	caps, err := probeSMTP(ctx, g)
	if err != nil {
		g.log.Warn("cannot ask the upstream what it offers; offering a conservative set until it answers", "upstream", g.up.Addr, "err", err)
		g.caps = upstreamCaps{auth: []string{"PLAIN", "LOGIN"}}
		return false
	}
	g.caps = caps
	return true
}

// Start asks the upstream which extensions it offers, so that clients are
// offered the same (SIZE with its limit, SMTPUTF8, DSN, AUTH mechanisms),
// opens every configured listener and serves in the background. It fails
// when a listener cannot be opened; an upstream that does not answer is
// logged and asked again later.
func (s *Proxy) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("proxy: SMTP already started or shut down")
	}
	g, err := s.newGen(s.opts)
	if err != nil {
		return err
	}
	known := s.probe(ctx, g)
	var lc net.ListenConfig
	for _, l := range g.cfg.Listen {
		ln, err := lc.Listen(ctx, "tcp", l.Addr)
		if err != nil {
			for _, o := range s.lns {
				o.Close()
			}
			s.lns = nil
			return fmt.Errorf("proxy: SMTP listen on %s: %w", l.Addr, err)
		}
		if l.ProxyProtocol {
			ln = proxy.ProxyProtocolListener(ln, 0, g.log)
		}
		s.lns = append(s.lns, ln)
	}
	s.started = true
	s.serve(g)
	for i, ln := range s.lns {
		s.loops.Add(1)
		go s.accept(i, ln)
		g.log.Info("listening", "addr", ln.Addr().String(), "tls", string(g.cfg.Listen[i].TLS))
	}
	if !known {
		s.reprobe(g)
	}
	return nil
}

// Addrs returns the listeners' addresses, in config order: with port 0 in
// the config, the ports the system chose. Nil before Start.
func (s *Proxy) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		addrs[i] = ln.Addr()
	}
	return addrs
}

// serve makes g's servers, one per listener, makes g current and starts
// serving its feeds. The caller holds s.mu.
func (s *Proxy) serve(g *gen) {
	size := int64(fallbackMaxMessage)
	if g.caps.size > 0 {
		size = g.caps.size
	}
	if budget := maxMessageSize(g.budget, g.policy.Opaque); budget < size {
		g.log.Warn("the memory budget limits messages below the mail server's size limit; raise memory_budget_mb to accept larger ones",
			"max_bytes", budget, "upstream_max_bytes", size)
		size = budget
	}
	for i, l := range g.cfg.Listen {
		srv := gosmtp.NewServer(g)
		srv.Domain = g.name
		srv.ReadTimeout = g.timeouts.Command.D()
		srv.WriteTimeout = g.timeouts.Command.D()
		srv.MaxMessageBytes = size
		srv.EnableSMTPUTF8 = g.caps.utf8
		srv.EnableDSN = g.caps.dsn
		srv.ErrorLog = errorLog{g.log}
		if l.TLS == config.TLSStartTLS {
			srv.TLSConfig = startTLSConfig(g.tls)
		}
		// A listener without TLS is on loopback or explicitly insecure
		// (checkSMTPOptions): AUTH is offered there too.
		srv.AllowInsecureAuth = l.TLS == config.TLSNone
		feed := &feed{addr: s.lns[i].Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
		g.servers = append(g.servers, srv)
		g.feeds = append(g.feeds, feed)
	}
	s.gen.Store(g)
	for i, srv := range g.servers {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			_ = srv.Serve(g.feeds[i])
		}()
	}
}

// retire stops g taking connections; its open sessions run to their end.
func (s *Proxy) retire(g *gen) {
	for i, srv := range g.servers {
		g.feeds[i].Close()
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			_ = srv.Shutdown(context.Background()) // waits for its connections
		}()
	}
}

// accept takes connections on listener i and hands each to the current
// generation's server for it.
func (s *Proxy) accept(i int, ln net.Listener) {
	defer s.loops.Done()
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.gen.Load().log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		release, err := s.limiter.Admit(raw.RemoteAddr())
		if err != nil {
			s.refuse(i, raw, err)
			continue
		}
		cc := s.track(raw, release, s.gen.Load().cfg.Listen[i].TLS == config.TLSImplicit)
		for {
			g := s.gen.Load()
			var c net.Conn = cc
			if g.cfg.Listen[i].TLS == config.TLSImplicit {
				c = tls.Server(cc, g.tls)
			}
			if g.feeds[i].deliver(c) {
				break
			}
			if s.isClosed() {
				cc.Close()
				break
			}
		}
	}
}

func (s *Proxy) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// refuse turns away a connection over the limits with Postfix's reply, in
// the clear before STARTTLS; on an implicit TLS listener it only closes,
// since a reply would need a TLS handshake, which is what the limits spare.
func (s *Proxy) refuse(i int, raw net.Conn, why error) {
	g := s.gen.Load()
	g.log.Warn("connection refused", "remote", raw.RemoteAddr().String(), "err", why)
	if g.cfg.Listen[i].TLS != config.TLSImplicit {
		_ = raw.SetWriteDeadline(time.Now().Add(g.timeouts.Command.D()))
		_, _ = io.WriteString(raw, replyText(refusal(g.name, raw.RemoteAddr(), why))+"\r\n")
	}
	raw.Close()
}

// track registers a new client connection, held to the pre-login limits,
// so that Shutdown can reach it.
func (s *Proxy) track(raw net.Conn, release func(), implicitTLS bool) *conn {
	var id [6]byte
	_, _ = rand.Read(id[:])
	g := s.gen.Load()
	guard := s.limiter.Guard(raw)
	cc := &conn{Conn: guard, guard: guard, srv: s, id: hex.EncodeToString(id[:]), release: release,
		name: g.name, writeTimeout: g.timeouts.Command.D(), implicitTLS: implicitTLS}
	s.mu.Lock()
	s.conns[cc] = struct{}{}
	s.mu.Unlock()
	return cc
}

func (s *Proxy) untrack(cc *conn) {
	s.mu.Lock()
	delete(s.conns, cc)
	s.mu.Unlock()
}

// Shutdown stops accepting connections and asks every open session to end:
// idle ones get 421 at once; one that is transferring or relaying a message
// finishes it (the client gets the upstream's reply) and ends then. When ctx
// ends first, every connection is closed, upstream ones included, and
// Shutdown returns ctx's error. Either way no goroutine is left behind.
func (s *Proxy) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.closed {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.endLife()
	s.loops.Wait()
	s.probes.Wait()
	s.retire(s.gen.Load())
	s.eachConn((*conn).drain)

	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.endBase()
		return nil
	case <-ctx.Done():
	}
	s.endBase()
	s.eachConn(func(cc *conn) { cc.Close() })
	<-done
	return fmt.Errorf("proxy: SMTP shutdown cut sessions short: %w", ctx.Err())
}

func (s *Proxy) eachConn(f func(*conn)) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for cc := range s.conns {
		conns = append(conns, cc)
	}
	s.mu.Unlock()
	for _, cc := range conns {
		f(cc)
	}
}

// Reload makes new sessions use opts: policy, keys, certificates, timeouts,
// upstream, TLS certificate and the extensions offered (the upstream is asked
// again when it changed). Open sessions keep what they started with and are
// not dropped. Listener addresses do not change: opts must list the same
// smtp.listen addresses in the same order (their TLS modes may change), or
// Reload fails and nothing changes; moving a listener needs a restart.
func (s *Proxy) Reload(opts proxy.Options) error {
	opts, err := checkSMTPOptions(opts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("proxy: SMTP is shut down")
	}
	if !s.started {
		s.opts = opts
		s.mu.Unlock()
		return nil
	}
	old := s.opts.Config.SMTP.Listen
	s.mu.Unlock()
	addr := func(l config.Listener) string { return fmt.Sprint(l.Addr, " ", l.ProxyProtocol) }
	if !slices.Equal(mapSlice(old, addr), mapSlice(opts.Config.SMTP.Listen, addr)) {
		return errors.New("proxy: smtp.listen addresses or proxy_protocol changed; restart to change listeners")
	}
	g, err := s.newGen(opts)
	if err != nil {
		return err
	}
	cur := s.gen.Load()
	known := true
	if cur.caps.known && cur.cfg.Upstream == g.cfg.Upstream {
		g.caps = cur.caps
	} else {
		known = s.probe(s.life, g)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("proxy: SMTP is shut down")
	}
	s.opts = opts
	s.limiter.SetLimits(opts.Config.SMTP.Limits)
	prev := s.gen.Load()
	s.serve(g)
	if !known {
		s.reprobe(g)
	}
	s.mu.Unlock()
	s.retire(prev)
	g.log.Info("reloaded")
	return nil
}

// reprobe asks the upstream again, every connect timeout, until it answers;
// then the offered extensions follow it in a new generation, unless a
// Reload came first. The caller holds s.mu.
func (s *Proxy) reprobe(g *gen) {
	s.probes.Add(1)
	go func() {
		defer s.probes.Done()
		t := time.NewTicker(g.timeouts.Connect.D())
		defer t.Stop()
		for {
			select {
			case <-s.life.Done():
				return
			case <-t.C:
			}
			next, err := s.newGen(g.opts)
			if err != nil || !s.probe(s.life, next) {
				continue
			}
			s.mu.Lock()
			if s.closed || s.gen.Load() != g {
				s.mu.Unlock()
				return
			}
			s.serve(next)
			s.mu.Unlock()
			s.retire(g)
			next.log.Info("the upstream answers; offering what it offers")
			return
		}
	}()
}

// Check reports whether the upstream is ready: it connects, reads the
// greeting, upgrades with STARTTLS when configured, says EHLO and QUIT.
func (s *Proxy) Check(ctx context.Context) error {
	g := s.gen.Load()
	if g == nil {
		s.mu.Lock()
		opts := s.opts
		s.mu.Unlock()
		var err error
		if g, err = s.newGen(opts); err != nil {
			return err
		}
	}
	u, err := dialSMTPUpstream(ctx, g)
	if err != nil {
		return fmt.Errorf("proxy: SMTP upstream: %w", err)
	}
	u.quit()
	return nil
}

func mapSlice[T, U any](in []T, f func(T) U) []U {
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// feed is the listener a generation's go-smtp server serves: the accept
// loop hands it connections, so that a Reload can switch servers without
// closing the real listener.
type feed struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (f *feed) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

func (f *feed) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *feed) Addr() net.Addr { return f.addr }

// deliver hands c to the server; false when the feed is closed.
func (f *feed) deliver(c net.Conn) bool {
	select {
	case f.conns <- c:
		return true
	case <-f.done:
		return false
	}
}

// conn is a client's TCP connection, under TLS when there is TLS, held to
// the pre-login limits by its Guard. It lets Shutdown end a session between
// commands without cutting a message short, and a session hang up after a
// 421 reply; and it ends a session that times out between commands with a
// reply of its own (see bye).
type conn struct {
	net.Conn     // the Guard
	guard        *proxy.Guard
	srv          *Proxy
	id           string
	release      func() // the Limiter's count of this connection
	name         string // the proxy's, for the last reply
	writeTimeout time.Duration
	implicitTLS  bool

	mu       sync.Mutex
	busy     bool // a message is being read or relayed
	dataRead bool // Data is reading the message from this connection (DATA, not BDAT)
	state    int  // connOpen, connDraining or connHangup
	// smtp is go-smtp's connection, from the first EHLO on: its Conn is
	// where replies go (the TLS connection after STARTTLS).
	smtp       *gosmtp.Conn
	tlsStarted bool // a STARTTLS handshake began
	closing    sync.Once

	// Read's buffer; only its caller, go-smtp's (or TLS's) reader, uses it.
	rbuf  []byte  // read from the connection, not yet by the caller
	rpool *[]byte // what rbuf is in, from readBufs, while it holds anything
	full  bool    // the last read filled what it was given: more may be waiting
}

const (
	connOpen = iota
	connDraining
	connHangup
)

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	busy, state, dataRead := c.busy, c.state, c.dataRead
	c.mu.Unlock()
	switch {
	case state == connHangup:
		return 0, net.ErrClosed
	case state == connDraining && !busy:
		return 0, c.bye(errSMTPShuttingDown)
	}
	n, err := c.read(p)
	if err != nil && !dataRead && isTimeout(err) {
		c.mu.Lock()
		draining := c.state == connDraining
		c.mu.Unlock()
		if draining {
			err = errSMTPShuttingDown
		}
		return n, c.bye(err)
	}
	return n, err
}

// readChunk is how much read takes from the connection at once while a
// message arrives.
const readChunk = 64 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// read serves p from what an earlier read took beyond it, or from the
// connection. go-smtp reads in 4 KiB: when a read fills p, more is likely
// waiting (a message arrives), and the next read takes up to readChunk at
// once into a pooled buffer, given back once the caller has read it all.
// A message costs a system call per readChunk, not per 4 KiB, and a
// connection waiting for a command holds no buffer. The bytes reach the
// caller in the order they came, whoever it is (TLS after STARTTLS).
func (c *conn) read(p []byte) (int, error) {
	if len(c.rbuf) > 0 {
		n := copy(p, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			readBufs.Put(c.rpool)
			c.rbuf, c.rpool = nil, nil
		}
		return n, nil
	}
	if !c.full || len(p) >= readChunk {
		n, err := c.Conn.Read(p)
		c.full = n == len(p)
		return n, err
	}
	bp := readBufs.Get().(*[]byte)
	n, err := c.Conn.Read(*bp)
	c.full = n == len(*bp)
	m := copy(p, (*bp)[:n])
	if m == n {
		readBufs.Put(bp)
		return m, err
	}
	// The rest comes with the next reads, and err, if any, after it.
	c.rbuf, c.rpool = (*bp)[m:n], bp
	return m, nil
}

// bye ends the session from inside a read that timed out or was cut short
// by a drain: it writes the last reply (see goodbye) where the client reads
// it, and returns net.ErrClosed, which go-smtp takes for the end of the
// connection without a reply of its own (to a timeout it would answer
// "421 Idle timeout, bye bye", whatever the cause). Go's TLS lets a write
// happen within a read, once the handshake is done.
func (c *conn) bye(why error) error {
	c.mu.Lock()
	c.state = connHangup
	out := c.replyConn()
	c.mu.Unlock()
	if out != nil {
		_ = out.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		_, _ = io.WriteString(out, replyText(goodbye(c.name, why))+"\r\n")
	}
	return net.ErrClosed
}

// replyConn is the connection a reply must be written to now: the TLS one
// once TLS is up. It is nil when that is unknown or a handshake is under
// way (TLS begun before EHLO); c.mu is held.
func (c *conn) replyConn() net.Conn {
	if c.smtp != nil {
		if out := c.smtp.Conn(); out != net.Conn(c) || !c.tlsStarted {
			return out
		}
		return nil
	}
	if c.implicitTLS || c.tlsStarted {
		return nil
	}
	return c
}

// setSMTP records go-smtp's connection, at the first EHLO.
func (c *conn) setSMTP(sc *gosmtp.Conn) {
	c.mu.Lock()
	if c.smtp == nil {
		c.smtp = sc
	}
	c.mu.Unlock()
}

// startTLSConfig is tc for STARTTLS, noting on each connection that its
// handshake began (see replyConn).
func startTLSConfig(tc *tls.Config) *tls.Config {
	tc = tc.Clone()
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if cc := connOf(hello.Conn); cc != nil {
			cc.mu.Lock()
			cc.tlsStarted = true
			cc.mu.Unlock()
		}
		return nil, nil
	}
	return tc
}

// setBusy marks the time a message is read and relayed, which a drain lets
// finish; dataRead, the time Data reads it from this connection, whose
// failures are Data's to answer.
func (c *conn) setBusy(busy, dataRead bool) {
	c.mu.Lock()
	c.busy, c.dataRead = busy, dataRead
	c.mu.Unlock()
}

// drain ends the session at its next read between commands, or now when it
// is waiting for one.
func (c *conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == connOpen {
		c.state = connDraining
	}
	if !c.busy {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
}

// hangup closes the connection once the reply being written is out: go-smtp
// reads again only after flushing it.
func (c *conn) hangup() {
	c.mu.Lock()
	c.state = connHangup
	c.mu.Unlock()
}

func (c *conn) Close() error {
	c.closing.Do(func() {
		c.srv.untrack(c)
		c.release()
	})
	return c.Conn.Close()
}

// connOf finds the conn under a go-smtp connection, TLS or not.
func connOf(c net.Conn) *conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*conn)
	return cc
}

// errorLog passes go-smtp's own error reports (failed TLS handshakes,
// broken connections, recovered panics) to the log.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Printf(format string, v ...any) { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l errorLog) Println(v ...any)               { l.log.Warn(fmt.Sprint(v...)) }
