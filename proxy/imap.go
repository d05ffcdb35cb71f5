package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"smimeproxy/config"
)

// IMAP is the IMAP proxy. A mail client logs in to it as it would to the
// real server; the proxy logs in to the upstream with the same credentials
// on a connection of the client's own, relays every command, and answers
// FETCH of S/MIME messages from the decrypted and verified message.
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
// Before login the client is offered what the proxy does itself (IMAP4rev1,
// STARTTLS on a STARTTLS listener, SASL-IR, LITERAL-, AUTH=PLAIN; LOGIN is
// passed on as AUTHENTICATE PLAIN where the upstream disables LOGIN). After
// login the capabilities are those both sides support: go-imap's server
// extensions that this session's upstream also announced after login
// (UIDPLUS, MOVE, LIST-EXTENDED, LIST-STATUS, SPECIAL-USE,
// CREATE-SPECIAL-USE, CHILDREN, BINARY, STATUS=SIZE, LITERAL+), plus what
// the proxy serves correctly whether or not the upstream has it: NAMESPACE
// (answered from LIST when missing), ESEARCH (computed from a plain SEARCH),
// IDLE (NOOP polling when missing), UNSELECT (EXAMINE then CLOSE when
// missing), ENABLE and UTF8=ACCEPT (mailbox names and search strings are
// converted to what the upstream accepts). Each client connection has a
// go-imap server of its own, so the set can follow its own upstream login.
// Not offered: IMAP4rev2, CONDSTORE, QRESYNC, SORT, THREAD, ID, QUOTA and
// the like, which go-imap's server does not implement, and SEARCHRES.
//
// # What the client sees
//
// UIDs, UIDVALIDITY and flags are always the upstream's. A FETCH that asks
// only for flags, UIDs or dates is one upstream FETCH whatever the number
// of messages. One that asks for content classifies the messages by their
// Content-Type first (a small upstream FETCH), relays the plain ones as the
// upstream answers, streaming their bodies, and fetches whole only those
// that are S/MIME. These are opened with the keys of the logged-in user's
// own addresses (policy.Addresses), verified, their signers' certificates
// harvested, and served with an Authentication-Results field at the top;
// every item the client asked for is computed from that served message.
// SEARCH is relayed: the upstream cannot see inside encrypted messages.
type IMAP struct {
	log   *slog.Logger
	cache *msgCache

	mu        sync.Mutex
	opts      Options
	up        *Upstream
	gen       uint64 // counts Reloads; opened messages are cached per generation
	started   bool
	closed    bool
	listeners []imapListener
	sessions  map[*imapSession]struct{}

	wg sync.WaitGroup // accept loops, per-connection servers, sessions
}

type imapListener struct {
	conf config.Listener
	ln   net.Listener
}

// NewIMAP checks opts and builds the proxy; nothing touches the network
// until Start.
func NewIMAP(opts Options) (*IMAP, error) {
	opts, up, err := imapOptions(opts)
	if err != nil {
		return nil, err
	}
	return &IMAP{
		log:      opts.Logger,
		cache:    newMsgCache(int64(opts.Config.IMAP.CacheMB)<<20, opts.Metrics),
		opts:     opts,
		up:       up,
		sessions: map[*imapSession]struct{}{},
	}, nil
}

// imapOptions validates opts and fills in the defaults.
func imapOptions(opts Options) (Options, *Upstream, error) {
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
		if err := CheckEndpoint(l.Addr, l.TLS, l.InsecurePlaintext); err != nil {
			bad("listen[%d]: %v", i, err)
		}
		if l.TLS != config.TLSNone && opts.Cert == nil {
			bad("listen[%d]: tls %s needs a TLS certificate", i, l.TLS)
		}
	}
	if err := CheckEndpoint(c.Upstream.Addr, c.Upstream.TLS, c.Upstream.InsecurePlaintext); err != nil {
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
	up, err := NewUpstream(c.Upstream, c.Timeouts.Connect.D())
	if err != nil {
		return opts, nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	return opts, up, nil
}

// Start probes the upstream, opens every listener and serves in the
// background. It fails when a listener cannot open, or when the upstream
// answers but not as configured (no STARTTLS, a certificate that does not
// verify, no usable login method); an upstream that cannot be reached is
// only logged, since it may come up later.
func (s *IMAP) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("proxy: IMAP already started")
	}
	s.started = true
	opts, up := s.opts, s.up
	s.mu.Unlock()

	if _, err := probeIMAP(ctx, up); err != nil {
		de, ok := errors.AsType[*dialError](err)
		if !ok || (de.stage != "connect" && !isTimeout(err)) {
			return fmt.Errorf("proxy: IMAP upstream %s: %w", up.Addr, err)
		}
		s.log.Warn("IMAP upstream unreachable; logins will fail until it answers", "proto", "imap", "upstream", up.Addr, "err", err)
	}

	var lns []imapListener
	for _, l := range opts.Config.IMAP.Listen {
		// TLS is added per connection, so that Reload's certificate
		// reaches new sessions of an implicit TLS listener too.
		ln, err := Listen(config.Listener{Addr: l.Addr, TLS: config.TLSNone}, nil)
		if err != nil {
			for _, o := range lns {
				o.ln.Close()
			}
			return err
		}
		lns = append(lns, imapListener{conf: l, ln: ln})
	}
	s.mu.Lock()
	s.listeners = lns
	s.mu.Unlock()
	for i := range lns {
		s.wg.Add(1)
		go s.accept(lns[i])
	}
	for _, l := range lns {
		s.log.Info("IMAP proxy listening", "proto", "imap", "addr", l.ln.Addr().String(), "tls", string(l.conf.TLS), "upstream", up.Addr)
	}
	return nil
}

