package smime_test

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"

	"smimeproxy/internal/testpeer"
	"smimeproxy/smime"
)

// TestGpgsmVerifiesOurs: what we sign, gpgsm --verify accepts, detached and
// opaque, with the chain it trusts.
func TestGpgsmVerifiesOurs(t *testing.T) {
	p := newPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	for _, file := range []string{"plain.eml", "8bit.eml", "attachment.eml"} {
		t.Run(file, func(t *testing.T) {
			msg := testMessage(t, file)
			detached, err := smime.Sign(msg, identity(p.alice), nil)
			if err != nil {
				t.Fatal(err)
			}
			content, sig := signedParts(t, detached)
			g.Write(t, "content", content)
			g.Write(t, "sig.p7s", sig)
			if out := g.Run(t, nil, "--batch", "--status-fd", "1", "--verify", "sig.p7s", "content"); !goodSig(out) {
				t.Errorf("gpgsm --verify (detached):\n%s", out)
			}
			opaque, err := smime.Sign(msg, identity(p.alice), &smime.SignOptions{Opaque: true})
			if err != nil {
				t.Fatal(err)
			}
			g.Write(t, "opaque.p7m", mimeBody(t, opaque))
			out := g.Run(t, nil, "--batch", "--status-fd", "1", "--output", "opaque.out", "--verify", "opaque.p7m")
			if !goodSig(out) || !bytes.Equal(g.Read(t, "opaque.out"), content) {
				t.Errorf("gpgsm --verify (opaque):\n%s\ncontent %q", out, g.Read(t, "opaque.out"))
			}
			// A changed byte is caught.
			g.Write(t, "content", bytes.Replace(content, []byte("\r\n"), []byte("\n"), 1))
			if _, _, err := g.Try(nil, "--batch", "--verify", "sig.p7s", "content"); err == nil {
				t.Error("gpgsm accepted changed content")
			}
		})
	}
}

// goodSig reports whether gpgsm's status lines say good, valid and trusted.
func goodSig(status []byte) bool {
	s := string(status)
	return strings.Contains(s, "[GNUPG:] GOODSIG") && strings.Contains(s, "[GNUPG:] VALIDSIG") && strings.Contains(s, "[GNUPG:] TRUST_FULLY")
}

