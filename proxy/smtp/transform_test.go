package smtp

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/internal/hostile"
	"smimeproxy/internal/testpki"
	"smimeproxy/policy"
	"smimeproxy/smime"
)

// headerField returns the raw bytes of the first field named name in msg's
// header, folding and line end included.
func headerField(msg []byte, name string) string {
	var out string
	_, _ = smime.EditHeader(msg, func(n string, raw []byte) []byte {
		if out == "" && strings.EqualFold(n, name) {
			out = string(raw)
		}
		return raw
	})
	return out
}

func contentType(msg []byte) string {
	return strings.Join(strings.Fields(strings.TrimSpace(strings.TrimPrefix(headerField(msg, "Content-Type"), "Content-Type:"))), " ")
}

// TestSMTPPolicy: what reaches the upstream is what policy asked for.
func TestPolicy(t *testing.T) {
	p := testPKI(t)
	gcm := cms.Capability{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}}
	dkim := "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel;\r\n\tbh=abc=; b=def"
	body := "Hi Bob,\r\nGrüße aus Köln.\r\n.leading dot\r\n"
	required := func(pol *policy.Policy) { pol.Domains["example.org"] = policy.Rules{Encrypt: policy.EncryptRequired} }
	tests := []struct {
		name    string
		certs   []*x509.Certificate
		addCert func(t *testing.T, c *certcache.Cache)
		policy  func(*policy.Policy)
		subject string
		extra   []string // header lines before From
		from    string   // From header; default alice
		rcpts   []string // default bob
		want    string   // the client's DATA reply
		check   func(t *testing.T, in string, got []byte)
	}{
		{name: "signed when a recipient has no certificate", want: "250 2.0.0 Ok: queued as Q0001", extra: []string{dkim},
			check: func(t *testing.T, in string, got []byte) {
				if ct := contentType(got); !strings.HasPrefix(ct, "multipart/signed;") || !strings.Contains(ct, "application/pkcs7-signature") {
					t.Errorf("Content-Type %q, want multipart/signed", ct)
				}
				for _, f := range []string{"DKIM-Signature", "Message-ID", "Date", "From", "To", "Subject"} {
					if a, b := headerField([]byte(in), f), headerField(got, f); a != b || a == "" {
						t.Errorf("%s changed from %q to %q", f, a, b)
					}
				}
				o := open(t, p, got)
				if len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusValid || !o.Signatures[0].Signer.Equal(p.alice.Cert) {
					t.Errorf("signatures %+v, want one valid by alice", o.Signatures)
				}
				if o.HeaderProtection != "" {
					t.Errorf("signed-only mail has header protection %q by default", o.HeaderProtection)
				}
				if !strings.Contains(string(o.Message), "Gr=C3=BC=C3=9Fe") {
					t.Errorf("the signed 8-bit body was not made 7-bit safe: %q", o.Message)
				}
			}},
		{name: "signed and encrypted when every recipient has a certificate", certs: []*x509.Certificate{p.bob.Cert}, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if ct := contentType(got); !strings.Contains(ct, "application/pkcs7-mime") || !strings.Contains(ct, "enveloped-data") {
					t.Errorf("Content-Type %q, want enveloped-data", ct)
				}
				if strings.Contains(string(got), "Hi Bob") {
					t.Error("the body went in the clear")
				}
				// The header is protected: the Subject hidden outside, the rest as it was.
				if f := headerField(got, "Subject"); f != "Subject: [...]\r\n" {
					t.Errorf("outer Subject %q, want [...]", f)
				}
				for _, f := range []string{"Message-ID", "Date", "From", "To"} {
					if a, b := headerField([]byte(in), f), headerField(got, f); a != b || a == "" {
						t.Errorf("%s changed from %q to %q", f, a, b)
					}
				}
				for _, reader := range []*testpki.Identity{p.bob, p.alice} {
					o := open(t, p, got, reader)
					if !o.Decrypted || o.Cipher != cms.AES256CBC || len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusValid {
						t.Errorf("opened by %s: decrypted %v (%v), cipher %v, signatures %+v", reader.Cert.EmailAddresses, o.Decrypted, o.DecryptErr, o.Cipher, o.Signatures)
					}
					if o.HeaderProtection != "cipher" || headerField(o.Message, "Subject") != "Subject: Hello\r\n" {
						t.Errorf("opened by %s: header protection %q, Subject %q", reader.Cert.EmailAddresses, o.HeaderProtection, headerField(o.Message, "Subject"))
					}
				}
				if o := open(t, p, got, p.carol); o.Decrypted {
					t.Error("carol, not a recipient, could decrypt it")
				}
			}},
		{name: "AES-GCM when every recipient advertised it", want: "250 *",
			addCert: func(t *testing.T, c *certcache.Cache) {
				if _, err := c.Add(p.bob.Cert, &certcache.AddOptions{Source: certcache.SourceHarvested, Capabilities: []cms.Capability{gcm}}); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, in string, got []byte) {
				if o := open(t, p, got, p.bob); !o.Decrypted || o.Cipher != cms.AES256GCM {
					t.Errorf("cipher %v (decrypted %v), want AES-256-GCM", o.Cipher, o.Decrypted)
				}
			}},
		{name: "opaque signature when configured", policy: func(pol *policy.Policy) { pol.Opaque = true }, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if ct := contentType(got); !strings.Contains(ct, "signed-data") {
					t.Errorf("Content-Type %q, want signed-data", ct)
				}
			}},
		{name: "required encryption refuses, naming the recipient and why", policy: required,
			want: "554 5.7.1 Refused by policy: encryption is required but there is no usable certificate for bob@example.org (no certificate)"},
		{name: "a foreign From is refused", from: "ceo@example.com", want: "554 5.7.1 Refused by policy: the From address <ceo@example.com> is not one of yours*"},
		{name: "a foreign From goes unsigned when configured", from: "ceo@example.com", want: "250 *",
			policy: func(pol *policy.Policy) { pol.ForeignFrom = policy.ForeignFromUnsigned },
			check: func(t *testing.T, in string, got []byte) {
				if string(got) != in {
					t.Errorf("a foreign From went as %q, want it untouched", got)
				}
			}},
		{name: "[encrypt] without a certificate refuses", subject: "[encrypt] Contract",
			want: "554 5.7.1 Refused by policy: encryption is required but there is no usable certificate for bob@example.org (no certificate)"},
		{name: "[encrypt] is stripped", subject: "[encrypt] Contract", certs: []*x509.Certificate{p.bob.Cert}, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if f := headerField(got, "Subject"); f != "Subject: [...]\r\n" {
					t.Errorf("outer Subject %q, want [...]", f)
				}
				if f := headerField(open(t, p, got, p.bob).Message, "Subject"); f != "Subject: Contract\r\n" {
					t.Errorf("Subject %q, want the tag removed", f)
				}
			}},
		{name: "encrypted unsigned: the header protected by the encryption", certs: []*x509.Certificate{p.bob.Cert}, want: "250 *",
			policy: func(pol *policy.Policy) { pol.Default.Sign = policy.SignNever },
			check: func(t *testing.T, in string, got []byte) {
				if f := headerField(got, "Subject"); f != "Subject: [...]\r\n" {
					t.Errorf("outer Subject %q, want [...]", f)
				}
				o := open(t, p, got, p.bob)
				if len(o.Signatures) != 0 || o.HeaderProtection != "cipher" || headerField(o.Message, "Subject") != "Subject: Hello\r\n" {
					t.Errorf("signatures %d, header protection %q, Subject %q", len(o.Signatures), o.HeaderProtection, headerField(o.Message, "Subject"))
				}
				if bytes.Contains(o.Message, []byte("legacy-display")) || !bytes.Contains(o.Message, []byte("\r\n\r\nHi Bob,")) {
					t.Errorf("served with the Legacy Display Element:\n%s", o.Message)
				}
			}},
		{name: "protect_headers never for the domain: the Subject stays outside", certs: []*x509.Certificate{p.bob.Cert}, want: "250 *",
			policy: func(pol *policy.Policy) {
				pol.Domains["example.org"] = policy.Rules{ProtectHeaders: policy.ProtectNever}
			},
			check: func(t *testing.T, in string, got []byte) {
				if a, b := headerField([]byte(in), "Subject"), headerField(got, "Subject"); a != b {
					t.Errorf("Subject changed from %q to %q", a, b)
				}
				if o := open(t, p, got, p.bob); !o.Decrypted || o.HeaderProtection != "" {
					t.Errorf("decrypted %v, header protection %q, want none", o.Decrypted, o.HeaderProtection)
				}
			}},
		{name: "protect_headers always: signed-only mail carries it inside its signature", want: "250 *", extra: []string{dkim},
			policy: func(pol *policy.Policy) { pol.Default.ProtectHeaders = policy.ProtectAlways },
			check: func(t *testing.T, in string, got []byte) {
				for _, f := range []string{"DKIM-Signature", "Message-ID", "Date", "From", "To", "Subject"} {
					if a, b := headerField([]byte(in), f), headerField(got, f); a != b || a == "" {
						t.Errorf("%s changed from %q to %q", f, a, b)
					}
				}
				o := open(t, p, got)
				if len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusValid || o.HeaderProtection != "clear" ||
					o.ProtectedHeaders.Get("Subject") != "Hello" || o.ProtectedHeaders.Has("DKIM-Signature") {
					t.Errorf("signatures %+v, header protection %q, protected %v", o.Signatures, o.HeaderProtection, o.ProtectedHeaders)
				}
			}},
		{name: "[plain] sends it as it is, without the tag", subject: "Re: [plain] Newsletter [v2]", certs: []*x509.Certificate{p.bob.Cert}, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if want := strings.Replace(in, "Re: [plain] Newsletter [v2]", "Re: Newsletter [v2]", 1); string(got) != want {
					t.Errorf("sent %q, want %q", got, want)
				}
			}},
		{name: "X-SMIME-Policy: nosign is honoured and stripped", extra: []string{"X-SMIME-Policy: nosign"}, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if want := strings.Replace(in, "X-SMIME-Policy: nosign\r\n", "", 1); string(got) != want {
					t.Errorf("sent %q, want %q", got, want)
				}
			}},
		{name: "an encoded subject is decoded, stripped and encoded again", subject: "=?utf-8?q?=5Bnosign=5D_Gr=C3=BC=C3=9Fe?=", want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if f := headerField(got, "Subject"); f != "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" {
					t.Errorf("Subject %q", f)
				}
				if ct := contentType(got); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("Content-Type %q, want it unsigned", ct)
				}
			}},
		{name: "overrides off: tags stay and count for nothing", subject: "[nosign] Hello", extra: []string{"X-SMIME-Policy: nosign"},
			policy: func(pol *policy.Policy) { pol.Overrides = false }, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if f := headerField(got, "Subject"); f != "Subject: [nosign] Hello\r\n" || headerField(got, "X-SMIME-Policy") == "" {
					t.Errorf("Subject %q, X-SMIME-Policy %q: want both kept", f, headerField(got, "X-SMIME-Policy"))
				}
				if !strings.HasPrefix(contentType(got), "multipart/signed") {
					t.Error("not signed")
				}
			}},
		{name: "a Bcc field left by the client is removed", extra: []string{"Bcc: carol@example.org"}, rcpts: []string{"bob@example.org", "carol@example.org"}, want: "250 *",
			check: func(t *testing.T, in string, got []byte) {
				if bytes.Contains(got, []byte("carol")) {
					t.Errorf("the message names the Bcc recipient: %q", got)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{certs: tc.certs, policy: tc.policy})
			if tc.addCert != nil {
				tc.addCert(t, e.certs)
			}
			subject := tc.subject
			if subject == "" {
				subject = "Hello"
			}
			in := message("bob@example.org", subject, body, tc.extra...)
			if tc.from != "" {
				in = strings.Replace(in, "Alice <alice@example.com>", tc.from, 1)
			}
			rcpts := tc.rcpts
			if rcpts == nil {
				rcpts = []string{"bob@example.org"}
			}
			c := e.login()
			if got := c.send("alice@example.com", rcpts, in); !match(tc.want, got) {
				t.Fatalf("DATA reply %q, want %q", got, tc.want)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(1)
			txns := e.up.transactions()
			if tc.check == nil {
				if started, _, _ := e.up.counts(); len(txns) != 0 || started != 0 {
					t.Fatalf("the upstream got %d messages (%d DATA), want none", len(txns), started)
				}
				return
			}
			if len(txns) != 1 || !slices.Equal(txns[0].rcpts, rcpts) {
				t.Fatalf("upstream transactions %+v, want one to %v", txns, rcpts)
			}
			tc.check(t, in, txns[0].data)
		})
	}
}

// TestNormalizedNames: a recipient domain that requires encryption
// requires it however the client spells the recipient (case, trailing dot),
// and the From address and the To field are matched the same way.
func TestNormalizedNames(t *testing.T) {
	p := testPKI(t)
	required := func(pol *policy.Policy) { pol.Domains["example.org"] = policy.Rules{Encrypt: policy.EncryptRequired} }
	for _, rcpt := range []string{"bob@example.org.", "BOB@EXAMPLE.ORG", "Bob@Example.Org.."} {
		t.Run(rcpt+" without a certificate", func(t *testing.T) {
			e := newEnv(t, envOptions{policy: required})
			c := e.login()
			want := "554 5.7.1 Refused by policy: encryption is required but there is no usable certificate for bob@example.org (no certificate)"
			if got := c.send("alice@example.com", []string{rcpt}, message("bob@example.org", "Hello", "Hi Bob\r\n")); got != want {
				t.Fatalf("DATA reply %q, want %q", got, want)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(1)
			if started, _, _ := e.up.counts(); started != 0 {
				t.Errorf("the upstream got %d DATA commands, want none", started)
			}
		})
		t.Run(rcpt+" with a certificate", func(t *testing.T) {
			e := newEnv(t, envOptions{policy: required, certs: []*x509.Certificate{p.bob.Cert}})
			c := e.login()
			in := strings.Replace(message("bob@example.org", "Hello", "Hi Bob\r\n"), "<alice@example.com>", "<ALICE@Example.COM>", 1)
			if got := c.send("alice@example.com", []string{rcpt}, in); !match("250 *", got) {
				t.Fatalf("DATA reply %q, want 250", got)
			}
			txns := e.up.transactions()
			if len(txns) != 1 || !slices.Equal(txns[0].rcpts, []string{rcpt}) {
				t.Fatalf("upstream transactions %+v, want one, to %s as the client wrote it", txns, rcpt)
			}
			if bytes.Contains(txns[0].data, []byte("Hi Bob")) {
				t.Fatal("the body went in the clear")
			}
			if o := open(t, p, txns[0].data, p.bob); !o.Decrypted || len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusValid {
				t.Errorf("opened by bob: decrypted %v (%v), signatures %+v; want decrypted and signed by alice", o.Decrypted, o.DecryptErr, o.Signatures)
			}
		})
	}
}

// TestSMTPAlreadyProtected: S/MIME and PGP/MIME messages pass byte for byte.
func TestAlreadyProtected(t *testing.T) {
	p := testPKI(t)
	signed, err := smime.Sign([]byte(message("bob@example.org", "[encrypt] signed elsewhere", "Hi\r\n", "X-SMIME-Policy: plain")),
		&smime.Identity{Cert: p.alice.Cert, Key: p.alice.Key, Chain: p.alice.Chain}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pgp := "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: [sign] pgp\r\nBcc: carol@example.org\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"
	for name, msg := range map[string]string{"S/MIME": string(signed), "PGP/MIME": pgp} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{certs: []*x509.Certificate{p.bob.Cert}})
			c := e.login()
			c.send("alice@example.com", []string{"bob@example.org"}, msg)
			if txns := e.up.transactions(); len(txns) != 1 || string(txns[0].data) != msg {
				t.Errorf("upstream got %+v, want the message byte for byte", txns)
			}
			if got := e.metric("smimeproxy_messages_total", "action", "pass", "result", "ok"); got != 1 {
				t.Errorf("messages passed = %v, want 1", got)
			}
		})
	}
}

