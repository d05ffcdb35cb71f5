package smtp

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"smimeproxy/config"
)

// The connection limits of issue 9, point 10, end to end: what a client
// over a limit reads, and that the limits end at login.

func limitsEnv(t *testing.T, l config.Limits, edit ...func(*config.Config)) *env {
	t.Helper()
	return newEnv(t, envOptions{
		listen: []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}, {Addr: "127.0.0.1:0", TLS: config.TLSStartTLS}, {Addr: "127.0.0.1:0", TLS: config.TLSImplicit}},
		config: func(c *config.Config) {
			c.SMTP.Limits = l
			for _, f := range edit {
				f(c)
			}
		},
	})
}

// waitMetric waits until the metric has the value want.
func (e *env) waitMetric(want float64, name string, labels ...string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.metric(name, labels...) != want {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s%v = %v, want %v", name, labels, e.metric(name, labels...), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnectionCaps(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		e := limitsEnv(t, config.Limits{MaxConnectionsPerIP: 2})
		first := e.dial()
		e.dial()
		over := dialRaw(t, e.addr(0))
		if got := over.line(); got != "421 4.7.0 proxy.test Error: too many connections from 127.0.0.1" {
			t.Errorf("the third connection read %q, want Postfix's refusal", got)
		}
		if !over.closed() {
			t.Error("the refused connection stayed open")
		}
		e.waitMetric(1, "smimeproxy_connections_refused_total", "proto", "smtp", "reason", "max_connections_per_ip")
		first.cmd("QUIT", "221 *")
		e.waitMetric(1, "smimeproxy_sessions_open", "proto", "smtp")
		e.dial().cmd("EHLO client.test", "250 *")
	})
	t.Run("total", func(t *testing.T) {
		e := limitsEnv(t, config.Limits{MaxConnections: 1})
		e.dial()
		over := dialRaw(t, e.addr(1))
		if got := over.line(); got != "421 4.7.0 proxy.test Error: too many connections; try again later" {
			t.Errorf("the second connection read %q, want the refusal", got)
		}
		// On an implicit TLS listener a refusal is only a close: a reply
		// would need the handshake that the cap spares.
		conn, err := tls.Dial("tcp", e.addr(2), &tls.Config{RootCAs: e.pki.ca.Pool(), ServerName: "127.0.0.1"})
		if err == nil {
			conn.Close()
			t.Error("a TLS handshake succeeded over the cap")
		}
		e.waitMetric(2, "smimeproxy_connections_refused_total", "proto", "smtp", "reason", "max_connections")
	})
}

func TestPreAuthLimits(t *testing.T) {
	idle := config.Limits{PreAuthIdle: config.Duration(200 * time.Millisecond)}
	short := config.Limits{PreAuthIdle: config.Duration(time.Minute), PreAuthTime: config.Duration(300 * time.Millisecond)}
	t.Run("silent before login", func(t *testing.T) {
		e := limitsEnv(t, idle)
		c := e.dial()
		c.cmd("EHLO client.test", "250 *")
		c.expect("421 4.4.2 proxy.test Error: timeout exceeded")
		if !c.closed() {
			t.Error("the connection stayed open")
		}
		e.waitMetric(1, "smimeproxy_connections_refused_total", "proto", "smtp", "reason", "preauth_idle")
	})
	t.Run("silent before EHLO", func(t *testing.T) {
		e := limitsEnv(t, idle)
		e.dial().expect("421 4.4.2 proxy.test Error: timeout exceeded")
	})
	t.Run("NOOP after NOOP", func(t *testing.T) {
		e := limitsEnv(t, short)
		c := e.dial()
		c.cmd("EHLO client.test", "250 *")
		for {
			c.write("NOOP\r\n")
			if r := c.read(); !strings.HasPrefix(r[0], "250") {
				if r[0] != "421 4.4.2 proxy.test Error: too long without logging in" {
					t.Fatalf("NOOP read %q, want 250 or the time limit's 421", r)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !c.closed() {
			t.Error("the connection stayed open")
		}
		e.waitMetric(1, "smimeproxy_connections_refused_total", "proto", "smtp", "reason", "preauth_time")
	})
	t.Run("a byte at a time", func(t *testing.T) {
		e := limitsEnv(t, short)
		c := e.dial()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				time.Sleep(20 * time.Millisecond)
				if _, err := c.conn.Write([]byte("N")); err != nil {
					return
				}
			}
		}()
		c.expect("421 4.4.2 proxy.test Error: too long without logging in")
		c.conn.Close()
		<-done
	})
	t.Run("under STARTTLS", func(t *testing.T) {
		e := limitsEnv(t, idle)
		c := dialTest(t, e.addr(1))
		c.cmd("EHLO client.test", "250 *")
		c.startTLS(e.pki)
		c.cmd("EHLO client.test", "250 *")
		c.expect("421 4.4.2 proxy.test Error: timeout exceeded")
	})
	t.Run("under implicit TLS", func(t *testing.T) {
		e := limitsEnv(t, idle)
		c := dialTLS(t, e, e.addr(2))
		c.cmd("EHLO client.test", "250 *")
		c.expect("421 4.4.2 proxy.test Error: timeout exceeded")
	})
	t.Run("lifted at login", func(t *testing.T) {
		e := limitsEnv(t, config.Limits{PreAuthIdle: config.Duration(100 * time.Millisecond), PreAuthTime: config.Duration(200 * time.Millisecond)})
		c := e.login()
		time.Sleep(400 * time.Millisecond)
		c.cmd("MAIL FROM:<alice@example.com>", "250 *")
		c.cmd("QUIT", "221 *")
	})
	t.Run("lifted at MAIL without require_auth", func(t *testing.T) {
		e := limitsEnv(t, config.Limits{PreAuthIdle: config.Duration(100 * time.Millisecond), PreAuthTime: config.Duration(200 * time.Millisecond)},
			func(c *config.Config) { c.SMTP.RequireAuth = false })
		c := e.login()
		c.cmd("MAIL FROM:<alice@example.com>", "250 *")
		time.Sleep(400 * time.Millisecond)
		c.cmd("RCPT TO:<bob@example.org>", "250 *")
	})
}

// TestCommandTimeout: after login, a client silent for the command timeout
// hears so in the proxy's words, not go-smtp's "Idle timeout, bye bye".
func TestCommandTimeout(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *config.Config) { c.SMTP.Timeouts.Command = config.Duration(200 * time.Millisecond) }})
	c := e.login()
	c.expect("421 4.4.2 proxy.test Error: timeout exceeded")
	if !c.closed() {
		t.Error("the connection stayed open")
	}
}

// TestClientStallsInData: a client that stops in the middle of a message
// gets the temporary failure, and the connection ends there: what would
// follow is the rest of a message, not commands.
func TestClientStallsInData(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *config.Config) { c.SMTP.Timeouts.Data = config.Duration(200 * time.Millisecond) }})
	c := e.login()
	c.cmd("MAIL FROM:<alice@example.com>", "250 *")
	c.cmd("RCPT TO:<bob@example.org>", "250 *")
	c.cmd("DATA", "354 *")
	c.write("From: alice@example.com\r\nTo: bob@example.org\r\n\r\nthe first half\r\n")
	c.expect("451 4.4.2 The message did not arrive whole; try again")
	if !c.closed() {
		t.Error("the connection stayed open after a broken message")
	}
	if started, _, _ := e.up.counts(); started != 0 {
		t.Errorf("the upstream got %d DATA commands, want none", started)
	}
}

// rawClient reads a connection line by line, without expecting a greeting.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawClient) line() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *rawClient) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil
}
