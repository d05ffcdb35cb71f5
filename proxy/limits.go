package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"smimeproxy/config"
)

// Reasons a connection is refused or cut off, for errors and the
// connections_refused metric.
const (
	ReasonMaxConnections      = "max_connections"
	ReasonMaxConnectionsPerIP = "max_connections_per_ip"
	ReasonPreAuthIdle         = "preauth_idle"
	ReasonPreAuthTime         = "preauth_time"
)

var (
	// ErrTooManyConnections: Admit refused a connection, the proxy has
	// max_connections open.
	ErrTooManyConnections = errors.New("proxy: too many connections")
	// ErrTooManyFromIP: Admit refused a connection, its address has
	// max_connections_per_ip open.
	ErrTooManyFromIP = errors.New("proxy: too many connections from one address")
	// ErrPreAuthIdle: a Guard's read waited preauth_idle for a client that
	// has not logged in.
	ErrPreAuthIdle = errors.New("proxy: nothing received before login for too long")
	// ErrPreAuthTime: a Guard's connection reached preauth_time without
	// logging in.
	ErrPreAuthTime = errors.New("proxy: too long without logging in")
)

// Limiter holds one proxy to its connection limits (config.Limits): it
// admits connections within max_connections and max_connections_per_ip, and
// guards each one with the pre-login time limits. One Limiter serves all of
// a proxy's listeners and lives across reloads (SetLimits).
//
// A proxy calls Admit for each accepted connection, before TLS, and
// release when the connection closes; then it reads and writes through
// Guard(conn) and calls Authenticated on the Guard once the upstream
// accepted a login.
type Limiter struct {
	proto   string
	metrics *Metrics

	mu     sync.Mutex
	limits config.Limits
	open   int
	perIP  map[netip.Addr]int
}

// NewLimiter makes the limiter for proto ("smtp" or "imap"), counting in m.
func NewLimiter(proto string, limits config.Limits, m *Metrics) *Limiter {
	return &Limiter{proto: proto, metrics: m, limits: limits, perIP: map[netip.Addr]int{}}
}

// SetLimits applies limits from now on: open connections are not dropped,
// even when more are open than the new caps allow.
func (l *Limiter) SetLimits(limits config.Limits) {
	l.mu.Lock()
	l.limits = limits
	l.mu.Unlock()
}

// Admit counts a new connection from remote, or refuses it with
// ErrTooManyConnections or ErrTooManyFromIP. release, which may be called
// more than once, uncounts it when the connection ends. The sessions_total
// and sessions_open metrics count what Admit admits.
func (l *Limiter) Admit(remote net.Addr) (release func(), err error) {
	ip := addrIP(remote)
	l.mu.Lock()
	switch {
	case l.limits.MaxConnections > 0 && l.open >= l.limits.MaxConnections:
		err = ErrTooManyConnections
	case l.limits.MaxConnectionsPerIP > 0 && l.perIP[ip] >= l.limits.MaxConnectionsPerIP:
		err = ErrTooManyFromIP
	default:
		l.open++
		l.perIP[ip]++
	}
	l.mu.Unlock()
	if err != nil {
		reason := ReasonMaxConnections
		if errors.Is(err, ErrTooManyFromIP) {
			reason = ReasonMaxConnectionsPerIP
		}
		l.metrics.ConnectionsRefused.WithLabelValues(l.proto, reason).Inc()
		return nil, err
	}
	l.metrics.Sessions.WithLabelValues(l.proto).Inc()
	l.metrics.SessionsOpen.WithLabelValues(l.proto).Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.open--
			if l.perIP[ip]--; l.perIP[ip] <= 0 {
				delete(l.perIP, ip)
			}
			l.mu.Unlock()
			l.metrics.SessionsOpen.WithLabelValues(l.proto).Dec()
		})
	}, nil
}

// addrIP is the client address a connection counts against; every
// connection whose address is not an IP counts against the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Guard returns c held to the pre-login limits in force now.
func (l *Limiter) Guard(c net.Conn) *Guard {
	l.mu.Lock()
	limits := l.limits
	l.mu.Unlock()
	g := &Guard{Conn: c, proto: l.proto, metrics: l.metrics, idle: limits.PreAuthIdle.D(), armed: true}
	if t := limits.PreAuthTime.D(); t > 0 {
		g.end = time.Now().Add(t)
		_ = c.SetWriteDeadline(g.end)
	}
	return g
}

