package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/policy"
)

// TestSMTPExtensionsMirrorUpstream: the client is offered what the upstream
// offers, SIZE with its limit, and no more.
func TestExtensionsMirrorUpstream(t *testing.T) {
	tests := []struct {
		name      string
		up        upstreamOptions
		want, not []string
	}{
		{"everything", upstreamOptions{maxBytes: 12345},
			[]string{"250-SIZE 12345", "250-DSN", "250-SMTPUTF8", "250-AUTH PLAIN LOGIN", "250-8BITMIME", "250-PIPELINING"}, []string{"OAUTHBEARER"}},
		{"no DSN, no SMTPUTF8", upstreamOptions{maxBytes: 2000, noDSN: true, noUTF8: true},
			[]string{"250-SIZE 2000"}, []string{"DSN", "SMTPUTF8"}},
		{"OAuth mechanisms", upstreamOptions{mechs: []string{"LOGIN", "OAUTHBEARER", "XOAUTH2"}},
			[]string{"250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{upstream: tc.up})
			c := e.dial()
			lines := c.cmd("EHLO client.test", "250 *")
			all := strings.Join(lines, "\n") + "\n"
			for _, w := range tc.want {
				if !strings.Contains(strings.ReplaceAll(all, "250 ", "250-"), w+"\n") {
					t.Errorf("EHLO = %q, want %q", lines, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(all, n) {
					t.Errorf("EHLO = %q, want no %q", lines, n)
				}
			}
		})
	}

	t.Run("SIZE is enforced", func(t *testing.T) {
		e := newEnv(t, envOptions{upstream: upstreamOptions{maxBytes: 2000}})
		c := e.login()
		c.cmd("MAIL FROM:<alice@example.com> SIZE=2001", "552 5.3.4 *")
		c.cmd("MAIL FROM:<alice@example.com> SIZE=500", "250 *")
		c.cmd("RCPT TO:<bob@example.org>", "250 *")
		c.cmd("DATA", "354 *")
		if got := c.data(message("bob@example.org", "big", strings.Repeat("xx\r\n", 1000))); !match("552 5.3.4 *", got) {
			t.Errorf("DATA of 3000 bytes = %q, want 552", got)
		}
		c.cmd("NOOP", "250 *")
		e.up.waitLogouts(0)
		if started, _, _ := e.up.counts(); started != 0 {
			t.Errorf("the upstream got %d DATA commands, want none", started)
		}
	})
}

// TestSMTPRepliesVerbatim: the upstream's refusals reach the client as they
// are, and so does its final DATA reply.
func TestRepliesVerbatim(t *testing.T) {
	e := newEnv(t, envOptions{recorder: func(r *recorder) {
		r.onMail = func(from string) error {
			if from == "ceo@example.com" {
				return &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "<ceo@example.com>: Sender address rejected: not owned by user alice@example.com"}
			}
			return nil
		}
		r.onRcpt = func(to string) error {
			switch to {
			case "x@elsewhere.example":
				return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "<x@elsewhere.example>: Relay access denied"}
			case "full@example.org":
				return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
			}
			return nil
		}
		r.onData = func(_ *gosmtp.Conn, _ []string, data []byte) error {
			if strings.Contains(string(data), "spam") {
				return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Rejected: looks like spam"}
			}
			return nil
		}
	}})
	c := e.login()
	c.cmd("MAIL FROM:<ceo@example.com>", "553 5.7.1 <ceo@example.com>: Sender address rejected: not owned by user alice@example.com")
	c.cmd("MAIL FROM:<alice@example.com>", "250 2.0.0 *")
	c.cmd("RCPT TO:<x@elsewhere.example>", "550 5.7.1 <x@elsewhere.example>: Relay access denied")
	c.cmd("RCPT TO:<full@example.org>", "452 4.2.2 Mailbox full")
	c.cmd("RCPT TO:<bob@example.org>", "250 2.0.0 *")
	c.cmd("DATA", "354 *")
	if got := c.data(message("bob@example.org", "Hello", "Hi\r\n")); got != "250 2.0.0 Ok: queued as Q0001" {
		t.Errorf("DATA = %q, want the upstream's own reply", got)
	}
	if got := c.send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Buy", "spam\r\n")); got != "554 5.7.0 Rejected: looks like spam" {
		t.Errorf("DATA refused upstream = %q, want the upstream's refusal", got)
	}
	c.cmd("QUIT", "221 *")
	e.up.waitLogouts(1)
	txns := e.up.transactions()
	if len(txns) != 1 || !slices.Equal(txns[0].rcpts, []string{"bob@example.org"}) {
		t.Errorf("upstream transactions = %+v, want one to bob", txns)
	}
	if got := e.metric("smimeproxy_messages_total", "action", "sign", "result", "rejected"); got != 1 {
		t.Errorf("messages rejected by the upstream = %v, want 1", got)
	}
}

