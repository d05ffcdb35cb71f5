// Package imap is the IMAP proxy: a relay of the upstream server's own
// protocol that rewrites only the answers about S/MIME messages.
//
// A mail client logs in to the proxy as it would to the real server; the
// proxy logs in to the upstream with the same credentials on a connection
// of the client's own (session.go). From then on the client's commands and
// the upstream's responses pass through as bytes, literals included, in
// order (relay.go): sequence numbers, UIDs, EXISTS, EXPUNGE, VANISHED,
// RECENT, flags, MODSEQ, response codes and capabilities are the
// upstream's. The one exception is a FETCH that asks for the content of a
// message that is S/MIME (fetch.go): the relay opens it (decrypts with the
// logged-in user's keys, verifies, harvests the signer's certificate) and
// answers every content item from the opened message, with an
// Authentication-Results field at its top, inside the FETCH response the
// upstream produced for it. A SEARCH or SORT with text keys is answered
// for the S/MIME messages from the opened messages too (search.go), and
// merged with the upstream's answer for the rest.
//
// # Upstream connections
//
// The upstream connection is made when the client logs in, not when it
// connects: an unauthenticated client costs the upstream nothing, and an
// upstream that cannot be reached answers the LOGIN with NO [UNAVAILABLE]
// and the reason. Start probes the upstream once (connect, TLS, greeting,
// capabilities) so that a misconfiguration shows at start-up; an upstream
// that is merely down only logs a warning, and Check reports it.
//
// # Capabilities
//
// Before login the client is offered what the proxy does itself
// (IMAP4rev1, SASL-IR, LITERAL+, ID, STARTTLS on a STARTTLS listener,
// AUTH=PLAIN and AUTH=LOGIN, OAUTHBEARER and XOAUTH2 where the upstream has
// them). After login the capabilities are the upstream's, minus those in
// caps.go that the relay cannot keep honest.
package imap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// Proxy is the IMAP proxy.
type Proxy struct {
	log     *slog.Logger
	cache   *msgCache
	kinds   *kindCache
	limiter *proxy.Limiter // connection limits, across reloads

	mu        sync.Mutex
	opts      proxy.Options
	up        *proxy.Upstream
	upCaps    []string // the upstream's, before login, as last probed
	gen       uint64   // counts Reloads; opened messages are cached per generation
	started   bool
	closed    bool
	listeners []listener
	sessions  map[*session]struct{}

	wg sync.WaitGroup // accept loops and sessions
}

type listener struct {
	conf config.Listener
	ln   net.Listener
}

// New checks opts and builds the proxy; nothing touches the network until
// Start.
func New(opts proxy.Options) (*Proxy, error) {
	opts, up, err := options(opts)
	if err != nil {
		return nil, err
	}
	return &Proxy{
		log:      opts.Logger,
		cache:    newMsgCache(int64(opts.Config.IMAP.CacheMB)<<20, opts.Metrics),
		kinds:    newKindCache(maxKinds),
		limiter:  proxy.NewLimiter("imap", opts.Config.IMAP.Limits, opts.Metrics),
		opts:     opts,
		up:       up,
		sessions: map[*session]struct{}{},
	}, nil
}

// options validates opts and fills in the defaults.
func options(opts proxy.Options) (proxy.Options, *proxy.Upstream, error) {
	if opts.Config == nil || opts.Policy == nil || opts.Keys == nil || opts.Certs == nil {
		return opts, nil, errors.New("proxy: IMAP needs Config, Policy, Keys and Certs")
	}
	c := opts.Config.IMAP
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("proxy: imap."+format, args...)) }
	if len(c.Listen) == 0 {
		bad("listen: no listener")
	}
	for i, l := range c.Listen {
		if err := proxy.CheckEndpoint(l.Addr, l.TLS, l.InsecurePlaintext); err != nil {
			bad("listen[%d]: %v", i, err)
		}
		if l.TLS != config.TLSNone && opts.Cert == nil {
			bad("listen[%d]: tls %s needs a TLS certificate", i, l.TLS)
		}
	}
	if err := proxy.CheckEndpoint(c.Upstream.Addr, c.Upstream.TLS, c.Upstream.InsecurePlaintext); err != nil {
		bad("upstream: %v", err)
	}
	if c.Timeouts.Connect <= 0 || c.Timeouts.Command <= 0 || c.Timeouts.Data <= 0 {
		bad("timeouts: connect, command and data must all be positive")
	}
	if c.CacheMB < 0 {
		bad("cache_mb: must not be negative")
	}
	if len(errs) > 0 {
		return opts, nil, errors.Join(errs...)
	}
	up, err := proxy.NewUpstream(c.Upstream, c.Timeouts.Connect.D())
	if err != nil {
		return opts, nil, err
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
	return opts, up, nil
}

// Start probes the upstream, opens every listener and serves in the
// background. It fails when a listener cannot open, or when the upstream
// answers but not as configured (no STARTTLS, a certificate that does not
// verify, no usable login method); an upstream that cannot be reached is
// only logged, since it may come up later.
func (p *Proxy) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("proxy: IMAP already started")
	}
	p.started = true
	opts, up := p.opts, p.up
	p.mu.Unlock()

	caps, err := probe(ctx, up)
	if err != nil {
		de, ok := errors.AsType[*dialError](err)
		if !ok || (de.stage != "connect" && !isTimeout(err)) {
			return fmt.Errorf("proxy: IMAP upstream %s: %w", up.Addr, err)
		}
		p.log.Warn("IMAP upstream unreachable; logins will fail until it answers", "proto", "imap", "upstream", up.Addr, "err", err)
	}
	p.mu.Lock()
	p.upCaps = caps
	p.mu.Unlock()

	var lns []listener
	for _, l := range opts.Config.IMAP.Listen {
		// TLS is added per connection, so that Reload's certificate
		// reaches new sessions of an implicit TLS listener too.
		ln, err := proxy.Listen(config.Listener{Addr: l.Addr, TLS: config.TLSNone}, nil)
		if err != nil {
			for _, o := range lns {
				o.ln.Close()
			}
			return err
		}
		if l.ProxyProtocol {
			ln = proxy.ProxyProtocolListener(ln, 0, p.log)
		}
		lns = append(lns, listener{conf: l, ln: ln})
	}
	p.mu.Lock()
	p.listeners = lns
	p.mu.Unlock()
	for i := range lns {
		p.wg.Add(1)
		go p.accept(lns[i])
	}
	for _, l := range lns {
		p.log.Info("IMAP proxy listening", "proto", "imap", "addr", l.ln.Addr().String(), "tls", string(l.conf.TLS), "upstream", up.Addr)
	}
	return nil
}

// Addrs returns the listeners' addresses, in configuration order.
func (p *Proxy) Addrs() []net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]net.Addr, len(p.listeners))
	for i, l := range p.listeners {
		out[i] = l.ln.Addr()
	}
	return out
}

// acceptBackoff bounds the pause after a failed Accept (out of file
// descriptors, say), so that the loop neither spins nor stalls.
const acceptBackoff = time.Second

func (p *Proxy) accept(l listener) {
	defer p.wg.Done()
	delay := 5 * time.Millisecond
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("IMAP accept failed", "proto", "imap", "addr", l.ln.Addr().String(), "err", err)
			time.Sleep(delay)
			delay = min(2*delay, acceptBackoff)
			continue
		}
		delay = 5 * time.Millisecond
		p.serve(l.conf, conn)
	}
}

