package smtp

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"

	"smimeproxy/config"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestSMTPAuth: the client gets the upstream's verdict on the credentials it
// passed through.
func TestAuth(t *testing.T) {
	type step struct{ send, want string }
	good := plain("alice@example.com", testPassword)
	bearer := func(tok string) string {
		return b64("n,a=alice@example.com,\x01host=upstream.test\x01port=587\x01auth=Bearer " + tok + "\x01\x01")
	}
	xoauth := func(tok string) string { return b64("user=alice@example.com\x01auth=Bearer " + tok + "\x01\x01") }
	oauth := []string{sasl.Plain, mechOAuthBearer, mechXOAuth2}
	tests := []struct {
		name   string
		mechs  []string // the upstream's
		steps  []step
		auths  []string // what reached the upstream
		failed float64  // auth failures counted
	}{
		{"PLAIN accepted", nil, []step{{"AUTH PLAIN " + good, "235 2.0.0 *"}}, []string{"PLAIN alice@example.com"}, 0},
		{"PLAIN refused: the upstream's reply verbatim", nil,
			[]step{{"AUTH PLAIN " + plain("alice@example.com", "wrong"), "535 5.7.8 Error: authentication failed: upstream says no"}},
			[]string{"PLAIN alice@example.com"}, 1},
		{"PLAIN without an initial response", nil, []step{{"AUTH PLAIN", "334 "}, {good, "235 2.0.0 *"}}, []string{"PLAIN alice@example.com"}, 0},
		{"PLAIN retried after a refusal", nil, []step{
			{"AUTH PLAIN " + plain("alice@example.com", "wrong"), "535 *"},
			{"AUTH PLAIN " + good, "235 *"},
		}, []string{"PLAIN alice@example.com", "PLAIN alice@example.com"}, 1},
		{"malformed PLAIN", nil, []step{{"AUTH PLAIN " + b64("alice"), "501 5.5.2 *"}}, nil, 0},
		{"LOGIN with the name as initial response, as Outlook sends it", nil, []step{
			{"AUTH LOGIN " + b64("alice@example.com"), "334 UGFzc3dvcmQ6"},
			{b64(testPassword), "235 2.0.0 *"},
		}, []string{"PLAIN alice@example.com"}, 0},
		{"LOGIN step by step", nil, []step{
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{b64("alice@example.com"), "334 UGFzc3dvcmQ6"},
			{b64(testPassword), "235 2.0.0 *"},
		}, []string{"PLAIN alice@example.com"}, 0},
		{"LOGIN refused", nil, []step{
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{b64("alice@example.com"), "334 UGFzc3dvcmQ6"},
			{b64("wrong"), "535 5.7.8 Error: authentication failed: upstream says no"},
		}, []string{"PLAIN alice@example.com"}, 1},
		{"to an upstream that speaks LOGIN only", []string{sasl.Login}, []step{{"AUTH PLAIN " + good, "235 *"}}, []string{"LOGIN alice@example.com"}, 0},
		{"cancelled by the client", nil, []step{{"AUTH LOGIN", "334 *"}, {"*", "501 *"}, {"AUTH PLAIN " + good, "235 *"}}, []string{"PLAIN alice@example.com"}, 0},
		{"unknown mechanism", nil, []step{{"AUTH CRAM-MD5", "504 5.7.4 *"}}, nil, 0},
		{"OAUTHBEARER not offered by the upstream", nil, []step{{"AUTH OAUTHBEARER " + bearer("good"), "504 5.7.4 *"}}, nil, 0},
		{"OAUTHBEARER accepted", oauth, []step{{"AUTH OAUTHBEARER " + bearer("good"), "235 *"}}, []string{"OAUTHBEARER alice@example.com"}, 0},
		{"OAUTHBEARER refused", oauth, []step{{"AUTH OAUTHBEARER " + bearer("stale"), "535 5.7.8 Username and Password not accepted"}}, []string{"OAUTHBEARER alice@example.com"}, 1},
		{"XOAUTH2 accepted", oauth, []step{{"AUTH XOAUTH2 " + xoauth("good"), "235 *"}}, []string{"XOAUTH2 alice@example.com"}, 0},
		{"XOAUTH2 refused", oauth, []step{{"AUTH XOAUTH2 " + xoauth("stale"), "535 5.7.8 *"}}, []string{"XOAUTH2 alice@example.com"}, 1},
		{"XOAUTH2 without the initial response", oauth, []step{{"AUTH XOAUTH2", "334 "}, {xoauth("good"), "235 *"}}, []string{"XOAUTH2 alice@example.com"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				upstream: upstreamOptions{mechs: tc.mechs},
				recorder: func(r *recorder) { r.tokens["good"] = true },
			})
			c := e.dial()
			c.cmd("EHLO client.test", "250 *")
			for _, s := range tc.steps {
				c.cmd(s.send, s.want)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(min(1, len(tc.auths)))
			if _, _, auths := e.up.counts(); !slices.Equal(auths, tc.auths) {
				t.Errorf("AUTH upstream = %q, want %q", auths, tc.auths)
			}
			if got := e.metric("smimeproxy_auth_failures_total", "proto", "smtp"); got != tc.failed {
				t.Errorf("auth failures counted = %v, want %v", got, tc.failed)
			}
		})
	}
}

// TestSMTPAuthRules: AUTH only over TLS or on a listener without TLS (which
// is on loopback, or explicitly insecure); MAIL only after AUTH.
func TestAuthRules(t *testing.T) {
	e := newEnv(t, envOptions{listen: []config.Listener{
		{Addr: "127.0.0.1:0", TLS: config.TLSStartTLS},
		{Addr: "127.0.0.1:0", TLS: config.TLSImplicit},
		{Addr: "127.0.0.1:0", TLS: config.TLSNone},
	}})
	good := "AUTH PLAIN " + plain("alice@example.com", testPassword)

	t.Run("STARTTLS listener: no AUTH before STARTTLS", func(t *testing.T) {
		c := dialTest(t, e.addr(0))
		ehlo := strings.Join(c.cmd("EHLO client.test", "250 *"), "\n")
		if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO before STARTTLS = %q, want STARTTLS and no AUTH", ehlo)
		}
		c.cmd(good, "523 5.7.10 *")
		c.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0 Authentication required")
		c.startTLS(e.pki)
		ehlo = strings.Join(c.cmd("EHLO client.test", "250 *"), "\n")
		if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
			t.Errorf("EHLO after STARTTLS = %q, want AUTH PLAIN LOGIN", ehlo)
		}
		c.cmd(good, "235 *")
		c.cmd("MAIL FROM:<alice@example.com>", "250 *")
	})
	t.Run("implicit TLS listener", func(t *testing.T) {
		conn := dialTLS(t, e, e.addr(1))
		ehlo := strings.Join(conn.cmd("EHLO client.test", "250 *"), "\n")
		if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO over implicit TLS = %q, want AUTH and no STARTTLS", ehlo)
		}
		conn.cmd(good, "235 *")
	})
	t.Run("plain listener on loopback", func(t *testing.T) {
		c := dialTest(t, e.addr(2))
		if ehlo := strings.Join(c.cmd("EHLO client.test", "250 *"), "\n"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
			t.Errorf("EHLO on loopback = %q, want AUTH", ehlo)
		}
		c.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0 *")
		c.cmd(good, "235 *")
	})
	t.Run("no plaintext listener off loopback unless insecure_plaintext", func(t *testing.T) {
		opts := e.opts
		cfg := *e.cfg
		cfg.SMTP.Listen = []config.Listener{{Addr: "0.0.0.0:0", TLS: config.TLSNone}}
		opts.Config = &cfg
		if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "loopback only") {
			t.Errorf("New(tls: none on 0.0.0.0) = %v, want a refusal", err)
		}
		cfg.SMTP.Listen[0].InsecurePlaintext = true
		if _, err := New(opts); err != nil {
			t.Errorf("New(tls: none on 0.0.0.0, insecure_plaintext) = %v, want it allowed", err)
		}
	})
	t.Run("require_auth: false lets MAIL through without AUTH", func(t *testing.T) {
		opts := e.opts
		cfg := *e.cfg
		cfg.SMTP.RequireAuth = false
		cfg.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
		opts.Config = &cfg
		p, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		c := dialTest(t, p.Addrs()[0].String())
		c.cmd("EHLO client.test", "250 *")
		// The upstream decides: this one wants AUTH too, and says so.
		c.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0 Authentication required")
	})
}

// TestTokenLoginIdentity: after a token login the name the client states is
// not who they are unless the configuration says the upstream checks it;
// until then no key of theirs is used. The recording upstream accepts a
// good token under any name, as a careless server would.
func TestTokenLoginIdentity(t *testing.T) {
	p := testPKI(t)
	token := b64("n,a=alice@example.com,\x01auth=Bearer good\x01\x01")
	tests := []struct {
		name    string
		trust   bool
		subject string
		want    string
		signed  bool
	}{
		{"not trusted: signing refused", false, "Hello",
			"554 5.7.1 Refused by policy: signing needs a login the proxy can check, and a token (OAuth) login is not one; log in with your password, or send with [nosign]", false},
		{"not trusted: [nosign] goes unsigned", false, "[nosign] Hello", "250 *", false},
		{"trusted: signed as the stated name", true, "Hello", "250 *", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				upstream: upstreamOptions{mechs: []string{mechOAuthBearer}},
				recorder: func(r *recorder) { r.tokens["good"] = true },
				config:   func(c *config.Config) { c.SMTP.TrustTokenNames = tc.trust },
			})
			c := e.dial()
			c.cmd("EHLO client.test", "250 *")
			c.cmd("AUTH OAUTHBEARER "+token, "235 *")
			if got := c.send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", tc.subject, "Hi Bob\r\n")); !match(tc.want, got) {
				t.Fatalf("DATA reply %q, want %q", got, tc.want)
			}
			txns := e.up.transactions()
			switch {
			case !strings.HasPrefix(tc.want, "250"):
				if len(txns) != 0 {
					t.Errorf("the upstream got %d messages, want none", len(txns))
				}
			case len(txns) != 1:
				t.Fatalf("the upstream got %d messages, want 1", len(txns))
			default:
				o := open(t, p, txns[0].data)
				if signed := len(o.Signatures) == 1 && o.Signatures[0].Signer.Equal(p.alice.Cert); signed != tc.signed {
					t.Errorf("signed by alice: %v, want %v", signed, tc.signed)
				}
			}
		})
	}
}
