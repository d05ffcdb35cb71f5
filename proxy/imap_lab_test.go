package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/internal/testpeer"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/smime"
)

// labEnv is the proxy in front of the lab's Dovecot, for bob@example.test,
// with a real keystore and certificate cache. bob may also read for
// Bob@example.com, the recipient of the interop corpus's messages: that is
// what an admin configures for a user with a second address.
type labEnv struct {
	lab      *lab.Lab
	bob      lab.User
	mailbox  string // a mailbox of bob's own, deleted at the end
	proxy    *proxy.IMAP
	plain    string // listener without TLS
	tls      string // listener with implicit TLS
	caPEM    []byte // of the proxy's certificate
	certs    *certcache.Cache
	keys     []smime.KeyPair // bob's, to compute what he should be served
	interop  string          // the interop corpus, or "" when absent
	pki      *imapPKI
	opts     proxy.Options
	upstream *imapclient.Client // straight to Dovecot, as bob
}

// newLabEnv sets the proxy up in front of the lab; interop is the interop
// corpus, whose Bob the keystore then holds too, or "".
func newLabEnv(t testing.TB, interop string, log *slog.Logger) *labEnv {
	t.Helper()
	l := lab.Start(t)
	e := &labEnv{lab: l, bob: l.User(t, "bob@example.test"), pki: imapTestPKI(t), interop: interop}
	var suffix [6]byte
	rand.Read(suffix[:])
	e.mailbox = "imapproxy-" + hex.EncodeToString(suffix[:])
	e.upstream = l.DialIMAP(t, e.bob)
	if err := e.upstream.Create(e.mailbox, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := imapclient.DialStartTLS(l.IMAP, &imapclient.Options{TLSConfig: l.TLSConfig(t)})
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer c.Close()
		if err := c.Login(e.bob.Address, e.bob.Password).Wait(); err == nil {
			c.Delete(e.mailbox).Wait()
			c.Logout().Wait()
		}
	})

	dir := t.TempDir()
	store, err := keystore.Create(filepath.Join(dir, "keystore"), []byte("keystore passphrase"),
		&keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	e.certs, err = certcache.Open(filepath.Join(dir, "certcache"), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.certs.Trust(e.pki.ca.Root()); err != nil {
		t.Fatal(err)
	}
	p12, err := pkcs12.Modern.Encode(e.pki.bob.Key, e.pki.bob.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatal(err)
	}
	e.keys = append(e.keys, smime.KeyPair{Cert: e.pki.bob.Cert, Key: e.pki.bob.Key})
	if e.interop != "" {
		b, err := os.ReadFile(filepath.Join(e.interop, "thunderbird", "smime", "Bob.p12"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = store.ImportPKCS12(b, "nss")
		if err != nil {
			t.Fatalf("importing the interop Bob.p12: %v", err)
		}
		kps, err := store.DecryptionKeys("bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		for _, kp := range kps {
			e.keys = append(e.keys, smime.KeyPair{Cert: kp.Cert, Key: kp.Key})
		}
		for _, root := range readCerts(t, filepath.Join(e.interop, "thunderbird", "smime", "TestCA.pem")) {
			if err := e.certs.Trust(root); err != nil {
				t.Fatal(err)
			}
		}
	}

	cert, caPEM := imapTLSCert(t)
	e.caPEM = caPEM
	cfg := config.Default()
	cfg.ServerName = "proxy.example.test"
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}, {Addr: "127.0.0.1:0", TLS: config.TLSImplicit}}
	cfg.IMAP.Upstream = config.Upstream{Addr: l.IMAP, TLS: config.TLSStartTLS, CAFile: l.CA}
	cfg.Policy.Users = map[string]config.UserRules{e.bob.Address: {Addresses: []string{"bob@example.com"}}}
	e.opts = proxy.Options{Config: cfg, Policy: policy.FromConfig(cfg.Policy), Keys: store, Certs: e.certs, Cert: cert,
		Logger: log, Metrics: proxy.NewMetrics(nil)}
	e.proxy, err = proxy.NewIMAP(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.proxy.Shutdown(ctx)
	})
	e.plain, e.tls = e.proxy.Addrs()[0].String(), e.proxy.Addrs()[1].String()
	return e
}

// interopDir is the interop corpus, or "" when it is absent.
func interopDir(t *testing.T) (dir string) {
	t.Run("interop corpus", func(t *testing.T) { dir = testutil.InteropDir(t) })
	return dir
}

