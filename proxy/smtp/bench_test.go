package smtp

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// smime's benchmarks measure Sign and Encrypt alone. These measure the
// proxy's whole DATA path in process (client to proxy to upstream, over
// loopback TCP and STARTTLS upstream: read, policy, certificate lookups,
// sign, encrypt, relay), next to one private-key operation with the key it
// signs with, so that the ratio to the crypto bound shows:
//
//	go test -run '^$' -bench . ./proxy/smtp

var benchSizes = []int{4 << 10, 64 << 10, 1 << 20}

func BenchmarkData(b *testing.B) {
	p := testPKI(b)
	for _, mode := range []struct {
		name  string
		rcpts []string
		certs []*x509.Certificate
	}{
		{"sign", []string{"bob@example.org"}, nil},
		{"sign_encrypt3", []string{"bob@example.org", "carol@example.org", "dave@example.net"}, []*x509.Certificate{p.bob.Cert, p.carol.Cert, p.dave.Cert}},
	} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%dKB", mode.name, size>>10), func(b *testing.B) {
				e := newEnv(b, envOptions{certs: mode.certs, quiet: true, recorder: func(r *recorder) { r.keep = false }})
				c, err := gosmtp.Dial(e.addr(0))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", testPassword)); err != nil {
					b.Fatal(err)
				}
				line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
				msg := []byte(message(mode.rcpts[0], "Bench", strings.Repeat(line, size/len(line)+1)[:size], "Cc: "+strings.Join(mode.rcpts[1:], ", ")))
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					if err := c.SendMail("alice@example.com", mode.rcpts, strings.NewReader(string(msg))); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkSMTPKeyOp is one PKCS #1 v1.5 signature with the key
// BenchmarkSMTPData signs with: the floor of its cost per message.
func BenchmarkKeyOp(b *testing.B) {
	key := testPKI(b).alice.Key
	digest := sha256.Sum256([]byte("message digest"))
	for b.Loop() {
		if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
