package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/internal/smtpload"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/policy"
	"smimeproxy/proxy"
)

// The proxy in front of the lab's real Postfix: what arrives in the
// Maildirs is what openssl reads, and real clients submit through it.

// labIDs are S/MIME identities from the test CA for the lab's users.
type labIDs struct{ alice, bob, carol *testpki.Identity }

var (
	labOnce sync.Once
	labVal  *labIDs
)

func labIdentities(t testing.TB, p *pki) *labIDs {
	labOnce.Do(func() {
		labVal = &labIDs{
			alice: p.ca.Issue(t, "alice@example.test", nil),
			bob:   p.ca.Issue(t, "bob@example.test", nil),
			carol: p.ca.Issue(t, "carol@example.org", nil),
		}
	})
	return labVal
}

// labEnv is the proxy in front of the lab's Postfix, with alice's key,
// a STARTTLS listener (certificate from the test CA) and a plain loopback
// one.
type labEnv struct {
	lab   *lab.Lab
	pki   *pki
	ids   *labIDs
	proxy *Proxy
	alice lab.User
}

func newSMTPLabEnv(t testing.TB, certs ...*x509.Certificate) *labEnv {
	t.Helper()
	return newSMTPLabEnvConfig(t, nil, certs...)
}

// newSMTPLabEnvConfig is newSMTPLabEnv with edit applied to the
// configuration before the proxy is made.
func newSMTPLabEnvConfig(t testing.TB, edit func(*config.Config), certs ...*x509.Certificate) *labEnv {
	t.Helper()
	l := lab.Start(t)
	p := testPKI(t)
	ids := labIdentities(t, p)
	c := config.Default()
	c.ServerName = "proxy.test"
	c.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSStartTLS}, {Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	c.SMTP.Upstream = config.Upstream{Addr: l.Submission, TLS: config.TLSStartTLS, CAFile: l.CA}
	// The default timeouts: with 50 sessions at once on a busy machine,
	// Postfix may take seconds to greet.
	if edit != nil {
		edit(c)
	}
	cert, err := proxy.LoadCertificate(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(proxy.Options{Config: c, Policy: policy.FromConfig(c.Policy), Keys: newKeystore(t, ids.alice),
		Certs: certCache(t, p, certs...), Cert: cert, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &labEnv{lab: l, pki: p, ids: ids, proxy: s, alice: l.User(t, "alice")}
}

// submit sends msg as alice through the proxy's STARTTLS listener.
func (e *labEnv) submit(t testing.TB, to []string, msg string) {
	t.Helper()
	c, err := gosmtp.DialStartTLS(e.proxy.Addrs()[0].String(), &tls.Config{RootCAs: e.pki.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", e.alice.Address, e.alice.Password)); err != nil {
		t.Fatalf("AUTH through the proxy: %v", err)
	}
	if err := c.SendMail(e.alice.Address, to, strings.NewReader(msg)); err != nil {
		t.Fatalf("sending through the proxy: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func labMessage(marker, to, body string, extra ...string) string {
	var b strings.Builder
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "From: Alice <alice@example.test>\r\nTo: %s\r\nSubject: lab %s\r\nMessage-ID: <%s@example.test>\r\n", to, marker, marker)
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n%s", time.Now().Format(time.RFC1123Z), body)
	return b.String()
}

func marker(t testing.TB) string {
	return fmt.Sprintf("smtp-%s-%d", strings.ReplaceAll(filepath.Base(t.Name()), "/", "-"), time.Now().UnixNano())
}

func TestLabSigned(t *testing.T) {
	e := newSMTPLabEnv(t)
	marker := marker(t)
	e.submit(t, []string{"bob@example.test"}, labMessage(marker, "bob@example.test", "Hi Bob, signed and sealed. Grüße!\r\n"))
	got := e.lab.WaitMessage(t, "bob@example.test", marker)
	if ct := contentType(got); !strings.HasPrefix(ct, "multipart/signed") {
		t.Fatalf("arrived as %q, want multipart/signed", ct)
	}
	if content := openSSLVerify(t, got, e.pki.caFile); !bytes.Contains(content, []byte("signed and sealed")) {
		t.Errorf("openssl verified %q, want the body", content)
	}
}

func TestLabEncrypted(t *testing.T) {
	p := testPKI(t)
	ids := labIdentities(t, p)
	e := newSMTPLabEnv(t, ids.bob.Cert)
	marker := marker(t)
	body := "Hi Bob, for your eyes only.\r\n"
	e.submit(t, []string{"bob@example.test"}, labMessage(marker, "bob@example.test", body))
	got := e.lab.WaitMessage(t, "bob@example.test", marker)
	if ct := contentType(got); !strings.Contains(ct, "enveloped-data") {
		t.Fatalf("arrived as %q, want enveloped-data", ct)
	}
	if bytes.Contains(got, []byte("for your eyes only")) {
		t.Fatal("the body arrived in the clear")
	}
	for _, reader := range []*testpki.Identity{ids.bob, ids.alice} {
		inner := openSSLDecrypt(t, got, reader)
		if content := openSSLVerify(t, inner, p.caFile); !bytes.Contains(content, []byte(body)) {
			t.Errorf("decrypted with %s's key: %q, want the original body", reader.Cert.EmailAddresses[0], content)
		}
	}
}

// TestSMTPLabBcc: with Postfix, the Bcc copy goes in a transaction of its
// own after RSET on the same logged-in connection.
func TestLabBcc(t *testing.T) {
	p := testPKI(t)
	ids := labIdentities(t, p)
	e := newSMTPLabEnv(t, ids.bob.Cert, ids.carol.Cert)
	marker := marker(t)
	e.submit(t, []string{"bob@example.test", "carol@example.org"}, labMessage(marker, "bob@example.test", "Hi Bob, and a secret reader.\r\n"))
	for _, who := range []struct {
		addr string
		id   *testpki.Identity
	}{{"bob@example.test", ids.bob}, {"carol@example.org", ids.carol}} {
		got := e.lab.WaitMessage(t, who.addr, marker)
		if who.id == ids.bob && bytes.Contains(got, []byte("carol")) {
			t.Error("bob's copy names carol")
		}
		if content := openSSLVerify(t, openSSLDecrypt(t, got, who.id), p.caFile); !bytes.Contains(content, []byte("a secret reader")) {
			t.Errorf("%s read %q", who.addr, content)
		}
	}
}

// TestSMTPLabReplies: Postfix's refusals reach the client verbatim.
func TestLabReplies(t *testing.T) {
	e := newSMTPLabEnv(t)
	c := dialTest(t, e.proxy.Addrs()[1].String())
	c.cmd("EHLO client.test", "250 *")
	c.cmd("AUTH PLAIN "+plain(e.alice.Address, "wrong password"), "535 5.7.8 Error: authentication failed:*")
	c.cmd("AUTH PLAIN "+plain(e.alice.Address, e.alice.Password), "235 *")
	c.cmd("MAIL FROM:<bob@example.test>", "250 *")
	c.cmd("RCPT TO:<carol@example.org>", "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user *")
	c.cmd("RSET", "250 *")
	c.cmd("MAIL FROM:<alice@example.test>", "250 *")
	c.cmd("RCPT TO:<someone@elsewhere.invalid>", "550 5.7.1 *")
	c.cmd("RCPT TO:<bob@example.test>", "250 *")
	c.cmd("DATA", "354 *")
	// To BDAT, which the proxy sends when Postfix offers CHUNKING, Postfix
	// says "Ok: <n> bytes queued as <id>".
	if got := c.data(labMessage(marker(t), "bob@example.test", "Hi\r\n")); !match("250 2.0.0 Ok: *queued as *", got) {
		t.Errorf("DATA reply %q, want Postfix's", got)
	}
	c.cmd("QUIT", "221 *")
}

// TestSMTPLabClients: swaks and curl submit through the proxy with AUTH
// PLAIN over STARTTLS, verifying its certificate.
func TestLabClients(t *testing.T) {
	e := newSMTPLabEnv(t)
	addr := e.proxy.Addrs()[0].String()
	host, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	t.Run("swaks", func(t *testing.T) {
		swaks := testutil.NeedTool(t, "swaks")
		marker := marker(t)
		out, err := exec.Command(swaks, "--server", host, "--port", port, "--tls", "--tls-verify", "--tls-ca-path", e.pki.caFile,
			"--auth", "PLAIN", "--auth-user", e.alice.Address, "--auth-password", e.alice.Password,
			"--from", e.alice.Address, "--to", "bob@example.test", "--h-From", "<alice@example.test>",
			"--h-Subject", "swaks "+marker, "--body", "Hi Bob, from swaks.").CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		got := e.lab.WaitMessage(t, "bob@example.test", marker)
		if content := openSSLVerify(t, got, e.pki.caFile); !bytes.Contains(content, []byte("from swaks")) {
			t.Errorf("openssl verified %q", content)
		}
	})
	t.Run("curl", func(t *testing.T) {
		curl := testutil.NeedTool(t, "curl")
		marker := marker(t)
		msg := filepath.Join(dir, "msg.eml")
		if err := os.WriteFile(msg, []byte(labMessage(marker, "bob@example.test", "Hi Bob, from curl.\r\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(curl, "--silent", "--show-error", "--url", "smtp://"+addr, "--ssl-reqd", "--cacert", e.pki.caFile,
			"--user", e.alice.Address+":"+e.alice.Password, "--mail-from", e.alice.Address, "--mail-rcpt", "bob@example.test",
			"--upload-file", msg).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		got := e.lab.WaitMessage(t, "bob@example.test", marker)
		if content := openSSLVerify(t, got, e.pki.caFile); !bytes.Contains(content, []byte("from curl")) {
			t.Errorf("openssl verified %q", content)
		}
	})
}

// TestSMTPLabLoad: 50 clients send 20 messages each through the proxy to
// Postfix; each arrives exactly once, encrypted as policy asks, and no
// goroutine is left after Shutdown. The same load sent directly gives the
// ratio, in the log.
func TestLabLoad(t *testing.T) {
	const clients, each = 50, 20
	p := testPKI(t)
	ids := labIdentities(t, p)
	l := lab.Start(t)
	alice := l.User(t, "alice")
	before := baseline(t)
	e := newSMTPLabEnv(t, ids.bob.Cert)
	o := smtpload.Options{
		Addr: e.proxy.Addrs()[1].String(), TLS: "none", User: alice.Address, Password: alice.Password,
		From: alice.Address, To: []string{"bob@example.test"}, Messages: clients * each, Conns: clients, Size: 4096,
		Marker: marker(t), Timeout: 2 * time.Minute,
	}
	r, err := smtpload.Run(t.Context(), o)
	if err != nil || r.Failed > 0 || r.Sent != clients*each {
		t.Fatalf("through the proxy: %d sent, %d failed, %v; first errors %v", r.Sent, r.Failed, err, r.Errs)
	}
	t.Logf("through the proxy: %d messages on %d connections in %v: %.1f msgs/s", r.Sent, clients, r.Elapsed.Round(time.Millisecond), r.Rate())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.proxy.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	goroutines(t, before)

	ids2 := map[string]bool{}
	for i := range o.Messages {
		ids2[smtpload.MessageID(o.Marker, i)] = true
	}
	found := countDelivered(t, l.Maildir("bob@example.test"), o.Marker, len(ids2), 2*time.Minute)
	for id := range ids2 {
		if n := len(found[id]); n != 1 {
			t.Errorf("%s arrived %d times, want once", id, n)
		}
	}
	for id, files := range found {
		if !ids2[id] {
			t.Errorf("%s arrived, but was never sent", id)
		}
		for _, f := range files {
			if ct := contentType(f); !strings.Contains(ct, "enveloped-data") {
				t.Errorf("%s arrived as %q, want enveloped-data", id, ct)
				break
			}
		}
	}
	if t.Failed() {
		return
	}
	// One sample, opened with bob's key.
	for _, files := range found {
		if o := open(t, p, files[0], ids.bob); !o.Decrypted || len(o.Signatures) != 1 {
			t.Errorf("a sample: decrypted %v (%v), %d signatures", o.Decrypted, o.DecryptErr, len(o.Signatures))
		}
		break
	}

	direct := o
	direct.Addr, direct.TLS, direct.TLSConfig, direct.Marker = l.Submission, "starttls", l.TLSConfig(t), o.Marker+"-direct"
	direct.To = []string{"carol@example.org"}
	d, err := smtpload.Run(t.Context(), direct)
	if err != nil || d.Failed > 0 {
		t.Fatalf("directly: %d sent, %d failed, %v; first errors %v", d.Sent, d.Failed, err, d.Errs)
	}
	t.Logf("directly to Postfix: %d messages in %v: %.1f msgs/s; proxy/direct = %.2f", d.Sent, d.Elapsed.Round(time.Millisecond), d.Rate(), r.Rate()/d.Rate())
}

// countDelivered reads a Maildir until want messages whose Message-ID
// holds marker are there (and a little longer, for late duplicates), and
// returns each one's files by Message-ID.
func countDelivered(t testing.TB, dir, marker string, want int, wait time.Duration) map[string][][]byte {
	t.Helper()
	found := map[string][][]byte{}
	seen := map[string]bool{}
	deadline := time.Now().Add(wait)
	var settled time.Time
	for {
		for _, sub := range []string{"new", "cur"} {
			entries, err := os.ReadDir(filepath.Join(dir, sub))
			if errors.Is(err, os.ErrPermission) {
				testutil.Absent(t, "reading the lab's Maildirs needs root")
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			for _, ent := range entries {
				key, _, _ := strings.Cut(ent.Name(), ":")
				if seen[key] {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, sub, ent.Name()))
				if err != nil {
					continue // moved from new to cur meanwhile
				}
				seen[key] = true
				_, id, _ := strings.Cut(headerField(b, "Message-Id"), ":")
				if id = strings.Trim(strings.TrimSpace(id), "<>"); strings.Contains(id, marker+".") {
					found[id] = append(found[id], b)
				}
			}
		}
		switch {
		case len(found) >= want && settled.IsZero():
			settled = time.Now().Add(2 * time.Second)
		case !settled.IsZero() && time.Now().After(settled):
			return found
		case time.Now().After(deadline):
			t.Errorf("%d of %d messages arrived within %v", len(found), want, wait)
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
}
