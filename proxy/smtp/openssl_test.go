package smtp

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"mime"
	"os/exec"
	"strings"
	"testing"

	"smimeproxy/internal/testpeer"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/policy"
)

// openssl and gpgsm read what the proxy sends: its signatures verify, and
// each recipient (the sender too) decrypts.

// openSSL runs openssl with args, msg on stdin, and returns stdout.
func openSSL(t testing.TB, msg []byte, args ...string) []byte {
	t.Helper()
	bin := testutil.NeedTool(t, "openssl")
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(msg), &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes()
}

// openSSLVerify has openssl verify msg against caFile and returns the
// signed content.
func openSSLVerify(t testing.TB, msg []byte, caFile string) []byte {
	t.Helper()
	return openSSL(t, msg, "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign")
}

// openSSLDecrypt has openssl decrypt msg with id's key.
func openSSLDecrypt(t testing.TB, msg []byte, id *testpki.Identity) []byte {
	t.Helper()
	dir := t.TempDir()
	cert, key, _ := testpki.WriteIdentity(t, dir, "id", id)
	return openSSL(t, msg, "cms", "-decrypt", "-recip", cert, "-inkey", key)
}

// TestOpenSSLReadsWhatItSends: openssl verifies and decrypts what the proxy
// sends, header-protected (encrypted by default, signed-only when asked)
// or not, and finds the real Subject in the content.
func TestOpenSSLReadsWhatItSends(t *testing.T) {
	p := testPKI(t)
	for _, tc := range sendCases(p) {
		t.Run(tc.name, func(t *testing.T) {
			sent := tc.send(t)
			if got := headerValue(sent, "Subject"); got != tc.outerSubject {
				t.Errorf("outer Subject %q, want %q", got, tc.outerSubject)
			}
			readers := []*testpki.Identity{nil}
			if tc.encrypted {
				readers = []*testpki.Identity{p.bob, p.alice}
			}
			for _, reader := range readers {
				content := sent
				if reader != nil {
					content = openSSLDecrypt(t, sent, reader)
				}
				if tc.signed {
					content = openSSLVerify(t, content, p.caFile)
				}
				checkContent(t, content, tc.protected)
			}
		})
	}
}

// TestGpgsmReadsWhatItSends: so does gpgsm.
func TestGpgsmReadsWhatItSends(t *testing.T) {
	p := testPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	// gpgsm exits 2 after a recipient info it has no key for, even when a
	// later one decrypts: it holds the keys of both, bob and alice (to
	// whom the proxy encrypts too).
	g.ImportIdentity(t, "bob", p.bob)
	g.ImportIdentity(t, "alice", p.alice)
	for _, tc := range sendCases(p) {
		t.Run(tc.name, func(t *testing.T) {
			content := tc.send(t)
			if tc.encrypted {
				g.Write(t, "enc.p7m", base64Body(t, content))
				content = g.WithPassphrase(t, "--decrypt", "enc.p7m")
			}
			if tc.signed {
				signed, sig := detachedParts(t, content)
				g.Write(t, "content", signed)
				g.Write(t, "sig.p7s", sig)
				out := string(g.Run(t, nil, "--batch", "--status-fd", "1", "--verify", "sig.p7s", "content"))
				if !strings.Contains(out, "[GNUPG:] GOODSIG") || !strings.Contains(out, "[GNUPG:] TRUST_FULLY") {
					t.Fatalf("gpgsm --verify:\n%s", out)
				}
				content = signed
			}
			checkContent(t, content, tc.protected)
		})
	}
}

// sendCase is a message sent through the proxy to bob, and what it must be.
type sendCase struct {
	name              string
	signed, encrypted bool
	protected         string // the hp parameter inside; "" none
	outerSubject      string
	send              func(t *testing.T) []byte // what reached the upstream
}

const sendBody = "Hi Bob,\r\nthe figures are in.\r\n"

func sendCases(p *pki) []sendCase {
	send := func(o envOptions) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			e := newEnv(t, o)
			e.login().send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Figures", sendBody))
			txns := e.up.transactions()
			if len(txns) != 1 {
				t.Fatalf("upstream got %d messages", len(txns))
			}
			return txns[0].data
		}
	}
	bob := []*x509.Certificate{p.bob.Cert}
	return []sendCase{
		{"signed", true, false, "", "Figures", send(envOptions{})},
		{"signed, protect_headers always", true, false, "clear", "Figures",
			send(envOptions{policy: func(pol *policy.Policy) { pol.Default.ProtectHeaders = policy.ProtectAlways }})},
		{"signed and encrypted", true, true, "cipher", "[...]", send(envOptions{certs: bob})},
		{"signed and encrypted, protect_headers never", true, true, "", "Figures",
			send(envOptions{certs: bob, policy: func(pol *policy.Policy) { pol.Default.ProtectHeaders = policy.ProtectNever }})},
		{"encrypted", false, true, "cipher", "[...]",
			send(envOptions{certs: bob, policy: func(pol *policy.Policy) { pol.Default.Sign = policy.SignNever }})},
	}
}

// checkContent checks what a peer decrypted or verified: the body, and the
// protected header when hp is not empty.
func checkContent(t *testing.T, content []byte, hp string) {
	t.Helper()
	want := []string{"the figures are in."}
	switch hp {
	case "clear":
		want = append(want, "hp=\"clear\"", "Subject: Figures\r\n", "From: Alice <alice@example.com>\r\n")
	case "cipher":
		want = append(want, "hp=\"cipher\"", "Subject: Figures\r\n", "HP-Outer: Subject: [...]\r\n", "\r\n\r\nSubject: Figures\r\n\r\nHi Bob,")
	}
	for _, w := range want {
		if !bytes.Contains(content, []byte(w)) {
			t.Errorf("the peer got content without %q:\n%s", w, content)
		}
	}
	if hp == "" && bytes.Contains(content, []byte("hp=")) {
		t.Errorf("the peer got header protection, want none:\n%s", content)
	}
}

// headerValue is the unfolded value of msg's first field called name.
func headerValue(msg []byte, name string) string {
	_, v, _ := strings.Cut(headerField(msg, name), ":")
	return strings.Join(strings.Fields(v), " ")
}

// base64Body is the decoded body of a single-part message.
func base64Body(t *testing.T, msg []byte) []byte {
	t.Helper()
	_, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no body in %q", msg)
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// detachedParts are the signed part and the signature of a multipart/signed entity.
func detachedParts(t *testing.T, msg []byte) (signed, sig []byte) {
	t.Helper()
	_, params, err := mime.ParseMediaType(contentType(msg))
	if err != nil {
		t.Fatal(err)
	}
	delim := "\r\n--" + params["boundary"]
	parts := strings.Split(string(msg), delim)
	if len(parts) != 4 {
		t.Fatalf("multipart/signed with %d pieces", len(parts))
	}
	return []byte(strings.TrimPrefix(parts[1], "\r\n")), base64Body(t, []byte(strings.TrimPrefix(parts[2], "\r\n")))
}
