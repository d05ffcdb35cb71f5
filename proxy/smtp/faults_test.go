package smtp

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// Each fault of issue 4 is a test here: the client never hears "accepted"
// unless the upstream accepted, and what policy forbids never goes out.

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	e := newEnv(t, envOptions{upAddr: closed})
	c := e.dial()
	c.cmd("EHLO client.test", "250 *")
	c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "421 4.4.1 Cannot reach the mail server; try again later")
	if !c.closed() {
		t.Error("the connection stayed open after 421")
	}
	if got := e.metric("smimeproxy_upstream_errors_total", "proto", "smtp", "stage", "connect"); got < 1 {
		t.Errorf("upstream connect errors counted = %v, want at least 1", got)
	}
	if err := e.proxy.Check(t.Context()); err == nil {
		t.Error("Check with the upstream unreachable = nil")
	}
}

func TestUpstreamRefusesAtConnect(t *testing.T) {
	addr := testutil.Serve(t, func(c net.Conn) {
		c.Write([]byte("554 5.3.2 No service for you\r\n"))
		c.Close()
	})
	e := newEnv(t, envOptions{upAddr: addr})
	c := e.dial()
	c.cmd("EHLO client.test", "250 *")
	c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "421 4.4.1 *")
}

// TestSMTPUpstreamTLS: a missing STARTTLS or a certificate that does not
// verify fails the connection; the password never goes out in the clear.
func TestUpstreamTLS(t *testing.T) {
	other := testpki.NewCA(t, "another root")
	otherCA := testpki.WriteFile(t, t.TempDir(), "other.pem", testpki.CertPEM(other.Root()))
	tests := []struct {
		name string
		opts envOptions
		log  string
	}{
		{"no STARTTLS offered", envOptions{upstream: upstreamOptions{noTLS: true}}, "does not offer STARTTLS"},
		{"certificate from another CA", envOptions{config: func(c *config.Config) { c.SMTP.Upstream.CAFile = otherCA }}, "certificate"},
		{"certificate for another name", envOptions{config: func(c *config.Config) { c.SMTP.Upstream.ServerName = "mail.example.com" }}, "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			c := e.dial()
			c.cmd("EHLO client.test", "250 *")
			c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "421 4.4.1 Cannot reach the mail server securely; try again later")
			if _, _, auths := e.up.counts(); len(auths) != 0 {
				t.Errorf("AUTH reached the upstream: %q", auths)
			}
			if !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("the log does not say why (%q)", tc.log)
			}
			if got := e.metric("smimeproxy_upstream_errors_total", "proto", "smtp", "stage", "tls"); got < 1 {
				t.Errorf("upstream TLS errors counted = %v", got)
			}
		})
	}
}

// TestSMTPUpstreamFailsInData: an upstream that stalls or drops during DATA
// gets the client a 4.4.x and never a 250.
func TestUpstreamFailsInData(t *testing.T) {
	tests := []struct {
		name   string
		onData func(c *gosmtp.Conn, stop <-chan struct{}) error
		want   string
	}{
		{"stalls before its final reply", func(_ *gosmtp.Conn, stop <-chan struct{}) error {
			<-stop
			return nil
		}, "451 4.4.2 The mail server did not answer in time; try again later"},
		{"drops the connection", func(c *gosmtp.Conn, _ <-chan struct{}) error {
			c.Conn().Close()
			return errors.New("dropped")
		}, "451 4.4.2 The connection to the mail server broke; try again later"},
		{"closes with 421", func(*gosmtp.Conn, <-chan struct{}) error {
			return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Going down"}
		}, "421 4.3.0 Going down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			e := newEnv(t, envOptions{
				config: func(c *config.Config) { c.SMTP.Timeouts.Data = config.Duration(300 * time.Millisecond) },
				recorder: func(r *recorder) {
					r.onData = func(c *gosmtp.Conn, _ []string, _ []byte) error { return tc.onData(c, stop) }
				},
			})
			defer close(stop)
			c := e.login()
			if got := c.send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Hello", "Hi\r\n")); got != tc.want {
				t.Fatalf("DATA reply %q, want %q", got, tc.want)
			}
			if !strings.HasPrefix(tc.want, "421") {
				// The session cannot go on without its upstream connection.
				c.cmd("MAIL FROM:<alice@example.com>", "421 4.4.2 The connection to the mail server was lost; connect again")
			}
			if !c.closed() {
				t.Error("the connection stayed open after 421")
			}
			if len(e.up.transactions()) != 0 {
				t.Error("the upstream recorded the message")
			}
			if got := e.metric("smimeproxy_messages_total", "action", "sign", "result", "tempfail"); got != 1 && !strings.HasPrefix(tc.want, "421") {
				t.Errorf("temporary failures counted = %v, want 1", got)
			}
		})
	}
}

