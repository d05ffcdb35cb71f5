package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/testpki"
)

// TestSignGolden pins the layout of what Sign and Encrypt write, with a fixed
// boundary; the CMS bodies, which change with every key, are replaced by a
// description of what they hold.
func TestSignGolden(t *testing.T) {
	saved := newBoundary
	newBoundary = func() string { return "----=_smime_golden" }
	t.Cleanup(func() { newBoundary = saved })

	ca := testpki.NewCA(t, "golden root")
	alice := ca.Issue(t, "alice@example.com", nil)
	id := &Identity{Cert: alice.Cert, Key: alice.Key, Chain: alice.Chain}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

	tests := []struct {
		name, file string
		make       func(msg []byte) ([]byte, error)
	}{
		{"plain.detached", "plain.eml", func(m []byte) ([]byte, error) { return Sign(m, id, &SignOptions{Time: at}) }},
		{"attachment.detached", "attachment.eml", func(m []byte) ([]byte, error) {
			return Sign(m, id, &SignOptions{Time: at, Hash: crypto.SHA512})
		}},
		{"8bit.opaque", "8bit.eml", func(m []byte) ([]byte, error) { return Sign(m, id, &SignOptions{Time: at, Opaque: true}) }},
		{"no-mime.encrypted", "no-mime.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, nil)
		}},
		{"plain.encrypted-gcm", "plain.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, &EncryptOptions{Cipher: cms.AES256GCM})
		}},
		// Header protection: inside the signature only; inside the
		// encryption, signed and not; a multipart/alternative whose two
		// alternatives get the Legacy Display Element; 8-bit text that
		// needs quoted-printable once it has one; no MIME at all.
		{"plain.detached-hp-clear", "plain.eml", func(m []byte) ([]byte, error) {
			return Sign(m, id, &SignOptions{Time: at, HeaderProtection: ProtectClear})
		}},
		{"plain.signed-encrypted-hp", "plain.eml", func(m []byte) ([]byte, error) {
			s, err := Sign(m, id, &SignOptions{Time: at, Opaque: true, HeaderProtection: ProtectCipher})
			if err != nil {
				return nil, err
			}
			return Encrypt(s, []*x509.Certificate{alice.Cert}, nil)
		}},
		{"nested.encrypted-hp", "nested.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, &EncryptOptions{ProtectHeaders: true})
		}},
		{"8bit.encrypted-hp", "8bit.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, &EncryptOptions{ProtectHeaders: true})
		}},
		{"no-mime.encrypted-hp", "no-mime.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, &EncryptOptions{ProtectHeaders: true})
		}},
		{"attachment.encrypted-hp", "attachment.eml", func(m []byte) ([]byte, error) {
			return Encrypt(m, []*x509.Certificate{alice.Cert}, &EncryptOptions{ProtectHeaders: true})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := readTestdata(t, tc.file)
			out, err := tc.make(msg)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "sign/"+tc.name+".golden", describeCMS(t, out, alice))
		})
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// describeCMS replaces every base64 CMS body in msg by a line saying what it
// holds (and, for signed-data with content and enveloped data that reader
// decrypts, that content, described in turn).
func describeCMS(t *testing.T, msg []byte, reader *testpki.Identity) []byte {
	t.Helper()
	e, err := parseEntity(msg, DefaultLimits.MaxHeaderBytes)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []*entity
	switch Classify(e.header) {
	case Signed:
		root := Walk(msg, nil).Root
		if root.Kind != Multipart || len(root.Children) != 2 {
			t.Fatalf("multipart/signed with %d parts", len(root.Children))
		}
		p := root.Children[1]
		sig, err := parseEntity(msg[p.Start:p.rfcEnd], DefaultLimits.MaxHeaderBytes)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, sig)
	case SignedOpaque, Encrypted:
		bodies = append(bodies, e)
	}
	for _, b := range bodies {
		der, err := decodeBody(b)
		if err != nil {
			t.Fatal(err)
		}
		var desc string
		switch typ, _ := cms.Identify(der); typ {
		case cms.TypeSignedData:
			sd, err := cms.ParseSignedData(der)
			if err != nil {
				t.Fatal(err)
			}
			s := sd.Signers[0]
			desc = fmt.Sprintf("[SignedData: %d signer, %v, signed %s, %d certificates, detached %v]",
				len(sd.Signers), s.Hash, s.SigningTime.UTC().Format(time.RFC3339), len(sd.Certificates), sd.Content == nil)
			if sd.Content != nil {
				desc += "\r\n[content:]\r\n" + string(sd.Content)
			}
		case cms.TypeEnvelopedData, cms.TypeAuthEnvelopedData:
			env, err := cms.ParseEnvelope(der)
			if err != nil {
				t.Fatal(err)
			}
			desc = fmt.Sprintf("[Envelope: authenticated %v, %v, %d recipient]", env.Authenticated, env.Cipher, len(env.Recipients))
			content, err := env.Decrypt(reader.Cert, reader.Key)
			if err != nil {
				t.Fatal(err)
			}
			desc += "\r\n[content:]\r\n" + string(describeCMS(t, content, reader))
		default:
			t.Fatalf("unexpected CMS type %v", typ)
		}
		msg = bytes.Replace(msg, trimBase64(b.body), []byte(desc), 1)
	}
	return msg
}

// trimBase64 returns the base64 lines at the start of b.
func trimBase64(b []byte) []byte {
	n := 0
	for n < len(b) && (b[n] == '\r' || b[n] == '\n' || b[n] == '=' || b[n] == '+' || b[n] == '/' ||
		b[n] >= 'A' && b[n] <= 'Z' || b[n] >= 'a' && b[n] <= 'z' || b[n] >= '0' && b[n] <= '9') {
		n++
	}
	return bytes.TrimRight(b[:n], "\r\n")
}
