package imap_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"smimeproxy/config"
	"smimeproxy/internal/testpeer"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

// labFixture is a message to store, and what the proxy's verdict field
// must then say.
type labFixture struct {
	name string
	msg  string
	want []string
}

// allItems are the content items asked of every opened message. BINARY.SIZE
// is checked against BINARY apart: Dovecot miscounts it for messages it
// stores with LF line ends (see package imapmsg).
const allItems = "RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] " +
	"BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (From Subject Content-Type Authentication-Results)] " +
	"BODY.PEEK[HEADER.FIELDS.NOT (Subject)] BODY.PEEK[]<10.100> BINARY.PEEK[1] PREVIEW"

// fetchItemsRE cuts "* n FETCH (UID u " off a FETCH answer.
var fetchItemsRE = regexp.MustCompile(`^\* \d+ FETCH \(UID \d+ `)

// TestLabConsistentWithDovecot: messages made by Thunderbird/NSS (the
// interop corpus), by openssl cms and gpgsm, and by the project, are stored
// in bob's mailbox on the real Dovecot. Through the proxy bob reads them
// opened, and every item of each answers as Dovecot itself answers for
// the opened message: the proxy's BODY[] is stored in a second mailbox,
// fetched from Dovecot directly, and the two answers compared.
func TestLabConsistentWithDovecot(t *testing.T) {
	p := testPKI(t)
	var interop string
	t.Run("interop corpus", func(t *testing.T) { interop = testutil.InteropDir(t) })
	var roots []*x509.Certificate
	roots = append(roots, p.ca.Root())
	if interop != "" {
		roots = append(roots, readCerts(t, filepath.Join(interop, "thunderbird", "smime", "TestCA.pem"))...)
	}
	e := newEnv(t, envOptions{roots: roots, configure: func(c *config.Config) {
		c.Policy.Users = map[string]config.UserRules{"bob@example.test": {Addresses: []string{"bob@example.com"}}}
	}})
	e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "bob", Cert: p.bob.Cert, Key: p.bob.Key})

	fixtures := []labFixture{
		{"project signed", signed(t, p.alice, plainMsg("project signed", "signed text")), []string{"smime=pass"}},
		{"project encrypted", encrypted(t, plainMsg("project encrypted", "secret text"), p.bob), []string{"encrypted with aes-256"}},
		{"project signed then encrypted", encrypted(t, signed(t, p.alice, multipartMsg("project both")), p.bob), []string{"smime=pass"}},
		{"not for bob", encrypted(t, plainMsg("not for bob", "x"), p.alice), []string{"not decrypted"}},
		{"project header protected", protected(t, p.alice, multipartMsg("project protected"), p.bob), []string{"smime=pass", "header protected, hp=cipher"}},
	}
	if interop != "" {
		b, err := os.ReadFile(filepath.Join(interop, "thunderbird", "smime", "Bob.p12"))
		if err != nil {
			t.Fatal(err)
		}
		// NSS writes BER, which the keystore's import reads.
		store, err := keystore.Create(filepath.Join(t.TempDir(), "keystore"), []byte("passphrase"),
			&keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, RecheckInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.ImportPKCS12(b, "nss"); err != nil {
			t.Fatalf("importing the interop Bob.p12: %v", err)
		}
		kps, err := store.DecryptionKeys("bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		for _, kp := range kps {
			e.keys.add("bob@example.com", kp)
		}
		want := map[string][]string{
			"alice.dsig.SHA256.multipart.eml":     {"smime=pass", "body.smime-identifier=alice@example.com"},
			"alice.dsig.SHA256.multipart.bad.eml": {"smime=fail"},
			"alice.dsig.SHA1.multipart.eml":       {"smime=policy"},
			"alice.sig.SHA256.opaque.env.eml":     {"smime=pass", "encrypted with aes-128-cbc to bob@example.com"},
			"alice.dsig.SHA512.multipart.env.eml": {"smime=pass", "encrypted with aes-128-cbc to bob@example.com"},
			"alice.sig.SHA384.opaque.eml":         {"smime=pass"},
		}
		files, _ := filepath.Glob(filepath.Join(interop, "thunderbird", "smime", "*.eml"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fixtures = append(fixtures, labFixture{filepath.Base(f), string(b), want[filepath.Base(f)]})
		}
	}
	fixtures = append(fixtures, peerMessages(t, p)...)

	var msgs []string
	for _, f := range fixtures {
		msgs = append(msgs, f.msg)
	}
	box := e.mailbox(t, "bob", msgs...)
	scratch := e.mailbox(t, "bob")
	bob := e.lab.User(t, "bob")
	c := e.dialProxy(t, bob)
	c.cmd("a EXAMINE "+box, "")
	direct := dialDirect(t, e.lab, bob)
	for i, f := range fixtures {
		got := joined(c.cmd(fmt.Sprintf("f%d UID FETCH %d (%s)", i, i+1, allItems), ""))
		body := literalOf(t, []string{got}, "BODY[]")
		field, _, _ := strings.Cut(body, "\r\n\r\n")
		field = strings.ReplaceAll(field, "\r\n ", " ")
		for _, w := range f.want {
			if !strings.Contains(field, w) {
				t.Errorf("%s: the verdict field lacks %q:\n%s", f.name, w, field)
			}
		}
		if strings.Contains(f.name, ".env") && strings.Contains(field, "not decrypted") {
			t.Errorf("%s: not decrypted:\n%s", f.name, field)
		}
		size := joined(c.cmd(fmt.Sprintf("s%d UID FETCH %d (BINARY.SIZE[1] BINARY.PEEK[1])", i, i+1), ""))
		if m := regexp.MustCompile(`BINARY\[1\] ~?\{(\d+)\}`).FindStringSubmatch(size); m != nil && !strings.Contains(size, "BINARY.SIZE[1] "+m[1]) {
			t.Errorf("%s: BINARY.SIZE[1] disagrees with BINARY[1]: %.200q", f.name, size)
		}
		direct.cmd(fmt.Sprintf("a%d APPEND %s %s", i, scratch, lit(body)), "")
		direct.cmd("x EXAMINE "+scratch, "")
		want := joined(direct.cmd(fmt.Sprintf("g%d UID FETCH %d (%s)", i, i+1, allItems), ""))
		got = strings.TrimSuffix(timings.ReplaceAllString(got, ""), fmt.Sprintf("f%d OK Fetch completed.\r\n", i))
		want = strings.TrimSuffix(timings.ReplaceAllString(want, ""), fmt.Sprintf("g%d OK Fetch completed.\r\n", i))
		got, want = fetchItemsRE.ReplaceAllString(got, ""), fetchItemsRE.ReplaceAllString(want, "")
		if got != want {
			t.Errorf("%s: through the proxy\n%s\nDovecot, for the same bytes\n%s\nfirst difference: %s", f.name, got, want, firstDiff(want, got))
		}
	}
	for _, addr := range []string{"alice@example.test"} {
		if _, err := e.certs.Lookup(t.Context(), addr); err != nil {
			t.Errorf("%s's certificate was not harvested: %v", addr, err)
		}
	}
}

func multipartMsg(subject string) string {
	return "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: " + subject +
		"\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n" +
		"--b1--\r\n"
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

// peerMessages are made by openssl cms and gpgsm: signed by alice, to bob.
func peerMessages(t *testing.T, p *pki) []labFixture {
	t.Helper()
	openssl := testutil.NeedTool(t, "openssl")
	dir := t.TempDir()
	aliceCert, aliceKey, _ := testpki.WriteIdentity(t, dir, "alice", p.alice)
	bobCert := testpki.WriteFile(t, dir, "bob.crt", testpki.CertPEM(p.bob.Cert))
	contentBytes := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nMade by a real peer.\r\n")
	content := testpki.WriteFile(t, dir, "content", contentBytes)
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out.Bytes()
	}
	headers := func(subject string) string {
		return "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: " + subject +
			"\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@example.test>\r\n"
	}
	detached := run("cms", "-sign", "-in", content, "-signer", aliceCert, "-inkey", aliceKey, "-crlfeol")
	opaque := run("cms", "-sign", "-nodetach", "-in", content, "-signer", aliceCert, "-inkey", aliceKey, "-crlfeol")
	signedFile := testpki.WriteFile(t, dir, "signed", detached)
	cbc := run("cms", "-encrypt", "-in", signedFile, "-aes-256-cbc", "-crlfeol", bobCert)
	gcm := run("cms", "-encrypt", "-in", content, "-aes-256-gcm", "-crlfeol", bobCert)
	out := []labFixture{
		{"openssl detached", headers("openssl detached") + string(detached), []string{"smime=pass"}},
		{"openssl opaque", headers("openssl opaque") + string(opaque), []string{"smime=pass"}},
		{"openssl signed then encrypted (AES-256-CBC)", headers("openssl cbc") + string(cbc), []string{"smime=pass", "encrypted with aes-256-cbc to bob@example.test"}},
		{"openssl encrypted (AES-256-GCM)", headers("openssl gcm") + string(gcm), []string{"smime=none", "encrypted with aes-256-gcm to bob@example.test"}},
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
	gpgEnc := headers("gpgsm encrypted") + "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n" + b64("enc.p7m")
	gpgSig := headers("gpgsm signed") + "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"gpgsm\"\r\n\r\n" +
		"--gpgsm\r\n" + string(contentBytes) + "\r\n--gpgsm\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64("sig.p7s") + "--gpgsm--\r\n"
	return append(out,
		labFixture{"gpgsm encrypted", gpgEnc, []string{"encrypted with aes-256-cbc to bob@example.test"}},
		labFixture{"gpgsm detached", gpgSig, []string{"smime=pass", "body.smime-identifier=alice@example.test"}},
	)
}
