package proxy_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

func tcpAddr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }

// metrics are proxy metrics whose values a test can read.
type metrics struct {
	*proxy.Metrics
	reg *prometheus.Registry
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	return &metrics{Metrics: proxy.NewMetrics(reg), reg: reg}
}

// value is the value of the counter or gauge name with the given labels
// (name, value, ...); 0 when there is none.
func (m *metrics) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range mt.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return 0
}

func TestLimiterAdmit(t *testing.T) {
	m := newMetrics()
	l := proxy.NewLimiter("smtp", config.Limits{MaxConnections: 3, MaxConnectionsPerIP: 2}, m.Metrics)
	admit := func(ip string, want error) func() {
		t.Helper()
		release, err := l.Admit(tcpAddr(ip))
		if !errors.Is(err, want) || (err == nil) != (release != nil) {
			t.Fatalf("Admit(%s) = %v, want %v", ip, err, want)
		}
		return release
	}
	a1 := admit("192.0.2.1", nil)
	admit("::ffff:192.0.2.1", nil) // the same address, IPv4-mapped
	admit("192.0.2.1", proxy.ErrTooManyFromIP)
	b1 := admit("192.0.2.2", nil)
	admit("192.0.2.3", proxy.ErrTooManyConnections)
	if got := m.value(t, "smimeproxy_sessions_open", "proto", "smtp"); got != 3 {
		t.Errorf("sessions_open = %v, want 3", got)
	}
	a1()
	a1() // a second release counts for nothing
	admit("192.0.2.1", nil)
	admit("192.0.2.3", proxy.ErrTooManyConnections)
	b1()
	admit("192.0.2.3", nil)

	for reason, want := range map[string]float64{proxy.ReasonMaxConnectionsPerIP: 1, proxy.ReasonMaxConnections: 2} {
		if got := m.value(t, "smimeproxy_connections_refused_total", "proto", "smtp", "reason", reason); got != want {
			t.Errorf("connections_refused{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := m.value(t, "smimeproxy_sessions_total", "proto", "smtp"); got != 5 {
		t.Errorf("sessions_total = %v, want 5", got)
	}
	if got := m.value(t, "smimeproxy_sessions_open", "proto", "smtp"); got != 3 {
		t.Errorf("sessions_open = %v, want 3", got)
	}

	// Lower limits hold for new connections; open ones stay.
	l.SetLimits(config.Limits{MaxConnections: 1})
	admit("192.0.2.9", proxy.ErrTooManyConnections)
	l.SetLimits(config.Limits{})
	admit("192.0.2.9", nil)
}

// guarded is a Guard over one end of a pipe, and the other end.
func guarded(t *testing.T, limits config.Limits) (*proxy.Guard, net.Conn, *metrics) {
	t.Helper()
	m := newMetrics()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return proxy.NewLimiter("imap", limits, m.Metrics).Guard(a), b, m
}

func TestGuardIdle(t *testing.T) {
	g, _, m := guarded(t, config.Limits{PreAuthIdle: config.Duration(50 * time.Millisecond)})
	_, err := g.Read(make([]byte, 1))
	if !errors.Is(err, proxy.ErrPreAuthIdle) {
		t.Fatalf("Read from a silent client = %v, want ErrPreAuthIdle", err)
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Errorf("the error %v is not a net.Error timeout", err)
	}
	if got := m.value(t, "smimeproxy_connections_refused_total", "proto", "imap", "reason", proxy.ReasonPreAuthIdle); got != 1 {
		t.Errorf("connections_refused{preauth_idle} = %v, want 1", got)
	}
}

// TestGuardTime: a client that keeps sending, a byte at a time, is cut off
// all the same.
func TestGuardTime(t *testing.T) {
	g, peer, m := guarded(t, config.Limits{PreAuthIdle: config.Duration(time.Minute), PreAuthTime: config.Duration(200 * time.Millisecond)})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = peer.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := peer.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	var err error
	for err == nil {
		_, err = g.Read(make([]byte, 1))
	}
	if !errors.Is(err, proxy.ErrPreAuthTime) {
		t.Fatalf("Read from a trickling client = %v, want ErrPreAuthTime", err)
	}
	if got := m.value(t, "smimeproxy_connections_refused_total", "proto", "imap", "reason", proxy.ReasonPreAuthTime); got != 1 {
		t.Errorf("connections_refused{preauth_time} = %v, want 1", got)
	}
}

// TestGuardWriteTime: a client that does not read cannot hold a write past
// the time limit.
func TestGuardWriteTime(t *testing.T) {
	g, _, _ := guarded(t, config.Limits{PreAuthTime: config.Duration(50 * time.Millisecond)})
	if _, err := g.Write([]byte("* OK hello\r\n")); !errors.Is(err, proxy.ErrPreAuthTime) {
		t.Fatalf("Write to a client that does not read = %v, want ErrPreAuthTime", err)
	}
	// The session ends there: a read, which the lifted limits would let
	// wait for the protocol's own deadline, fails at once for the same
	// reason, and the protocol's goodbye names it.
	_ = g.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := g.Read(make([]byte, 1)); !errors.Is(err, proxy.ErrPreAuthTime) {
		t.Fatalf("Read after a write was cut off = %v, want ErrPreAuthTime", err)
	}
}

// TestGuardOwnDeadline: the protocol's earlier deadline is its own timeout,
// not a limit, and the limits stay.
func TestGuardOwnDeadline(t *testing.T) {
	g, _, m := guarded(t, config.Limits{PreAuthIdle: config.Duration(time.Minute)})
	_ = g.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := g.Read(make([]byte, 1))
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() || errors.Is(err, proxy.ErrPreAuthIdle) || errors.Is(err, proxy.ErrPreAuthTime) {
		t.Fatalf("Read past the protocol's own deadline = %v, want a plain timeout", err)
	}
	if got := m.value(t, "smimeproxy_connections_refused_total", "proto", "imap", "reason", proxy.ReasonPreAuthIdle); got != 0 {
		t.Errorf("connections_refused{preauth_idle} = %v, want 0", got)
	}
}

// TestGuardAuthenticated: after login only the protocol's deadlines hold;
// after a limit fires, too, so that the protocol can say goodbye.
func TestGuardAuthenticated(t *testing.T) {
	limits := config.Limits{PreAuthIdle: config.Duration(30 * time.Millisecond), PreAuthTime: config.Duration(60 * time.Millisecond)}
	t.Run("logged in", func(t *testing.T) {
		g, peer, _ := guarded(t, limits)
		g.Authenticated()
		go func() {
			time.Sleep(150 * time.Millisecond)
			_, _ = peer.Write([]byte("x"))
		}()
		if _, err := g.Read(make([]byte, 1)); err != nil {
			t.Fatalf("Read after login, past both limits: %v", err)
		}
	})
	t.Run("cut off", func(t *testing.T) {
		g, peer, _ := guarded(t, limits)
		if _, err := g.Read(make([]byte, 1)); !errors.Is(err, proxy.ErrPreAuthIdle) {
			t.Fatalf("Read = %v, want ErrPreAuthIdle", err)
		}
		time.Sleep(100 * time.Millisecond) // past the time limit
		go func() { _, _ = peer.Read(make([]byte, 64)) }()
		if _, err := g.Write([]byte("* BYE idle\r\n")); err != nil {
			t.Errorf("the goodbye after the limit fired: %v", err)
		}
	})
}