// TestSMTPClientGoneInData: a client that goes away during DATA sends
// nothing: the proxy starts upstream DATA only with the whole message.
func TestClientGoneInData(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.cmd("MAIL FROM:<alice@example.com>", "250 *")
	c.cmd("RCPT TO:<bob@example.org>", "250 *")
	c.cmd("DATA", "354 *")
	c.write("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: cut\r\n\r\nthe first half of\r\n")
	c.conn.Close()
	e.up.waitLogouts(1)
	if started, _, _ := e.up.counts(); started != 0 || len(e.up.transactions()) != 0 {
		t.Errorf("the upstream got %d DATA commands, want none", started)
	}
}

// TestSMTPUnreadableMessage: a message that cannot be read as MIME is
// refused for good, with the reason, and nothing is sent.
func TestUnreadableMessage(t *testing.T) {
	tests := []struct{ name, msg, want string }{
		{"a header line without a colon", "From: alice@example.com\r\nTo: bob@example.org\r\nnot a header\r\n\r\nbody\r\n", "554 5.6.0 The message cannot be signed or encrypted: header line without a colon"},
		{"no From", "To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n", "554 5.6.0 The message cannot be signed or encrypted: its From header does not hold one address"},
		{"two From addresses", "From: alice@example.com, bob@example.org\r\nTo: bob@example.org\r\n\r\nbody\r\n", "554 5.6.0 *From*"},
		{"8-bit data in a multipart without a boundary", "From: alice@example.com\r\nTo: bob@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nGrüße\r\n",
			"554 5.6.0 The message cannot be signed or encrypted: multipart/mixed without a readable boundary holds 8-bit data"},
		{"8-bit data in an unknown encoding", "From: alice@example.com\r\nTo: bob@example.org\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nGrüße\r\n",
			"554 5.6.0 The message cannot be signed or encrypted: unknown Content-Transfer-Encoding *"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			c := e.login()
			if got := c.send("alice@example.com", []string{"bob@example.org"}, tc.msg); !match(tc.want, got) {
				t.Errorf("DATA reply %q, want %q", got, tc.want)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(1)
			if started, _, _ := e.up.counts(); started != 0 {
				t.Errorf("the upstream got %d DATA commands, want none", started)
			}
		})
	}
}

// TestSMTPKeyUnavailable: with the keystore locked or no key for the From
// address, the client gets 451 4.7.5 and nothing goes out unsigned.
func TestKeyUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *env)
		from  string
		want  string
	}{
		{"keystore locked", func(e *env) { e.keys.Lock() }, "", "451 4.7.5 The keystore is locked; try again later"},
		{"no key for the address", nil, "sales@example.com",
			"451 4.7.5 Cannot use the key of <sales@example.com> for signing: there is no key; try again later or ask your administrator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{config: func(c *config.Config) {
				c.Policy.Users = map[string]config.UserRules{"alice@example.com": {Addresses: []string{"sales@example.com"}}}
			}})
			if tc.setup != nil {
				tc.setup(e)
			}
			msg := message("bob@example.org", "Hello", "Hi\r\n")
			if tc.from != "" {
				msg = strings.Replace(msg, "alice@example.com", tc.from, 1)
			}
			c := e.login()
			if got := c.send("alice@example.com", []string{"bob@example.org"}, msg); got != tc.want {
				t.Errorf("DATA reply %q, want %q", got, tc.want)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(1)
			if started, _, _ := e.up.counts(); started != 0 {
				t.Errorf("the upstream got %d DATA commands, want none", started)
			}
			if got := e.metric("smimeproxy_messages_total", "action", "sign", "result", "tempfail"); got != 1 {
				t.Errorf("temporary failures counted = %v, want 1", got)
			}
		})
	}
}

// TestSMTPUpstreamDownAtStart: an upstream that does not answer at Start
// gets a conservative offer, and the full one once it answers.
func TestUpstreamDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := newEnv(t, envOptions{upAddr: addr, config: func(c *config.Config) {
		c.SMTP.Timeouts.Connect = config.Duration(100 * time.Millisecond)
	}})
	c := e.dial()
	if ehlo := strings.Join(c.cmd("EHLO client.test", "250 *"), "\n"); strings.Contains(ehlo, "DSN") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO with the upstream down = %q, want AUTH PLAIN LOGIN and no DSN", ehlo)
	}
	up := newSMTPRecorder(t, e.pki, upstreamOptions{maxBytes: 4321})
	relay, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	defer relay.Close()
	go forward(relay, up.addr)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := e.dial()
		if ehlo := strings.Join(c.cmd("EHLO client.test", "250 *"), "\n"); strings.Contains(ehlo, "SIZE 4321") && strings.Contains(ehlo, "DSN") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the offer did not follow the upstream once it answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// forward relays each connection on ln to addr.
func forward(ln net.Listener, addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer u.Close()
			go func() {
				_, _ = bufio.NewReader(u).WriteTo(c)
				c.Close()
			}()
			_, _ = bufio.NewReader(c).WriteTo(u)
		}()
	}
}