// serve runs one client connection with the options current now: Reload
// reaches new connections only. A connection over the limits is told BYE
// (an implicit TLS one is only closed, sparing the handshake).
func (p *Proxy) serve(l config.Listener, conn net.Conn) {
	release, err := p.limiter.Admit(conn.RemoteAddr())
	if err != nil {
		if l.TLS != config.TLSImplicit {
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write([]byte("* BYE Too many connections, try again later\r\n"))
		}
		conn.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		release()
		conn.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	guard := p.limiter.Guard(conn)
	s := &session{
		p: p, opts: p.opts, up: p.up, upCaps: p.upCaps, gen: p.gen, ln: l,
		log:  p.opts.Logger.With("proto", "imap", "session", newSessionID(), "remote", conn.RemoteAddr().String()),
		conn: guard, guard: guard, release: release, br: bufio.NewReaderSize(guard, bufSize),
		ctx: ctx, cancel: cancel,
	}
	s.bw = bufio.NewWriterSize(s.writer(guard), bufSize)
	p.sessions[s] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	s.log.Debug("IMAP session opened")
	go s.run()
}

// close ends a session's bookkeeping; run calls it last.
func (s *session) close() {
	s.cancel()
	s.conn.Close()
	s.release()
	s.log.Debug("IMAP session closed")
	s.p.mu.Lock()
	delete(s.p.sessions, s)
	s.p.mu.Unlock()
	s.p.wg.Done()
}

// shutdown says BYE at the next response boundary and closes both
// connections; when ctx ends first they are closed without the BYE.
func (s *session) shutdown(ctx context.Context) {
	s.closing.Store(true)
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wmu.Lock()
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.bw.WriteString("* BYE Server shutting down\r\n")
		s.bw.Flush()
		s.wmu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.kill()
}

// kill closes both connections at once.
func (s *session) kill() {
	s.closing.Store(true)
	s.conn.Close()
	if r := s.relay.Load(); r != nil {
		r.up.conn.Close()
	}
}

// Shutdown stops accepting, says BYE to every session, closes their
// upstream connections and waits for every goroutine of the proxy to end.
// When ctx ends first, the remaining connections are closed without
// ceremony.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	lns := p.listeners
	sessions := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		sessions = append(sessions, s)
	}
	p.mu.Unlock()

	for _, l := range lns {
		l.ln.Close()
	}
	var byes sync.WaitGroup
	for _, s := range sessions {
		byes.Go(func() { s.shutdown(ctx) })
	}
	byes.Wait()

	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for s := range p.sessions {
		s.kill()
	}
	p.mu.Unlock()
	<-done
	return ctx.Err()
}

// Reload makes new sessions use opts: configuration, policy, keys, TLS
// certificate and upstream. Open sessions keep what they started with, and
// the listeners stay where they are: a change of listen addresses takes a
// restart. Opened messages are dropped from the cache, since the policy
// that decided whose keys open them may have changed, and the sessions of
// before cache theirs apart from the new ones'.
func (p *Proxy) Reload(opts proxy.Options) error {
	opts, up, err := options(opts)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if !slices.Equal(p.opts.Config.IMAP.Listen, opts.Config.IMAP.Listen) {
		p.log.Warn("IMAP listeners changed; they take effect at restart", "proto", "imap")
		cfg := *opts.Config
		cfg.IMAP.Listen = p.opts.Config.IMAP.Listen
		opts.Config = &cfg
	}
	p.opts, p.up = opts, up
	p.gen++
	p.mu.Unlock()
	p.limiter.SetLimits(opts.Config.IMAP.Limits)
	p.cache.clear()
	p.kinds.clear()
	return nil
}

// Check reports whether the upstream answers: connect, TLS, greeting,
// LOGOUT. It is the IMAP part of readiness.
func (p *Proxy) Check(ctx context.Context) error {
	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	caps, err := probe(ctx, up)
	if err != nil {
		return fmt.Errorf("proxy: IMAP upstream %s: %w", up.Addr, err)
	}
	p.mu.Lock()
	p.upCaps = caps
	p.mu.Unlock()
	return nil
}