// TestSMTPParameters: MAIL and RCPT parameters reach the upstream.
func TestParameters(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.cmd("MAIL FROM:<alice@example.com> SIZE=300 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc123", "250 *")
	c.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org", "250 *")
	c.cmd("DATA", "354 *")
	c.data(message("bob@example.org", "Grüße", "Hallo\r\n"))
	txns := e.up.transactions()
	if len(txns) != 1 {
		t.Fatalf("upstream transactions = %d, want 1", len(txns))
	}
	o := txns[0].opts
	if o.Size != 300 || o.Body != gosmtp.Body8BitMIME || !o.UTF8 || o.Return != gosmtp.DSNReturnHeaders || o.EnvelopeID != "abc123" {
		t.Errorf("MAIL parameters upstream = %+v", o)
	}
	if want := []string{"NOTIFY=[SUCCESS FAILURE]", "ORCPT=bob@example.org"}; !slices.Equal(txns[0].notes, want) {
		t.Errorf("RCPT parameters upstream = %q, want %q", txns[0].notes, want)
	}
}

// TestSMTPReload: new sessions get the new settings; an open one keeps its
// own and is not dropped.
func TestReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.login()

	cfg := *e.cfg
	cfg.Policy.Sign = "never"
	opts := e.opts
	opts.Config = &cfg
	opts.Policy = nil
	if err := e.proxy.Reload(opts); err == nil {
		t.Fatal("Reload without a policy succeeded")
	}
	opts.Policy = policy.FromConfig(cfg.Policy)
	moved := cfg
	moved.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:1", TLS: config.TLSNone}}
	mopts := opts
	mopts.Config = &moved
	if err := e.proxy.Reload(mopts); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("Reload with another listener address = %v, want a refusal", err)
	}
	if err := e.proxy.Reload(opts); err != nil {
		t.Fatal(err)
	}
	if got := e.proxy.Addrs()[0].String(); got != e.addr(0) {
		t.Errorf("listener moved to %s", got)
	}

	msg := message("bob@example.org", "Hello", "Hi\r\n")
	old.send("alice@example.com", []string{"bob@example.org"}, msg)
	fresh := e.login()
	fresh.send("alice@example.com", []string{"bob@example.org"}, msg)
	txns := e.up.transactions()
	if len(txns) != 2 {
		t.Fatalf("upstream transactions = %d, want 2", len(txns))
	}
	if !strings.Contains(string(txns[0].data), "multipart/signed") {
		t.Error("the session opened before Reload did not sign")
	}
	if string(txns[1].data) != msg {
		t.Errorf("a session after Reload (sign: never) sent %q, want the message untouched", txns[1].data)
	}
}

// TestSMTPCheck: readiness follows the upstream.
func TestCheck(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.proxy.Check(context.Background()); err != nil {
		t.Errorf("Check with the upstream up = %v", err)
	}
	e.up.srv.Close()
	if err := e.proxy.Check(context.Background()); err == nil {
		t.Error("Check with the upstream down = nil, want an error")
	}
}

