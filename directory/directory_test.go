package directory_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"smimeproxy/directory"
	"smimeproxy/internal/ldaptest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		file          string
		people, inter int
		err           bool
	}{
		{"user.der", 1, 0, false},
		{"user-chain.p7b", 1, 1, false}, // the root is dropped: only anchors are trusted
		{"garbage.bin", 0, 0, true},
	}
	for _, tc := range tests {
		people, cas, err := directory.ParseValue(readFile(t, tc.file))
		if (err != nil) != tc.err || len(people) != tc.people || len(cas) != tc.inter {
			t.Errorf("ParseValue(%s) = %d people, %d CAs, %v; want %d, %d, error %v", tc.file, len(people), len(cas), err, tc.people, tc.inter, tc.err)
		}
	}
}

// FuzzParseValue: no attribute value a directory holds makes ParseValue
// panic, and what it returns as people's certificates are not CAs.
func FuzzParseValue(f *testing.F) {
	for _, name := range []string{"user.der", "user-chain.p7b", "garbage.bin"} {
		f.Add(readFile(f, name))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		people, _, err := directory.ParseValue(v)
		if err == nil && len(people) == 0 {
			t.Error("ParseValue returned no certificate and no error")
		}
		for _, c := range people {
			if c.BasicConstraintsValid && c.IsCA {
				t.Errorf("ParseValue returned the CA %s as a person's certificate", c.Subject)
			}
		}
	})
}

func TestNewRefuses(t *testing.T) {
	for _, o := range []directory.Options{
		{URL: "http://x", Filter: "(mail={address})", Attributes: []string{"a"}},
		{URL: "ldaps://x", Filter: "(mail=*)", Attributes: []string{"a"}},
		{URL: "ldaps://x", Filter: "(mail={address}", Attributes: []string{"a"}},
		{URL: "ldaps://x", Filter: "(mail={address})"},
	} {
		if _, err := directory.New(o); err == nil {
			t.Errorf("New(%+v) = nil error, want one", o)
		}
	}
}

// env is a test's corner of the test directory, and a Directory on it.
type env struct {
	srv     *ldaptest.Server
	ou      string
	metrics *directory.Metrics
	log     *testutil.Buffer
}

func newEnv(t *testing.T) *env {
	srv := ldaptest.Start(t)
	return &env{srv: srv, ou: srv.OU(t), metrics: directory.NewMetrics(nil), log: &testutil.Buffer{}}
}

func (e *env) open(t *testing.T, edit func(*directory.Options)) *directory.Directory {
	t.Helper()
	o := directory.Options{
		URL: e.srv.URL, RootCAs: e.srv.CAPool(t), Base: e.ou, BindDN: e.srv.BindDN, Password: e.srv.BindPassword,
		Filter: "(mail={address})", Attributes: []string{"userCertificate;binary", "userSMIMECertificate"},
		Timeout: 5 * time.Second, FoundTTL: time.Hour, NotFoundTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(e.log, t.Output()), nil)), Metrics: e.metrics,
	}
	if edit != nil {
		edit(&o)
	}
	d, err := directory.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// p7b makes a PKCS #7 certs-only bundle with openssl, as a CA or a
// directory tool would.
func p7b(t *testing.T, certs ...*x509.Certificate) []byte {
	t.Helper()
	openssl := testutil.NeedTool(t, "openssl")
	dir := t.TempDir()
	args := []string{"crl2pkcs7", "-nocrl", "-outform", "DER"}
	for i, c := range certs {
		args = append(args, "-certfile", testpki.WriteFile(t, dir, string(rune('a'+i))+".pem", testpki.CertPEM(c)))
	}
	out, err := exec.Command(openssl, args...).Output()
	if err != nil {
		t.Fatalf("openssl crl2pkcs7: %v", err)
	}
	return out
}

// TestLookup: certificates come back from both attributes, over StartTLS
// and LDAPS, with the chain of a PKCS #7 bundle apart; a value that is not
// a certificate is left out with a log line.
func TestLookup(t *testing.T) {
	e := newEnv(t)
	ca := testpki.NewCA(t, "Directory root")
	inter := ca.Intermediate(t, "Directory intermediate")
	dora := ca.Issue(t, "dora@example.org", nil)
	erin := inter.Issue(t, "erin@example.org", nil)
	e.srv.AddPerson(t, e.ou, "dora@example.org", map[string][][]byte{"userCertificate;binary": {dora.Cert.Raw}})
	e.srv.AddPerson(t, e.ou, "erin@example.org", map[string][][]byte{"userSMIMECertificate": {p7b(t, erin.Cert, inter.Cert, ca.Cert)}})
	// OpenLDAP checks userCertificate's syntax; userSMIMECertificate is
	// bytes, and a damaged bundle there is what a directory may serve.
	e.srv.AddPerson(t, e.ou, "fred@example.org", map[string][][]byte{"userSMIMECertificate": {[]byte("not a certificate")}})

	for _, url := range []string{e.srv.URL, e.srv.LDAPSURL} {
		d := e.open(t, func(o *directory.Options) { o.URL = url })
		f, err := d.Lookup(context.Background(), "Dora@Example.org")
		if err != nil || len(f.Certs) != 1 || !f.Certs[0].Equal(dora.Cert) {
			t.Errorf("%s: Lookup(dora) = %+v, %v; want her certificate", url, f, err)
		}
		f, err = d.Lookup(context.Background(), "erin@example.org")
		if err != nil || len(f.Certs) != 1 || !f.Certs[0].Equal(erin.Cert) || len(f.Intermediates) != 1 || !f.Intermediates[0].Equal(inter.Cert) {
			t.Errorf("%s: Lookup(erin) = %+v, %v; want her certificate and the intermediate", url, f, err)
		}
		f, err = d.Lookup(context.Background(), "fred@example.org")
		if err != nil || len(f.Certs) != 0 {
			t.Errorf("%s: Lookup(fred, who has garbage) = %+v, %v; want nothing", url, f, err)
		}
	}
	if !strings.Contains(e.log.String(), "a certificate in the directory does not parse; it is left out") || !strings.Contains(e.log.String(), "uid=fred-example-org") {
		t.Errorf("log = %q, want a line naming fred's entry", e.log.String())
	}
	if n := promtest.ToFloat64(e.metrics.Rejected); n != 2 {
		t.Errorf("values rejected = %v, want 2 (fred's, once per directory URL)", n)
	}
}

