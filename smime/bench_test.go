package smime_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/smime"
)

// Speed of the SMTP path (sign, sign and encrypt) and of the IMAP path
// (decrypt and verify), next to the raw RSA-2048 operation that bounds them.

var benchSizes = []int{4 << 10, 16 << 10, 64 << 10, 1 << 20}

// benchMessage is a message with a 7-bit text body of about size bytes.
func benchMessage(size int) []byte {
	line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
	body := strings.Repeat(line, size/len(line)+1)[:size]
	return message("alice@example.com", body)
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// benchSigners are the key types the SMTP path is measured with: an RSA
// signature costs far more than the rest, a P-256 one far less, so the
// P-256 figures show the cost of everything else.
func benchSigners(b *testing.B) []struct {
	name  string
	id    *smime.Identity
	rcpts []*x509.Certificate // the recipients and the sender
} {
	p := newPKI(b)
	dave := p.ca.Issue(b, "dave@example.com", nil)
	erin := p.ca.Issue(b, "erin@example.com", &testpki.Options{Key: "p256"})
	frank := p.ca.Issue(b, "frank@example.com", &testpki.Options{Key: "p256"})
	return []struct {
		name  string
		id    *smime.Identity
		rcpts []*x509.Certificate
	}{
		{"rsa2048", identity(p.alice), []*x509.Certificate{p.bob.Cert, dave.Cert, p.alice.Cert}},
		{"p256", identity(p.carol), []*x509.Certificate{erin.Cert, frank.Cert, p.carol.Cert}},
	}
}

func BenchmarkSign(b *testing.B) {
	for _, s := range benchSigners(b) {
		for _, size := range benchSizes {
			b.Run(s.name+"/"+sizeName(size), func(b *testing.B) {
				msg := benchMessage(size)
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					if _, err := smime.Sign(msg, s.id, nil); err != nil {
						b.Fatal(err)
					}
				}
				reportRate(b)
			})
		}
	}
}

// BenchmarkSignEncrypt3 signs and encrypts as the SMTP proxy does, to two
// recipients and the sender.
func BenchmarkSignEncrypt3(b *testing.B) {
	for _, s := range benchSigners(b) {
		for _, size := range benchSizes {
			b.Run(s.name+"/"+sizeName(size), func(b *testing.B) {
				msg := benchMessage(size)
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					signed, err := smime.SignMessage(msg, s.id, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := signed.Encrypt(s.rcpts, nil); err != nil {
						b.Fatal(err)
					}
				}
				reportRate(b)
			})
		}
	}
}

// BenchmarkRSASign is one PKCS #1 v1.5 signature with the key BenchmarkSign uses.
func BenchmarkRSASign(b *testing.B) {
	p := newPKI(b)
	digest := sha256.Sum256([]byte("attributes"))
	for b.Loop() {
		if _, err := p.alice.Key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

func BenchmarkOpen(b *testing.B) {
	p := newPKI(b)
	opts := &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}, Verify: p.verifyOpts()}
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			signed, err := smime.Sign(benchMessage(size), identity(p.alice), nil)
			if err != nil {
				b.Fatal(err)
			}
			enc, err := smime.Encrypt(signed, []*x509.Certificate{p.alice.Cert, p.bob.Cert}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				o, err := smime.Open(enc, opts)
				if err != nil || !o.Decrypted || o.Signatures[0].Status != smime.StatusValid {
					b.Fatalf("Open: %v %+v", err, o)
				}
			}
			reportRate(b)
		})
	}
}

// BenchmarkRSADecrypt is one RSA-2048 private-key decryption with the key
// BenchmarkOpen uses. OAEP stands in for PKCS #1 v1.5 (whose Go API is
// deprecated): the cost is the same private-key operation.
func BenchmarkRSADecrypt(b *testing.B) {
	p := newPKI(b)
	key := p.bob.Key.(*rsa.PrivateKey)
	opts := &rsa.OAEPOptions{Hash: crypto.SHA256}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, make([]byte, 32), nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := key.Decrypt(rand.Reader, ct, opts); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}
