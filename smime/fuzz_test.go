package smime_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/internal/testpki"
	"smimeproxy/smime"
)

// seeds adds every testdata/*.eml to f's corpus.
func seeds(f *testing.F) [][]byte {
	files, _ := filepath.Glob("testdata/*.eml")
	if len(files) == 0 {
		f.Fatal("no testdata/*.eml")
	}
	var msgs [][]byte
	for _, name := range files {
		msg := testMessage(f, filepath.Base(name))
		f.Add(msg)
		msgs = append(msgs, msg)
	}
	return msgs
}

// hostileSeeds adds every testdata/hostile/*.eml to f's corpus.
func hostileSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/hostile/*.eml")
	for _, name := range files {
		f.Add(testMessage(f, filepath.Join("hostile", filepath.Base(name))))
	}
}

func FuzzOpen(f *testing.F) {
	hostileSeeds(f)
	ca := testpki.NewCA(f, "fuzz root")
	alice := ca.Issue(f, "alice@example.com", &testpki.Options{Key: "p256"})
	bob := ca.Issue(f, "bob@example.com", &testpki.Options{Key: "p256"})
	for _, msg := range seeds(f) {
		for _, opaque := range []bool{false, true} {
			signed, err := smime.Sign(msg, identity(alice), &smime.SignOptions{Opaque: opaque})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(signed)
			enc, err := smime.Encrypt(signed, []*x509.Certificate{bob.Cert}, nil)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(enc)
			// Header protection: the payload and its Legacy Display Element.
			if signed, err = smime.Sign(msg, identity(alice), &smime.SignOptions{Opaque: opaque, HeaderProtection: smime.ProtectCipher}); err != nil {
				f.Fatal(err)
			}
			if enc, err = smime.Encrypt(signed, []*x509.Certificate{bob.Cert}, nil); err != nil {
				f.Fatal(err)
			}
			f.Add(enc)
		}
		enc, err := smime.Encrypt(msg, []*x509.Certificate{bob.Cert}, &smime.EncryptOptions{ProtectHeaders: true})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	opts := &smime.OpenOptions{
		Keys:   []smime.KeyPair{keyPair(bob)},
		Verify: smime.VerifyOptions{Roots: ca.Pool()},
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		o, err := smime.Open(msg, opts)
		if err != nil {
			return
		}
		if o.Message == nil {
			t.Fatal("Open returned no message")
		}
		for _, s := range o.Signatures {
			if s == nil {
				t.Fatal("nil signature")
			}
		}
		_ = o.AuthenticationResults("fuzz.example")
		// What Open serves opens again.
		if _, err := smime.Open(o.Message, opts); err != nil {
			t.Fatalf("served message does not parse: %v", err)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, h := range []string{
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=x\r\n",
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n",
		"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n",
		"Content-Type: application/x-pkcs7-mime; name=\"smime.p7m\";\r\n smime-type=\"signed-data\"\r\n",
		"Content-Type: text/plain; charset*=utf-8''%C3%A4\r\n",
	} {
		f.Add([]byte(h))
	}
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		k := smime.Classify(h)
		if k.String() == "unknown" {
			t.Fatalf("Classify returned %d", int(k))
		}
	})
}

// FuzzSign: no message makes Sign panic, and whatever Sign signs verifies:
// the bytes signed are the bytes sent, with and without header protection.
// The signature Sign made is the outermost one; a signed message signed
// again has its own inside.
func FuzzSign(f *testing.F) {
	ca := testpki.NewCA(f, "fuzz root")
	alice := ca.Issue(f, "alice@example.com", &testpki.Options{Key: "p256"})
	seeds(f)
	hostileSeeds(f)
	vopts := &smime.VerifyOptions{Roots: ca.Pool()}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, opts := range []smime.SignOptions{{}, {Opaque: true}, {HeaderProtection: smime.ProtectClear}, {Opaque: true, HeaderProtection: smime.ProtectCipher}} {
			opaque := opts.Opaque
			signed, err := smime.Sign(msg, identity(alice), &opts)
			if err != nil {
				if opts.HeaderProtection != smime.NoHeaderProtection {
					continue // already S/MIME, say
				}
				return
			}
			sigs, err := smime.Verify(signed, vopts)
			if err != nil {
				t.Fatalf("Verify(Sign(msg)) = %v\n%q", err, signed)
			}
			if len(sigs) == 0 || sigs[0].Status != smime.StatusValid && sigs[0].Status != smime.StatusAddressMismatch {
				for _, s := range sigs {
					t.Logf("%v: %s", s.Status, s.Reason)
				}
				t.Fatalf("Sign(opaque=%v) made a message that does not verify:\n%q", opaque, signed)
			}
		}
	})
}