// Addrs returns the listeners' addresses, in configuration order.
func (s *IMAP) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.ln.Addr()
	}
	return out
}

// acceptBackoff bounds the pause after a failed Accept (out of file
// descriptors, say), so that the loop neither spins nor stalls.
const acceptBackoff = time.Second

func (s *IMAP) accept(l imapListener) {
	defer s.wg.Done()
	delay := 5 * time.Millisecond
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("IMAP accept failed", "proto", "imap", "addr", l.ln.Addr().String(), "err", err)
			time.Sleep(delay)
			delay = min(2*delay, acceptBackoff)
			continue
		}
		delay = 5 * time.Millisecond
		s.serve(l.conf, conn)
	}
}

// serve runs one client connection on a go-imap server of its own, built
// from the options current now: its capability set can then follow this
// client's upstream after login, and Reload reaches new connections only.
func (s *IMAP) serve(l config.Listener, conn net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	opts, up, gen := s.opts, s.up, s.gen
	s.mu.Unlock()

	var starttls *tls.Config
	switch l.TLS {
	case config.TLSImplicit:
		conn = tls.Server(conn, opts.Cert.ServerConfig())
	case config.TLSStartTLS:
		starttls = opts.Cert.ServerConfig()
	}
	caps := imap.CapSet{imap.CapIMAP4rev1: {}}
	one := newOneConnListener(conn)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sess, err := s.newSession(c, opts, up, gen, caps, one)
			if err != nil {
				one.Close()
				return nil, nil, err
			}
			return sess, nil, nil
		},
		Caps:         caps,
		Logger:       imapServerLog{opts.Logger},
		TLSConfig:    starttls,
		InsecureAuth: l.TLS == config.TLSNone,
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		srv.Serve(one)
	}()
}

// Shutdown stops accepting, says BYE to every session, closes their upstream
// connections and waits for every goroutine of the proxy to end. When ctx
// ends first, the remaining connections are closed without ceremony.
func (s *IMAP) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	lns := s.listeners
	sessions := make([]*imapSession, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()

	for _, l := range lns {
		l.ln.Close()
	}
	var byes sync.WaitGroup
	for _, sess := range sessions {
		byes.Go(func() { sess.shutdown(ctx) })
	}
	byes.Wait()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sess := range s.sessions {
		sess.kill()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// Reload makes new sessions use opts: configuration, policy, keys, TLS
// certificate and upstream. Open sessions keep what they started with, and
// the listeners stay where they are: a change of listen addresses takes a
// restart. Opened messages are dropped from the cache, since the policy
// that decided whose keys open them may have changed, and the sessions of
// before cache theirs apart from the new ones'.
func (s *IMAP) Reload(opts Options) error {
	opts, up, err := imapOptions(opts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if !slices.Equal(s.opts.Config.IMAP.Listen, opts.Config.IMAP.Listen) {
		s.log.Warn("IMAP listeners changed; they take effect at restart", "proto", "imap")
		cfg := *opts.Config
		cfg.IMAP.Listen = s.opts.Config.IMAP.Listen
		opts.Config = &cfg
	}
	s.opts, s.up = opts, up
	s.gen++
	s.mu.Unlock()
	s.cache.clear()
	return nil
}

// Check reports whether the upstream answers: connect, TLS, greeting,
// LOGOUT. It is the IMAP part of readiness.
func (s *IMAP) Check(ctx context.Context) error {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if _, err := probeIMAP(ctx, up); err != nil {
		return fmt.Errorf("proxy: IMAP upstream %s: %w", up.Addr, err)
	}
	return nil
}

func (s *IMAP) addSession(sess *imapSession) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *IMAP) removeSession(sess *imapSession) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

// imapServerLog takes go-imap's server messages: a client that went away is
// routine, a panic it recovered from is not.
type imapServerLog struct{ log *slog.Logger }

func (l imapServerLog) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "panic") {
		l.log.Error("IMAP server error", "proto", "imap", "err", msg)
		return
	}
	l.log.Debug("IMAP server", "proto", "imap", "msg", msg)
}

// oneConnListener hands a go-imap server its single connection, then blocks
// until closed, which ends the server's Serve.
type oneConnListener struct {
	conn chan net.Conn
	addr net.Addr
	done chan struct{}
	once sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conn: make(chan net.Conn, 1), addr: c.LocalAddr(), done: make(chan struct{})}
	l.conn <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }
