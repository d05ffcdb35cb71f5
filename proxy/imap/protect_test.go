package imap_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/proxy/smtp"
	"smimeproxy/smime"
)

// Header protection (RFC 9788) through both proxies: what the SMTP proxy
// sends has its Subject hidden on the way, and the reader sees it again
// through the IMAP proxy, in every item that shows it.

// signingKeys are the test keystore, with signing keys for the SMTP proxy.
type signingKeys struct {
	*keys
	ids map[string]*testpki.Identity
}

func (k signingKeys) Signer(email string, _ time.Time) (*keystore.Signer, error) {
	id, ok := k.ids[email]
	if !ok {
		return nil, keystore.ErrNoIdentity
	}
	return &keystore.Signer{KeyID: email, Key: id.Key, Cert: id.Cert, Chain: id.Chain, EncryptionCert: id.Cert}, nil
}

func (k signingKeys) EncryptionCert(email string, _ time.Time) (*x509.Certificate, error) {
	id, ok := k.ids[email]
	if !ok {
		return nil, keystore.ErrNoIdentity
	}
	return id.Cert, nil
}

// startSMTP starts an SMTP proxy in front of the lab's Postfix, signing as
// alice, with the IMAP environment's certificate cache and policy as edit
// leaves it.
func startSMTP(t *testing.T, e *env, p *pki, edit func(*policy.Policy)) string {
	t.Helper()
	c := config.Default()
	c.ServerName = "proxy.test"
	c.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	c.SMTP.Upstream = config.Upstream{Addr: e.lab.Submission, TLS: config.TLSStartTLS, CAFile: e.lab.CA}
	pol := policy.FromConfig(c.Policy)
	if edit != nil {
		edit(pol)
	}
	sp, err := smtp.New(proxy.Options{Config: c, Policy: pol, Certs: e.certs,
		Keys:   signingKeys{keys: e.keys, ids: map[string]*testpki.Identity{"alice@example.test": p.alice}},
		Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sp.Shutdown(ctx)
	})
	return sp.Addrs()[0].String()
}

// uidOf finds the message with this Message-ID in the selected mailbox.
func uidOf(t *testing.T, c *client, msgID string) string {
	t.Helper()
	resp := joined(c.cmd("s UID SEARCH HEADER Message-ID "+quote(msgID), ""))
	m := regexp.MustCompile(`(?m)^\* SEARCH (\d+)\r$`).FindStringSubmatch(resp)
	if m == nil {
		t.Fatalf("no message %s:\n%s", msgID, resp)
	}
	return m[1]
}

// TestLabHeaderProtectionRoundTrip: alice writes to bob through the SMTP
// proxy, which encrypts; Postfix delivers, and Dovecot's Maildir holds
// "Subject: [...]" and nowhere the real Subject, which is what Dovecot
// serves. Through the IMAP proxy bob sees the real Subject in ENVELOPE,
// BODY[HEADER.FIELDS (SUBJECT)] and BODY[], and the verdict field says the
// header was protected. Signed detached, the Legacy Display Element stays
// in the multipart/signed the client checks itself; opaque or unsigned, it
// is left out.
func TestLabHeaderProtectionRoundTrip(t *testing.T) {
	e, p := newSMIMEEnv(t)
	if _, err := e.certs.Add(p.bob.Cert, nil); err != nil {
		t.Fatal(err)
	}
	alice, bob := e.lab.User(t, "alice"), e.lab.User(t, "bob")
	for _, tc := range []struct {
		name   string
		edit   func(*policy.Policy)
		pass   bool // signed: smime=pass
		legacy bool // the Legacy Display Element is served
	}{
		{"signed and encrypted", nil, true, true},
		{"signed opaque and encrypted", func(p *policy.Policy) { p.Opaque = true }, true, false},
		{"encrypted", func(p *policy.Policy) { p.Default.Sign = policy.SignNever }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startSMTP(t, e, p, tc.edit)
			marker := fmt.Sprintf("hp-%d", time.Now().UnixNano())
			subject := "Quarterly figures " + marker
			msgID := "<" + marker + "@example.test>"
			msg := "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: " + subject +
				"\r\nMessage-ID: " + msgID + "\r\nDate: " + time.Now().Format(time.RFC1123Z) +
				"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe figures are in.\r\n"
			sc, err := gosmtp.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			if err := sc.Auth(sasl.NewPlainClient("", alice.Address, alice.Password)); err != nil {
				t.Fatal(err)
			}
			if err := sc.SendMail(alice.Address, []string{bob.Address}, strings.NewReader(msg)); err != nil {
				t.Fatal(err)
			}

			stored := string(e.lab.WaitMessage(t, bob.Address, msgID))
			if !strings.Contains(stored, "\nSubject: [...]\n") || strings.Contains(stored, subject) ||
				!strings.Contains(stored, "application/pkcs7-mime") {
				t.Fatalf("the Maildir holds the message not encrypted with its Subject hidden:\n%s", stored)
			}
			direct := dialDirect(t, e.lab, bob)
			direct.cmd("e EXAMINE INBOX", "")
			if got := joined(direct.cmd("f UID FETCH "+uidOf(t, direct, msgID)+" (ENVELOPE)", "")); !strings.Contains(got, `"[...]"`) {
				t.Errorf("Dovecot's ENVELOPE has another Subject than [...]:\n%s", got)
			}

			c := e.dialProxy(t, bob)
			c.cmd("e EXAMINE INBOX", "")
			resp := c.cmd("f UID FETCH "+uidOf(t, c, msgID)+" (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[])", "")
			all := joined(resp)
			if !strings.Contains(all, `ENVELOPE ("`) || !strings.Contains(all, quote(subject)) || strings.Contains(all, `"[...]"`) {
				t.Errorf("ENVELOPE without the real Subject:\n%s", all)
			}
			if got := literalOf(t, resp, "BODY[HEADER.FIELDS (SUBJECT)]"); got != "Subject: "+subject+"\r\n\r\n" {
				t.Errorf("BODY[HEADER.FIELDS (SUBJECT)] = %q", got)
			}
			body := literalOf(t, resp, "BODY[]")
			header, text, _ := strings.Cut(body, "\r\n\r\n")
			unfolded := strings.ReplaceAll(header, "\r\n ", " ")
			for _, want := range []string{"\r\nSubject: " + subject + "\r\n", "header protected, hp=cipher", "Message-ID: " + msgID} {
				if !strings.Contains("\r\n"+unfolded+"\r\n", want) {
					t.Errorf("BODY[] header lacks %q:\n%s", want, header)
				}
			}
			if strings.Count(header, "\r\nSubject:") != 1 || tc.pass != strings.Contains(unfolded, "smime=pass") {
				t.Errorf("BODY[] header (want smime=pass %v):\n%s", tc.pass, header)
			}
			if !strings.Contains(text, "The figures are in.") {
				t.Errorf("BODY[] text:\n%s", text)
			}
			if got := strings.Contains(text, "hp-legacy-display"); got != tc.legacy {
				t.Errorf("Legacy Display Element served: %v, want %v:\n%s", got, tc.legacy, text)
			}
		})
	}
}

// TestLabLAMPSSamples: each header protection sample of the LAMPS drafts
// (as notmuch keeps them, ../shared/interop/notmuch) is served through the
// proxy with its protected Subject, in ENVELOPE, HEADER.FIELDS and
// BODY[], without its legacy display part, and with a verdict field saying
// the header was protected.
func TestLabLAMPSSamples(t *testing.T) {
	dir := filepath.Join(testutil.InteropDir(t), "notmuch")
	e := newEnv(t, envOptions{roots: readCerts(t, filepath.Join(dir, "ca.crt"))})
	e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "lamps-bob",
		Cert: readCerts(t, filepath.Join(dir, "derived-pem", "bob.cert.pem"))[0], Key: readPKCS8(t, filepath.Join(dir, "derived-pem", "bob.key.pem"))})
	samples := []struct{ file, subject, sig string }{
		{"smime-onepart-signed.eml", "The FooCorp contract", "smime=pass"},
		{"smime-multipart-signed.eml", "The FooCorp contract", "smime=pass"},
		{"smime-sign+enc.eml", "BarCorp contract signed, let's go!", "smime=pass"},
		{"smime-sign+enc+legacy-disp.eml", "BarCorp contract signed, let's go!", "smime=pass"},
		{"smime-enc+legacy-disp.eml", "BarCorp contract signed, let's go!", "smime=none"},
	}
	var msgs []string
	for _, s := range samples {
		b, err := os.ReadFile(filepath.Join(dir, s.file))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, string(b))
	}
	box := e.mailbox(t, "bob", msgs...)
	c := e.dialProxy(t, e.lab.User(t, "bob"))
	c.cmd("e EXAMINE "+box, "")
	for i, s := range samples {
		t.Run(s.file, func(t *testing.T) {
			resp := c.cmd(fmt.Sprintf("f%d UID FETCH %d (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[])", i, i+1), "")
			all := joined(resp)
			if !strings.Contains(all, quote(s.subject)) || strings.Contains(all, `"..."`) {
				t.Errorf("ENVELOPE without the protected Subject %q:\n%s", s.subject, all)
			}
			if got := literalOf(t, resp, "BODY[HEADER.FIELDS (SUBJECT)]"); got != "Subject: "+s.subject+"\r\n\r\n" {
				t.Errorf("BODY[HEADER.FIELDS (SUBJECT)] = %q", got)
			}
			header, text, _ := strings.Cut(literalOf(t, resp, "BODY[]"), "\r\n\r\n")
			unfolded := strings.ReplaceAll(header+"\r\n", "\r\n ", " ")
			for _, want := range []string{s.sig, "header protected, protected-headers=v1", "\r\nSubject: " + s.subject + "\r\n"} {
				if !strings.Contains(unfolded, want) {
					t.Errorf("BODY[] header lacks %q:\n%s", want, header)
				}
			}
			if strings.Contains(text, "Subject: BarCorp") {
				t.Errorf("BODY[] text shows the legacy display part:\n%s", text)
			}
		})
	}
}

// protected is msg signed by id (opaque, so that the reader gets the
// payload unwrapped) and encrypted to recipients, its header protected.
func protected(t testing.TB, id *testpki.Identity, msg string, to ...*testpki.Identity) string {
	t.Helper()
	signed, err := smime.Sign([]byte(msg), &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain},
		&smime.SignOptions{Opaque: true, HeaderProtection: smime.ProtectCipher})
	if err != nil {
		t.Fatal(err)
	}
	return encrypted(t, string(signed), to...)
}

// readPKCS8 reads a PEM PKCS #8 private key.
func readPKCS8(t testing.TB, file string) any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return k
}