// TestSMTPBcc: a Bcc recipient is revealed to no one, and partial failures
// go as documented on plan.
func TestBcc(t *testing.T) {
	p := testPKI(t)
	all := []*x509.Certificate{p.bob.Cert, p.carol.Cert, p.dave.Cert}
	// To bob, Cc dave, Bcc carol.
	msg := message("bob@example.org", "Plans", "Hi all\r\n", "Cc: dave@example.net")
	rcpts := []string{"bob@example.org", "carol@example.org", "dave@example.net"}

	t.Run("encrypted: a copy of its own for each Bcc recipient", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: all})
		c := e.login()
		if got := c.send("alice@example.com", rcpts, msg); got != "250 2.0.0 Ok: queued as Q0001" {
			t.Fatalf("DATA reply %q, want the main copy's", got)
		}
		txns := e.up.transactions()
		if len(txns) != 2 || !slices.Equal(txns[0].rcpts, []string{"bob@example.org", "dave@example.net"}) || !slices.Equal(txns[1].rcpts, []string{"carol@example.org"}) {
			t.Fatalf("upstream transactions %+v, want bob and dave, then carol", txns)
		}
		for i, readers := range [][]*testpki.Identity{{p.bob, p.dave, p.alice}, {p.carol, p.alice}} {
			got := txns[i].data
			if bytes.Contains(got, []byte("carol")) {
				t.Errorf("copy %d names the Bcc recipient", i)
			}
			for _, r := range []*testpki.Identity{p.bob, p.carol, p.dave, p.alice} {
				o := open(t, p, got, r)
				if want := slices.Contains(readers, r); o.Decrypted != want {
					t.Errorf("copy %d: %s can decrypt: %v, want %v", i, r.Cert.EmailAddresses[0], o.Decrypted, want)
				}
				if o.Decrypted && len(o.Recipients) != len(readers) {
					t.Errorf("copy %d has %d recipient infos, want %d", i, len(o.Recipients), len(readers))
				}
			}
		}
	})
	t.Run("everyone in Bcc: a copy each", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: all})
		c := e.login()
		c.send("alice@example.com", []string{"bob@example.org", "carol@example.org"}, strings.Replace(msg, "To: bob@example.org", "To: undisclosed-recipients:;", 1))
		txns := e.up.transactions()
		if len(txns) != 2 || !slices.Equal(txns[0].rcpts, []string{"bob@example.org"}) || !slices.Equal(txns[1].rcpts, []string{"carol@example.org"}) {
			t.Fatalf("upstream transactions %+v, want one each", txns)
		}
	})
	t.Run("signed only: one transaction", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: []*x509.Certificate{p.bob.Cert}})
		c := e.login()
		c.send("alice@example.com", rcpts, msg)
		txns := e.up.transactions()
		if len(txns) != 1 || !slices.Equal(txns[0].rcpts, rcpts) || bytes.Contains(txns[0].data, []byte("carol")) {
			t.Fatalf("upstream transactions %+v, want one to all, without carol's name", txns)
		}
	})
	t.Run("a Bcc copy refused after the main copy: 250, and a notice", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: all, recorder: func(r *recorder) {
			r.onData = func(_ *gosmtp.Conn, rcpts []string, _ []byte) error {
				if slices.Equal(rcpts, []string{"carol@example.org"}) {
					return &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
				}
				return nil
			}
		}})
		c := e.login()
		if got := c.send("alice@example.com", rcpts, msg); got != "250 2.0.0 Ok: queued as Q0001" {
			t.Fatalf("DATA reply %q, want the main copy's 250", got)
		}
		txns := e.up.transactions()
		if len(txns) != 2 {
			t.Fatalf("upstream transactions %+v, want the main copy and the notice", txns)
		}
		n := txns[1]
		if n.from != "alice@example.com" || !slices.Equal(n.rcpts, []string{"alice@example.com"}) ||
			!bytes.Contains(n.data, []byte("carol@example.org: 552 5.2.2 Mailbox full")) || !bytes.Contains(n.data, []byte("<m1@example.com>")) {
			t.Errorf("notice %+v, want one to alice naming carol and the reply", n)
		}
		if got := e.metric("smimeproxy_messages_total", "action", "sign_encrypt", "result", "partial"); got != 1 {
			t.Errorf("partial deliveries counted = %v, want 1", got)
		}
		if !strings.Contains(e.logs.String(), "a Bcc copy was not delivered") {
			t.Error("the failure was not logged")
		}
	})
	t.Run("the main copy refused: nothing is sent", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: all, recorder: func(r *recorder) {
			r.onData = func(_ *gosmtp.Conn, rcpts []string, _ []byte) error {
				if slices.Contains(rcpts, "bob@example.org") {
					return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Try later"}
				}
				return nil
			}
		}})
		c := e.login()
		if got := c.send("alice@example.com", rcpts, msg); got != "451 4.3.0 Try later" {
			t.Fatalf("DATA reply %q, want the main copy's refusal", got)
		}
		if started, _, _ := e.up.counts(); len(e.up.transactions()) != 0 || started != 1 {
			t.Errorf("upstream got %d messages after %d DATA, want none after one", len(e.up.transactions()), started)
		}
		// The session goes on.
		c.cmd("RSET", "250 *")
		c.cmd("NOOP", "250 *")
	})
}