func readCerts(t testing.TB, file string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// appendAll stores the messages in the test mailbox, over one connection.
func (e *labEnv) appendAll(t testing.TB, msgs [][]byte) []imap.UID {
	t.Helper()
	var uids []imap.UID
	for _, m := range msgs {
		cmd := e.upstream.Append(e.mailbox, int64(len(m)), nil)
		cmd.Write(m)
		cmd.Close()
		data, err := cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, data.UID)
	}
	return uids
}

// direct is what Dovecot itself serves for each message.
func (e *labEnv) direct(t *testing.T, uids []imap.UID) map[imap.UID][]byte {
	t.Helper()
	if _, err := e.upstream.Select(e.mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	whole := &imap.FetchItemBodySection{Peek: true}
	msgs, err := e.upstream.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	out := map[imap.UID][]byte{}
	for _, m := range msgs {
		out[m.UID] = m.FindBodySection(whole)
	}
	return out
}

// expected is what bob should be served for raw, without the field the
// proxy adds.
func (e *labEnv) expected(t *testing.T, raw []byte) []byte {
	t.Helper()
	o, err := smime.Open(raw, &smime.OpenOptions{Keys: e.keys, Verify: smime.VerifyOptions{Roots: e.certs.Roots(), Intermediates: e.certs.Intermediates()}})
	if err != nil {
		t.Fatal(err)
	}
	return o.Message
}

// checkItems fetches every item of one message through the proxy and
// checks them against the served message; it returns the field and the
// served message.
func checkItems(t *testing.T, c *imapclient.Client, uid imap.UID) (string, []byte) {
	t.Helper()
	whole := &imap.FetchItemBodySection{Peek: true}
	sections := []*imap.FetchItemBodySection{
		whole,
		{Specifier: imap.PartSpecifierHeader, Peek: true},
		{Specifier: imap.PartSpecifierText, Peek: true},
		{Part: []int{1}, Peek: true},
		{Part: []int{1}, Specifier: imap.PartSpecifierMIME, Peek: true},
		{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"From", "Authentication-Results"}, Peek: true},
		{Partial: &imap.SectionPartial{Offset: 10, Size: 100}, Peek: true},
	}
	got := fetchOne(t, c, uid, &imap.FetchOptions{
		UID: true, RFC822Size: true, Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: sections, BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{1}}},
	})
	served := got.FindBodySection(whole)
	if got.RFC822Size != int64(len(served)) {
		t.Errorf("UID %d: RFC822.SIZE %d, BODY[] %d bytes", uid, got.RFC822Size, len(served))
	}
	for _, sec := range sections[1:] {
		if b, want := got.FindBodySection(sec), imapserver.ExtractBodySection(bytes.NewReader(served), sec); !bytes.Equal(b, want) {
			t.Errorf("UID %d: section %+v = %q, want %q", uid, sec, b, want)
		}
	}
	if h, x := got.FindBodySection(sections[1]), got.FindBodySection(sections[2]); !bytes.Equal(append(append([]byte{}, h...), x...), served) {
		t.Errorf("UID %d: BODY[HEADER] + BODY[TEXT] != BODY[]", uid)
	}
	if n, _ := got.FindBinarySectionSize([]int{1}); n != imapserver.ExtractBinarySectionSize(bytes.NewReader(served), &imap.FetchItemBinarySectionSize{Part: []int{1}}) {
		t.Errorf("UID %d: BINARY.SIZE[1] = %d", uid, n)
	}
	if g, w := describe(got.BodyStructure, true), describe(imapserver.ExtractBodyStructure(bytes.NewReader(served)), true); g != w {
		t.Errorf("UID %d: BODYSTRUCTURE %s, want %s", uid, g, w)
	}
	if h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(served))); err == nil {
		if want := imapserver.ExtractEnvelope(h); got.Envelope == nil || got.Envelope.Subject != want.Subject || got.Envelope.MessageID != want.MessageID {
			t.Errorf("UID %d: ENVELOPE %+v, want %+v", uid, got.Envelope, want)
		}
	}
	field, rest := splitField(t, served)
	return strings.ReplaceAll(field, "\r\n ", " "), rest
}

