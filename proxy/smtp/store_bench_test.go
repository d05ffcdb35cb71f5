package smtp

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
	"smimeproxy/storage/postgres"
)

// BenchmarkStores compares the stores in a directory and in PostgreSQL, in
// one run: the lookups one submission makes (the signer's key and a
// recipient's certificate), and whole submissions through the proxy. Both
// serve lookups from memory and look for changes at most once a second
// (the defaults), so the figures should match:
//
//	SMIMEPROXY_INTEGRATION=1 go test -run '^$' -bench Stores ./proxy/smtp
func BenchmarkStores(b *testing.B) {
	storetest.PollInterval = postgres.DefaultPollInterval
	p := testPKI(b)
	for _, k := range storetest.Kinds {
		b.Run("lookup/"+k.Name, func(b *testing.B) {
			k.Need(b)
			keys, certs := storesIn(b, k, p, p.bob.Cert)
			ctx := context.Background()
			for b.Loop() {
				if _, err := keys.Signer("alice@example.com", time.Now()); err != nil {
					b.Fatal(err)
				}
				if _, err := certs.Lookup(ctx, "bob@example.org"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
	for _, k := range storetest.Kinds {
		b.Run("submit/"+k.Name, func(b *testing.B) {
			k.Need(b)
			e := newEnv(b, envOptions{store: k, certs: []*x509.Certificate{p.bob.Cert}, quiet: true, recorder: func(r *recorder) { r.keep = false }})
			c, err := gosmtp.Dial(e.addr(0))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", testPassword)); err != nil {
				b.Fatal(err)
			}
			line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
			msg := message("bob@example.org", "Bench", strings.Repeat(line, 4<<10/len(line)))
			for b.Loop() {
				if err := c.SendMail("alice@example.com", []string{"bob@example.org"}, strings.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// storesIn makes alice's keystore and a certificate cache holding certs,
// trusting the test CA alone, in stores of kind k, with the default recheck
// interval: as serve opens them.
func storesIn(t testing.TB, k storetest.Kind, p *pki, certs ...*x509.Certificate) (*keystore.Store, *certcache.Cache) {
	t.Helper()
	ks, err := keystore.CreateDocs(k.New(t, "keystore", keystore.Layout), []byte(testPassphrase),
		&keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	importIdentity(t, ks, p.alice)
	cc, err := certcache.OpenDocs(k.New(t, "certcache", certcache.Layout), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Trust(p.ca.Root()); err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if _, err := cc.Add(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	return ks, cc
}

func importIdentity(t testing.TB, ks *keystore.Store, id *testpki.Identity) {
	t.Helper()
	p12, err := pkcs12.Modern.WithIterations(keystore.MinBackupIterations).Encode(id.Key, id.Cert, id.Chain, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatal(err)
	}
}