// TestSMTPBadRecipientCerts: a certificate that is expired, not yet valid,
// for another address or from an untrusted CA is never used to encrypt.
func TestBadRecipientCerts(t *testing.T) {
	p := testPKI(t)
	now := time.Now()
	other := testpki.NewCA(t, "untrusted root")
	tests := []struct {
		name   string
		cert   *x509.Certificate
		reason string
	}{
		{"expired", p.ca.Issue(t, "bob@example.org", &testpki.Options{NotBefore: now.AddDate(-2, 0, 0), NotAfter: now.AddDate(-1, 0, 0)}).Cert, "certificate expired"},
		{"not yet valid", p.ca.Issue(t, "bob@example.org", &testpki.Options{NotBefore: now.AddDate(1, 0, 0), NotAfter: now.AddDate(2, 0, 0)}).Cert, "certificate not yet valid"},
		{"for another address", p.ca.Issue(t, "mallory@example.org", nil).Cert, "no certificate"},
		{"untrusted", other.Issue(t, "bob@example.org", nil).Cert, "certificate untrusted"},
	}
	for _, tc := range tests {
		for _, mode := range []string{"opportunistic", "required"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				e := newEnv(t, envOptions{certs: []*x509.Certificate{tc.cert}, config: func(c *config.Config) {
					c.Policy.Domains = map[string]config.Rules{"example.org": {Encrypt: mode}}
				}})
				c := e.login()
				got := c.send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Hello", "Hi\r\n"))
				txns := e.up.transactions()
				if mode == "required" {
					if want := "554 5.7.1 Refused by policy: encryption is required but there is no usable certificate for bob@example.org (" + tc.reason + ")"; got != want {
						t.Errorf("DATA reply %q, want %q", got, want)
					}
					if len(txns) != 0 {
						t.Errorf("upstream got %d messages, want none", len(txns))
					}
					return
				}
				if len(txns) != 1 || !strings.HasPrefix(contentType(txns[0].data), "multipart/signed") {
					t.Fatalf("upstream got %+v, want one signed, not encrypted, message", txns)
				}
			})
		}
	}
}