func (e *labEnv) client(t *testing.T) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(e.plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(e.bob.Address, e.bob.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select(e.mailbox, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIMAPLabInterop: messages made by Thunderbird/NSS and OpenSSL (the
// interop corpus), and by openssl cms and gpgsm here, are stored in bob's
// mailbox on the real Dovecot; through the proxy bob reads them decrypted
// and verified, every item consistent, and the signers' certificates are
// harvested.
func TestIMAPLabInterop(t *testing.T) {
	e := newLabEnv(t, interopDir(t), imapLogger(t))
	var fixtures []labFixture
	if e.interop != "" {
		files, _ := filepath.Glob(filepath.Join(e.interop, "thunderbird", "smime", "*.eml"))
		want := map[string][]string{
			"alice.dsig.SHA256.multipart.eml":     {"smime=pass", "body.smime-identifier=alice@example.com"},
			"alice.dsig.SHA256.multipart.bad.eml": {"smime=fail"},
			"alice.dsig.SHA1.multipart.eml":       {"smime=policy"},
			"alice.sig.SHA256.opaque.env.eml":     {"smime=pass", "encrypted with aes-128-cbc to bob@example.com"},
			"alice.dsig.SHA512.multipart.env.eml": {"smime=pass", "encrypted with aes-128-cbc to bob@example.com"},
			"alice.sig.SHA384.opaque.eml":         {"smime=pass"},
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(f)
			fixtures = append(fixtures, labFixture{name, b, want[name]})
		}
		if len(fixtures) < 50 {
			t.Fatalf("only %d interop messages", len(fixtures))
		}
	}
	fixtures = append(fixtures, peerMessages(t, e.pki)...)
	var msgs [][]byte
	for _, f := range fixtures {
		msgs = append(msgs, f.msg)
	}
	uids := e.appendAll(t, msgs)
	direct := e.direct(t, uids)
	c := e.client(t)
	for i, f := range fixtures {
		field, rest := checkItems(t, c, uids[i])
		if want := e.expected(t, direct[uids[i]]); !bytes.Equal(rest, want) {
			t.Errorf("%s: served\n%.400s\nwant\n%.400s", f.name, rest, want)
		}
		for _, w := range f.want {
			if !strings.Contains(field, w) {
				t.Errorf("%s: field %q lacks %q", f.name, field, w)
			}
		}
		if strings.Contains(f.name, ".env") && strings.Contains(field, "not decrypted") {
			t.Errorf("%s: not decrypted: %q", f.name, field)
		}
	}
	ctx := context.Background()
	harvested := []string{"alice@example.test"}
	if e.interop != "" {
		harvested = append(harvested, "alice@example.com")
	}
	for _, addr := range harvested {
		if _, err := e.certs.Lookup(ctx, addr); err != nil {
			t.Errorf("%s's certificate was not harvested: %v", addr, err)
		}
	}
}

// labFixture is a message to store, and what the field must then say.
type labFixture struct {
	name string
	msg  []byte
	want []string
}

// peerMessages are made by openssl cms and gpgsm: signed by alice, to bob.
func peerMessages(t *testing.T, p *imapPKI) []labFixture {
	t.Helper()
	openssl := testutil.NeedTool(t, "openssl")
	dir := t.TempDir()
	aliceCert, aliceKey, _ := testpki.WriteIdentity(t, dir, "alice", p.alice)
	bobCert := testpki.WriteFile(t, dir, "bob.crt", testpki.CertPEM(p.bob.Cert))
	contentBytes := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nMade by a real peer.\r\n")
	content := testpki.WriteFile(t, dir, "content", contentBytes)
	try := func(bin string, env []string, stdin []byte, args ...string) ([]byte, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.Bytes())
		}
		return out.Bytes(), nil
	}
	run := func(bin string, env []string, stdin []byte, args ...string) []byte {
		t.Helper()
		out, err := try(bin, env, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	headers := func(subject string) []byte {
		return []byte("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: " + subject +
			"\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@example.test>\r\n")
	}
	detached := run(openssl, nil, nil, "cms", "-sign", "-in", content, "-signer", aliceCert, "-inkey", aliceKey, "-crlfeol")
	opaque := run(openssl, nil, nil, "cms", "-sign", "-nodetach", "-in", content, "-signer", aliceCert, "-inkey", aliceKey, "-crlfeol")
	signedFile := testpki.WriteFile(t, dir, "signed", detached)
	cbc := run(openssl, nil, nil, "cms", "-encrypt", "-in", signedFile, "-aes-256-cbc", "-crlfeol", bobCert)
	gcm := run(openssl, nil, nil, "cms", "-encrypt", "-in", content, "-aes-256-gcm", "-crlfeol", bobCert)

	out := []labFixture{
		{"openssl detached", append(headers("openssl detached"), detached...), []string{"smime=pass"}},
		{"openssl opaque", append(headers("openssl opaque"), opaque...), []string{"smime=pass"}},
		{"openssl signed then encrypted (AES-256-CBC)", append(headers("openssl cbc"), cbc...), []string{"smime=pass", "encrypted with aes-256-cbc to bob@example.test"}},
		{"openssl encrypted (AES-256-GCM)", append(headers("openssl gcm"), gcm...), []string{"smime=none", "encrypted with aes-256-gcm to bob@example.test"}},
	}

	// gpgsm, in a GnuPG home of its own that trusts the test CA.
	g := testpeer.NewGpgsm(t, p.ca.Root())
	g.ImportCert(t, "bob", p.bob.Cert)
	g.ImportIdentity(t, "alice", p.alice)
	g.Write(t, "content", contentBytes)
	g.Run(t, nil, "--batch", "--cipher-algo", "AES256", "-r", "bob@example.test", "--output", "enc.p7m", "--encrypt", "content")
	g.WithPassphrase(t, "-u", "alice@example.test", "--detach-sign", "--output", "sig.p7s", "content")
	b64 := func(file string) string {
		s := base64.StdEncoding.EncodeToString(g.Read(t, file))
		var lines []string
		for len(s) > 76 {
			lines, s = append(lines, s[:76]), s[76:]
		}
		return strings.Join(append(lines, s), "\r\n") + "\r\n"
	}
	gpgEnc := append(headers("gpgsm encrypted"), []byte("MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"+
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n"+b64("enc.p7m"))...)
	gpgSig := append(headers("gpgsm signed"), []byte("MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"gpgsm\"\r\n\r\n"+
		"--gpgsm\r\n"+string(contentBytes)+"\r\n--gpgsm\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
		b64("sig.p7s")+"--gpgsm--\r\n")...)
	out = append(out,
		labFixture{"gpgsm encrypted", gpgEnc, []string{"encrypted with aes-256-cbc to bob@example.test"}},
		labFixture{"gpgsm detached", gpgSig, []string{"smime=pass", "body.smime-identifier=alice@example.test"}},
	)
	return out
}

// TestIMAPLabSeen: against Dovecot, BODY[] sets \Seen through the proxy
// for an encrypted message as for a plain one, BODY.PEEK[] does not, and an
// EXAMINEd mailbox stays as it was.
func TestIMAPLabSeen(t *testing.T) {
	e := newLabEnv(t, "", imapLogger(t))
	uids := e.appendAll(t, [][]byte{
		mailMessage("alice@example.test", "bob@example.test", "plain seen", "text"),
		mustEncrypt(t, mailMessage("alice@example.test", "bob@example.test", "enc seen", "secret"), e.pki.bob.Cert),
	})
	flags := func(uid imap.UID) []imap.Flag {
		msgs, err := e.upstream.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("FETCH FLAGS: %v", err)
		}
		return msgs[0].Flags
	}
	if _, err := e.upstream.Select(e.mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	c, _ := dialIMAPRaw(t, e.plain)
	c.expectOK(fmt.Sprintf("LOGIN %s %s", e.bob.Address, e.bob.Password))
	c.expectOK("EXAMINE " + e.mailbox)
	for _, uid := range uids {
		c.expectOK(fmt.Sprintf("UID FETCH %d BODY[]", uid))
		c.expectOK(fmt.Sprintf("UID FETCH %d BODY.PEEK[]", uid))
		if hasSeen(flags(uid)) {
			t.Errorf("UID %d: \\Seen set in an EXAMINEd mailbox or by BODY.PEEK[]", uid)
		}
	}
	c.expectOK("SELECT " + e.mailbox)
	for _, uid := range uids {
		c.expectOK(fmt.Sprintf("UID FETCH %d BODY.PEEK[]", uid))
		if hasSeen(flags(uid)) {
			t.Errorf("UID %d: BODY.PEEK[] set \\Seen", uid)
		}
		untagged := c.expectOK(fmt.Sprintf("UID FETCH %d BODY[]", uid))
		if !containsMatch(untagged, `FLAGS \([^)]*\\Seen`) {
			t.Errorf("UID %d: BODY[] did not tell the client of \\Seen: %.300q", uid, untagged)
		}
		if !hasSeen(flags(uid)) {
			t.Errorf("UID %d: BODY[] did not set \\Seen", uid)
		}
	}
}

// TestIMAPLabCurl: curl reads a decrypted message through the proxy's
// implicit TLS listener.
func TestIMAPLabCurl(t *testing.T) {
	curl := testutil.NeedTool(t, "curl")
	e := newLabEnv(t, "", imapLogger(t))
	msg := mustEncrypt(t, mailMessage("alice@example.test", "bob@example.test", "for curl", "curl reads this"), e.pki.bob.Cert)
	uid := e.appendAll(t, [][]byte{msg})[0]
	ca := testpki.WriteFile(t, t.TempDir(), "ca.pem", e.caPEM)
	url := fmt.Sprintf("imaps://127.0.0.1:%s/%s;UID=%d", portOf(e.tls), e.mailbox, uid)
	cmd := exec.Command(curl, "--silent", "--show-error", "--cacert", ca, "--user", e.bob.Address+":"+e.bob.Password, url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, stderr.Bytes())
	}
	_, rest := splitField(t, out)
	if want := e.expected(t, e.direct(t, []imap.UID{uid})[uid]); !bytes.Equal(rest, want) {
		t.Errorf("curl got\n%s\nwant\n%s", out, want)
	}
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// TestIMAPLabMbsync: mbsync (isync) copies bob's test mailbox through the
// proxy into a local Maildir; every message there is the decrypted one.
func TestIMAPLabMbsync(t *testing.T) {
	mbsync := testutil.NeedTool(t, "mbsync")
	e := newLabEnv(t, "", imapLogger(t))
	p := e.pki
	signed, err := smime.Sign(mailMessage("alice@example.test", "bob@example.test", "mbsync signed", "signed text"), p.identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][]byte{
		mailMessage("alice@example.test", "bob@example.test", "mbsync plain", "plain text"),
		mustEncrypt(t, mailMessage("alice@example.test", "bob@example.test", "mbsync secret", "secret text"), p.bob.Cert),
		mustEncrypt(t, signed, p.bob.Cert),
		signed,
	}
	uids := e.appendAll(t, msgs)
	direct := e.direct(t, uids)
	var want [][]byte
	c := e.client(t)
	for i, uid := range uids {
		whole := &imap.FetchItemBodySection{Peek: true}
		served := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).FindBodySection(whole)
		if i == 0 {
			if !bytes.Equal(served, direct[uid]) {
				t.Errorf("plain message changed")
			}
		} else if _, rest := splitField(t, served); !bytes.Equal(rest, e.expected(t, direct[uid])) {
			t.Errorf("message %d not opened as expected", i)
		}
		want = append(want, served)
	}

	dir := t.TempDir()
	ca := testpki.WriteFile(t, dir, "ca.pem", e.caPEM)
	rc := fmt.Sprintf(`IMAPAccount proxy
Host 127.0.0.1
Port %s
User %s
Pass %s
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account proxy

MaildirStore local
Path %s/mail/
Inbox %s/mail/INBOX

Channel test
Far :remote:%s
Near :local:%s
Sync Pull
Create Near
`, portOf(e.tls), e.bob.Address, e.bob.Password, ca, dir, dir, e.mailbox, e.mailbox)
	rcFile := testpki.WriteFile(t, dir, "mbsyncrc", []byte(rc))
	if err := os.Mkdir(filepath.Join(dir, "mail"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mbsync, "-c", rcFile, "test")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	var got [][]byte
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(dir, "mail", e.mailbox, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("mbsync copied %d messages, want %d", len(got), len(want))
	}
	// mbsync stores lines with the system's LF, and adds an X-TUID field
	// of its own to find the messages it copied.
	norm := func(b []byte) string {
		var out []string
		for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
			if !strings.HasPrefix(l, "X-TUID: ") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	var gotN, wantN []string
	for i := range got {
		gotN, wantN = append(gotN, norm(got[i])), append(wantN, norm(want[i]))
	}
	slices.Sort(gotN)
	slices.Sort(wantN)
	for i := range gotN {
		if gotN[i] != wantN[i] {
			t.Errorf("Maildir message\n%.600s\nwant\n%.600s", gotN[i], wantN[i])
		}
	}
}