// Guard is a connection held to the pre-login limits until Authenticated:
// each read waits at most preauth_idle, and reads and writes end at
// preauth_time after the connection was admitted. A read or write cut off
// by them fails with an error that is a timeout (net.Error) and matches
// ErrPreAuthIdle or ErrPreAuthTime under errors.Is; the Guard then stops
// enforcing them, so that the protocol can say goodbye under its own
// deadlines, and every later Read fails with the same error, so that a
// limit that cut off a reply also ends the session. The protocol's own
// deadlines (SetDeadline and friends) keep working throughout: the earlier
// deadline wins.
type Guard struct {
	net.Conn
	proto   string
	metrics *Metrics
	idle    time.Duration // 0: no idle limit
	end     time.Time     // zero: no time limit

	mu      sync.Mutex
	armed   bool
	idleEnd time.Time // of the read in progress
	readDL  time.Time // the protocol's own deadlines
	writeDL time.Time
	cut     error // the limit that ended the connection
}

// Authenticated lifts the pre-login limits: the upstream accepted a login.
func (g *Guard) Authenticated() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.disarm()
}

// disarm puts back the protocol's own deadlines; g.mu is held.
func (g *Guard) disarm() {
	if !g.armed {
		return
	}
	g.armed = false
	_ = g.Conn.SetReadDeadline(g.readDL)
	_ = g.Conn.SetWriteDeadline(g.writeDL)
}

func (g *Guard) Read(p []byte) (int, error) {
	g.mu.Lock()
	if g.cut != nil {
		defer g.mu.Unlock()
		return 0, g.cut
	}
	armed := g.armed
	if armed {
		g.idleEnd = time.Time{}
		if g.idle > 0 {
			g.idleEnd = time.Now().Add(g.idle)
		}
		_ = g.Conn.SetReadDeadline(earliest(g.readDL, g.idleEnd, g.end))
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(p)
	if err != nil && armed && timedOut(err) {
		err = g.cutOff(err, true)
	}
	return n, err
}

func (g *Guard) Write(p []byte) (int, error) {
	g.mu.Lock()
	armed := g.armed
	g.mu.Unlock()
	n, err := g.Conn.Write(p)
	if err != nil && armed && timedOut(err) {
		err = g.cutOff(err, false)
	}
	return n, err
}

// cutOff says which limit, if any, ended a read or write that timed out,
// and if one did, counts it and disarms the Guard.
func (g *Guard) cutOff(err error, read bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.armed {
		return err
	}
	now := time.Now()
	own := g.writeDL
	if read {
		own = g.readDL
	}
	// Whichever deadline came first ended it: a loaded machine may wake the
	// reader only after several have passed.
	var limit error
	switch {
	case !g.end.IsZero() && !now.Before(g.end) && (own.IsZero() || !own.Before(g.end)):
		limit = ErrPreAuthTime
	case read && !g.idleEnd.IsZero() && !now.Before(g.idleEnd) && (own.IsZero() || !own.Before(g.idleEnd)):
		limit = ErrPreAuthIdle
	}
	if limit == nil {
		return err // the protocol's own deadline
	}
	reason := ReasonPreAuthTime
	if limit == ErrPreAuthIdle {
		reason = ReasonPreAuthIdle
	}
	g.metrics.ConnectionsRefused.WithLabelValues(g.proto, reason).Inc()
	g.disarm()
	g.cut = &limitError{limit: limit, err: err}
	return g.cut
}

func (g *Guard) SetDeadline(t time.Time) error {
	if err := g.SetReadDeadline(t); err != nil {
		return err
	}
	return g.SetWriteDeadline(t)
}

func (g *Guard) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.readDL = t
	if g.armed {
		return g.Conn.SetReadDeadline(earliest(t, g.idleEnd, g.end))
	}
	return g.Conn.SetReadDeadline(t)
}

func (g *Guard) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writeDL = t
	if g.armed {
		return g.Conn.SetWriteDeadline(earliest(t, g.end))
	}
	return g.Conn.SetWriteDeadline(t)
}

// limitError is a read or write a pre-login limit cut off.
type limitError struct {
	limit error // ErrPreAuthIdle or ErrPreAuthTime
	err   error // the timeout that ended the read or write
}

func (e *limitError) Error() string   { return e.limit.Error() }
func (e *limitError) Unwrap() []error { return []error{e.limit, e.err} }
func (e *limitError) Timeout() bool   { return true }
func (e *limitError) Temporary() bool { return false }

// earliest is the earliest of the deadlines that are set; zero if none is.
func earliest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if !t.IsZero() && (out.IsZero() || t.Before(out)) {
			out = t
		}
	}
	return out
}

// timedOut reports whether err is a read or write that hit its deadline.
func timedOut(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}