// TestSMTPStartFailsOnBusyPort: Start reports a listener it cannot open.
func TestStartFailsOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t, envOptions{})
	cfg := *e.cfg
	cfg.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}, {Addr: busy.Addr().String(), TLS: config.TLSNone}}
	opts := e.opts
	opts.Config = &cfg
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Start on a busy port = %v, want an error naming it", err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestSMTPShutdown: idle sessions get 421, a message in flight finishes with
// the upstream's reply, and no goroutine is left.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	inData := make(chan struct{}, 1)
	e := newEnv(t, envOptions{recorder: func(r *recorder) {
		r.onData = func(*gosmtp.Conn, []string, []byte) error {
			inData <- struct{}{}
			<-release
			return nil
		}
	}})
	before := baseline(t)
	idle := e.login()
	busy := e.login()
	busy.cmd("MAIL FROM:<alice@example.com>", "250 *")
	busy.cmd("RCPT TO:<bob@example.org>", "250 *")
	busy.cmd("DATA", "354 *")
	reply := make(chan string, 1)
	go func() { reply <- busy.data(message("bob@example.org", "in flight", "Hi\r\n")) }()
	<-inData

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.proxy.Shutdown(ctx)
	}()
	// The shutdown says so, not "Idle timeout" as go-smtp would.
	idle.expect("421 4.3.2 proxy.test Service shutting down; try again later")
	if !idle.closed() {
		t.Error("the idle session was not closed")
	}
	if _, err := net.DialTimeout("tcp", e.addr(0), time.Second); err == nil {
		t.Error("a new connection was accepted during Shutdown")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a message in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-reply; got != "250 2.0.0 Ok: queued as Q0001" {
		t.Errorf("the message in flight got %q, want the upstream's 250", got)
	}
	busy.expect("421 4.3.2 proxy.test Service shutting down; try again later")
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	goroutines(t, before)
}

// TestSMTPShutdownDeadline: when the deadline passes, everything is closed,
// upstream connections too, and the message in flight is not reported
// accepted.
func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	inData := make(chan struct{}, 1)
	e := newEnv(t, envOptions{recorder: func(r *recorder) {
		r.onData = func(*gosmtp.Conn, []string, []byte) error {
			inData <- struct{}{}
			<-release
			return nil
		}
	}})
	before := baseline(t)
	c := e.login()
	c.cmd("MAIL FROM:<alice@example.com>", "250 *")
	c.cmd("RCPT TO:<bob@example.org>", "250 *")
	c.cmd("DATA", "354 *")
	c.write(message("bob@example.org", "in flight", "Hi\r\n") + ".\r\n")
	<-inData
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.proxy.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown past its deadline = %v, want DeadlineExceeded", err)
	}
	close(release)
	if rest, _ := io.ReadAll(c.r); strings.Contains(string(rest), "250") {
		t.Errorf("the cut message got %q", rest)
	}
	goroutines(t, before)
}

// baseline counts goroutines once those of earlier tests have ended.
func baseline(t *testing.T) int {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	return runtime.NumGoroutine()
}

// TestChunking: BDAT in several chunks (go-smtp always offers CHUNKING)
// goes the same way as DATA; the upstream gets one chunk.
func TestChunking(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	msg := message("bob@example.org", "Chunks", "Hi Bob\r\n")
	c.cmd("MAIL FROM:<alice@example.com>", "250 *")
	c.cmd("RCPT TO:<bob@example.org>", "250 *")
	c.write(fmt.Sprintf("BDAT %d\r\n%s", 40, msg[:40]))
	c.expect("250 *")
	c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-40, msg[40:]))
	c.expect("250 2.0.0 Ok: queued as Q0001")
	if txns := e.up.transactions(); len(txns) != 1 || !strings.Contains(string(txns[0].data), "multipart/signed") || !txns[0].bdat {
		t.Errorf("upstream got %+v, want one signed message in one BDAT chunk", txns)
	}
}