// TestGpgsmSignedVerifiedByUs: we verify what gpgsm signs, detached and
// opaque, once the test wraps its output in MIME.
func TestGpgsmSignedVerifiedByUs(t *testing.T) {
	p := newPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	g.ImportIdentity(t, "alice", p.alice)
	content := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned by gpgsm.\r\n")
	g.Write(t, "content", content)

	g.WithPassphrase(t, "-u", "alice@example.com", "--detach-sign", "--output", "sig.p7s", "content")
	msg := wrapSigned(content, g.Read(t, "sig.p7s"), "sha-256")
	o, err := smime.Open(msg, &smime.OpenOptions{Verify: p.verifyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "detached", o.Signatures, smime.StatusValid)
	if !o.Signatures[0].Signer.Equal(p.alice.Cert) {
		t.Errorf("signer %v", o.Signatures[0].Signer.Subject)
	}
	sigs, _ := smime.Verify(bytes.Replace(msg, []byte("by gpgsm"), []byte("by gpgsX"), 1), ptr(p.verifyOpts()))
	wantStatus(t, "detached, changed", sigs, smime.StatusInvalid)

	g.WithPassphrase(t, "-u", "alice@example.com", "--sign", "--output", "opaque.p7m", "content")
	o, err = smime.Open(wrapPKCS7(g.Read(t, "opaque.p7m"), "signed-data"), &smime.OpenOptions{Verify: p.verifyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "opaque", o.Signatures, smime.StatusValid)
	if _, body := split(t, o.Message); string(body) != "Signed by gpgsm.\r\n" {
		t.Errorf("served body %q", body)
	}
}

// TestGpgsmDecryptsOurs: gpgsm --decrypt opens what we encrypt, signed or not.
func TestGpgsmDecryptsOurs(t *testing.T) {
	p := newPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	g.ImportIdentity(t, "bob", p.bob)
	msg := testMessage(t, "8bit.eml")
	signed, err := smime.Sign(msg, identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []struct {
		name string
		msg  []byte
	}{{"plain", msg}, {"signed", signed}} {
		t.Run(in.name, func(t *testing.T) {
			enc, err := smime.Encrypt(in.msg, []*x509.Certificate{p.bob.Cert}, nil)
			if err != nil {
				t.Fatal(err)
			}
			g.Write(t, "enc.p7m", mimeBody(t, enc))
			got := g.WithPassphrase(t, "--decrypt", "enc.p7m")
			if in.name == "signed" {
				if want := contentEntity(t, signed); !bytes.Equal(got, want) {
					t.Errorf("gpgsm decrypted\n%q\nwant the signed entity\n%q", got, want)
				}
				return
			}
			if !bytes.Contains(got, []byte("Gr=C3=BC=C3=9Fe aus K=C3=B6ln!")) {
				t.Errorf("gpgsm decrypted\n%q", got)
			}
		})
	}
}

// TestGpgsmEncryptedOpenedByUs: we open what gpgsm encrypts.
func TestGpgsmEncryptedOpenedByUs(t *testing.T) {
	p := newPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	g.ImportCert(t, "bob", p.bob.Cert)
	content := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nEncrypted by gpgsm.\r\n")
	g.Write(t, "content", content)
	for _, algo := range []string{"AES256", "AES128", "3DES"} {
		t.Run(algo, func(t *testing.T) {
			g.Run(t, nil, "--batch", "--cipher-algo", algo, "-r", "bob@example.com", "--output", "enc.p7m", "--yes", "--encrypt", "content")
			o, err := smime.Open(wrapPKCS7(g.Read(t, "enc.p7m"), "enveloped-data"), &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}})
			if err != nil {
				t.Fatal(err)
			}
			if !o.Decrypted {
				t.Fatalf("not decrypted: %v", o.DecryptErr)
			}
			if _, body := split(t, o.Message); string(body) != "Encrypted by gpgsm.\r\n" {
				t.Errorf("served body %q", body)
			}
		})
	}
}

// TestGpgsmReadsProtected: gpgsm decrypts and verifies what we send with
// header protection, and the content holds the protected header.
func TestGpgsmReadsProtected(t *testing.T) {
	p := newPKI(t)
	g := testpeer.NewGpgsm(t, p.ca.Cert)
	g.ImportIdentity(t, "bob", p.bob)
	msg := testMessage(t, "plain.eml")
	for _, way := range protectWays {
		t.Run(way.name, func(t *testing.T) {
			entity := way.make(t, p, msg)
			if way.encrypt {
				g.Write(t, "enc.p7m", mimeBody(t, entity))
				entity = g.WithPassphrase(t, "--decrypt", "enc.p7m")
			}
			content := entity
			switch {
			case way.name == "encrypted":
			case strings.Contains(way.name, "detached"):
				var sig []byte
				content, sig = signedParts(t, entity)
				g.Write(t, "content", content)
				g.Write(t, "sig.p7s", sig)
				if out := g.Run(t, nil, "--batch", "--status-fd", "1", "--verify", "sig.p7s", "content"); !goodSig(out) {
					t.Fatalf("gpgsm --verify (detached):\n%s", out)
				}
			default:
				g.Write(t, "opaque.p7m", mimeBody(t, entity))
				if out := g.Run(t, nil, "--batch", "--status-fd", "1", "--output", "opaque.out", "--yes", "--verify", "opaque.p7m"); !goodSig(out) {
					t.Fatalf("gpgsm --verify (opaque):\n%s", out)
				}
				content = g.Read(t, "opaque.out")
			}
			want := "hp=\"clear\""
			if way.encrypt {
				want = "hp=\"cipher\""
			}
			if !bytes.Contains(content, []byte("Subject: Plain ASCII\r\n")) || !bytes.Contains(content, []byte(want)) {
				t.Errorf("gpgsm got content without the protected header (%s):\n%s", want, content)
			}
		})
	}
}