// TestEditHeaderEncodedWords: taking a tag out of the Subject never joins
// text into an encoded word, so the Subject reads as the sender wrote it.
func TestEditHeaderEncodedWords(t *testing.T) {
	tests := []struct{ name, subject, want string }{
		{"ascii joined into a word", "0000000=[sign]??B??=", "Subject: =?utf-8?q?0000000=3D=3F=3FB=3F=3F=3D?=\r\n"},
		{"undecodable kept", "=?x-unknown?q?a?= =[sign]?utf-8?q?b?=", "Subject: =?x-unknown?q?a?= =[sign]?utf-8?q?b?=\r\n"},
		{"undecodable tag removed", "[sign] =?x-unknown?q?a?=", "Subject: =?x-unknown?q?a?=\r\n"},
	}
	for _, tc := range tests {
		msg := []byte("From: a@example.com\r\nSubject: " + tc.subject + "\r\n\r\nbody\r\n")
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
		if err != nil {
			t.Fatal(err)
		}
		_, out, err := editHeader(msg, h, true)
		if err != nil {
			t.Fatalf("editHeader(%s): %v", tc.name, err)
		}
		if got := headerField(out, "Subject"); got != tc.want {
			t.Errorf("editHeader(%s): Subject %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDeepNestingRefused: a message nested past the MIME walker's limit
// cannot be signed: the client gets a permanent 5.6.0 that says why, and
// the upstream gets nothing.
func TestDeepNestingRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	msg := strings.Replace(string(hostile.Nested(101)), "From: Mallory <mallory@example.net>\r\nTo: victim@example.org",
		"From: Alice <alice@example.com>\r\nTo: bob@example.org", 1)
	c := e.login()
	if got := c.send("alice@example.com", []string{"bob@example.org"}, msg); !match("554 5.6.0 *it nests more than 100 levels deep", got) {
		t.Errorf("DATA reply %q, want 554 5.6.0 naming the nesting limit", got)
	}
	c.cmd("QUIT", "221 *")
	e.up.waitLogouts(1)
	if started, _, _ := e.up.counts(); started != 0 {
		t.Errorf("the upstream got %d messages, want none", started)
	}
}