// TestLookupCached: what was found, and what was not, is not asked again
// within its lifetime; a filter cannot be widened by the address.
func TestLookupCached(t *testing.T) {
	e := newEnv(t)
	ca := testpki.NewCA(t, "Directory root")
	dora := ca.Issue(t, "dora@example.org", nil)
	e.srv.AddPerson(t, e.ou, "dora@example.org", map[string][][]byte{"userCertificate;binary": {dora.Cert.Raw}})
	now := time.Now()
	d := e.open(t, func(o *directory.Options) { o.Now = func() time.Time { return now } })
	for range 3 {
		d.Lookup(context.Background(), "dora@example.org")
		d.Lookup(context.Background(), "nobody@example.org")
	}
	if found, missing, cached := promtest.ToFloat64(e.metrics.Lookups.WithLabelValues("found")),
		promtest.ToFloat64(e.metrics.Lookups.WithLabelValues("not_found")), promtest.ToFloat64(e.metrics.Lookups.WithLabelValues("cached")); found != 1 || missing != 1 || cached != 4 {
		t.Errorf("lookups found %v, not found %v, cached %v; want 1, 1, 4", found, missing, cached)
	}
	now = now.Add(2 * time.Minute) // past not_found_ttl, within found_ttl
	d.Lookup(context.Background(), "dora@example.org")
	d.Lookup(context.Background(), "nobody@example.org")
	if missing := promtest.ToFloat64(e.metrics.Lookups.WithLabelValues("not_found")); missing != 2 {
		t.Errorf("lookups not found after not_found_ttl = %v, want 2 (asked again)", missing)
	}
	// An address that would be a wildcard unescaped finds nothing.
	if f, err := d.Lookup(context.Background(), "*@example.org"); err != nil || len(f.Certs) != 0 {
		t.Errorf("Lookup(*@example.org) = %+v, %v; want nothing", f, err)
	}
}

// TestLookupFails: a directory that cannot be trusted or logged in to, or
// that does not answer, is an error, never a hang, and is not asked again
// for a while.
func TestLookupFails(t *testing.T) {
	e := newEnv(t)
	other := testpki.NewCA(t, "Not the directory's CA")
	tests := []struct {
		name string
		edit func(*directory.Options)
		want string
	}{
		{"StartTLS with a certificate of another CA", func(o *directory.Options) { o.RootCAs = other.Pool() }, "StartTLS"},
		{"LDAPS with a certificate of another CA", func(o *directory.Options) { o.URL, o.RootCAs = e.srv.LDAPSURL, other.Pool() }, "TLS"},
		{"a wrong name", func(o *directory.Options) { o.ServerName = "ldap.example.org" }, "ldap.example.org"},
		{"a wrong password", func(o *directory.Options) { o.Password = "wrong" }, "bind as"},
		{"anonymous, which the directory refuses", func(o *directory.Options) { o.BindDN, o.Password = "", "" }, "search"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.open(t, tc.edit)
			_, err := d.Lookup(context.Background(), "dora@example.org")
			if !errors.Is(err, directory.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Lookup = %v, want ErrUnavailable mentioning %q", err, tc.want)
			}
			_, err = d.Lookup(context.Background(), "erin@example.org")
			if !errors.Is(err, directory.ErrUnavailable) || !strings.Contains(err.Error(), "did not answer a moment ago") {
				t.Errorf("second Lookup = %v, want ErrUnavailable without asking", err)
			}
		})
	}
	t.Run("silent", func(t *testing.T) {
		addr := testutil.Serve(t, func(c net.Conn) {
			io.Copy(io.Discard, c) // accepts, never answers
		})
		d := e.open(t, func(o *directory.Options) { o.URL, o.Timeout = "ldap://"+addr, 300*time.Millisecond })
		_, err := d.Lookup(context.Background(), "dora@example.org")
		if !errors.Is(err, directory.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 300ms") {
			t.Errorf("Lookup of a silent directory = %v, want ErrUnavailable after the timeout", err)
		}
	})
}
