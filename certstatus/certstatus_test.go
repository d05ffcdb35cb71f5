package certstatus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"smimeproxy/certcache"
	"smimeproxy/certstatus"
	"smimeproxy/directory"
	"smimeproxy/internal/ldaptest"
	"smimeproxy/internal/revtest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/proxy"
	"smimeproxy/revocation"
	"smimeproxy/smime"
)

var (
	_ proxy.Certs            = (*certstatus.Checker)(nil)
	_ proxy.SignatureChecker = (*certstatus.Checker)(nil)
	_ proxy.Available        = (*certstatus.Checker)(nil)
	_ proxy.Generational     = (*certstatus.Checker)(nil)
	_ proxy.RecipientChecker = (*certstatus.Checker)(nil)
)

// env is a certificate cache that trusts a CA whose certificates name a
// real openssl OCSP responder and CRL, and a Checker around it.
type env struct {
	ca      *testpki.CA
	rt      *revtest.Responder
	cache   *certcache.Cache
	log     *testutil.Buffer
	metrics *certstatus.Metrics
}

// p256 makes test certificates quick to issue.
var p256 = &testpki.Options{Key: "p256"}

func newEnv(t *testing.T) *env {
	ca := testpki.NewCA(t, "Status CA")
	cache, err := certcache.Open(t.TempDir(), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Trust(ca.Cert); err != nil {
		t.Fatal(err)
	}
	return &env{ca: ca, rt: revtest.New(t, ca), cache: cache, log: &testutil.Buffer{}, metrics: certstatus.NewMetrics(nil)}
}

func (e *env) logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(e.log, t.Output()), nil))
}

// checker makes a Checker; ro are the revocation options (OCSP, CRL, ...).
func (e *env) checker(t *testing.T, ro revocation.Options, hardFail bool, dirs ...*directory.Directory) *certstatus.Checker {
	ro.Logger = e.logger(t)
	if ro.Timeout == 0 {
		ro.Timeout = 5 * time.Second
	}
	return certstatus.New(e.cache, certstatus.Options{Revocation: revocation.New(ro), HardFail: hardFail,
		Directories: dirs, Logger: e.logger(t), Metrics: e.metrics})
}

func (e *env) add(t *testing.T, ids ...*testpki.Identity) {
	t.Helper()
	for _, id := range ids {
		if _, err := e.cache.Add(id.Cert, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLookupRevoked: a revoked certificate is never chosen; another usable
// one is, and with none the recipient has no usable certificate, saying
// why. The status is stored, and moves the cache's generation.
func TestLookupRevoked(t *testing.T) {
	for _, method := range []string{revocation.MethodOCSP, revocation.MethodCRL} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t)
			older := e.rt.Issue(t, "bob@example.org", &testpki.Options{Key: "p256", NotBefore: time.Now().Add(-48 * time.Hour)})
			newer := e.rt.Issue(t, "bob@example.org", p256)
			carol := e.rt.Issue(t, "carol@example.org", p256)
			e.rt.Revoke(newer.Cert, "keyCompromise")
			e.rt.Revoke(carol.Cert, "superseded")
			e.rt.Start(t)
			e.add(t, older, newer, carol)
			x := e.checker(t, revocation.Options{OCSP: method == revocation.MethodOCSP, CRL: method == revocation.MethodCRL}, false)
			g0 := x.Generation()

			got, err := x.Lookup(context.Background(), "bob@example.org")
			if err != nil || !got.Cert.Equal(older.Cert) {
				t.Fatalf("Lookup(bob) = %v, %v; want his older certificate, the newer one being revoked", got, err)
			}
			_, err = x.Lookup(context.Background(), "carol@example.org")
			var nv *certcache.NoValidCertError
			if !errors.As(err, &nv) || !errors.Is(err, certcache.ErrNoCert) || len(nv.Rejected) != 1 || nv.Rejected[0].Reason != certcache.ReasonRevoked ||
				!strings.Contains(nv.Rejected[0].Detail, "superseded") {
				t.Fatalf("Lookup(carol, revoked) = %v, want a NoValidCertError saying revoked (superseded)", err)
			}
			s, ok := e.cache.Status(certcache.Fingerprint(carol.Cert))
			if !ok || s.State != "revoked" || s.Method != method || s.Checked.IsZero() || !s.Until.After(s.Checked) {
				t.Errorf("stored status of carol's certificate = %+v, %v; want revoked by %s, with when", s, ok, method)
			}
			if x.Generation() == g0 {
				t.Error("finding a certificate revoked did not move the generation")
			}
			// A second Checker (another instance, a restart) uses the
			// stored statuses and asks no one.
			o, c := e.rt.Hits()
			y := e.checker(t, revocation.Options{OCSP: true, CRL: true}, false)
			y.Lookup(context.Background(), "bob@example.org")
			y.Lookup(context.Background(), "carol@example.org")
			if o2, c2 := e.rt.Hits(); o2 != o || c2 != c {
				t.Errorf("another Checker asked the responder %d and the CRL %d more times, want none (the stored statuses are fresh)", o2-o, c2-c)
			}
		})
	}
}

// TestUnknown: when nobody answers, soft-fail uses the certificate and
// hard-fail does not; either way within the timeout, logged and counted.
func TestUnknown(t *testing.T) {
	e := newEnv(t)
	// Reading the request first lets the server notice the client leave.
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(silent.Close)
	dora := e.ca.Issue(t, "dora@example.org", &testpki.Options{Key: "p256", OCSPServer: []string{silent.URL}})
	e.add(t, dora)
	soft := e.checker(t, revocation.Options{OCSP: true, Timeout: 300 * time.Millisecond}, false)
	if got, err := soft.Lookup(context.Background(), "dora@example.org"); err != nil || !got.Cert.Equal(dora.Cert) {
		t.Errorf("soft-fail Lookup with a silent responder = %v, %v; want her certificate", got, err)
	}
	if !strings.Contains(e.log.String(), "revocation status unknown; the certificate is used") {
		t.Errorf("log = %q, want the soft failure", e.log.String())
	}
	if n := promtest.ToFloat64(e.metrics.Verdicts.WithLabelValues("encrypt", "unknown_soft_fail")); n != 1 {
		t.Errorf("soft failures counted = %v, want 1", n)
	}

	// A caller that goes away before the answer gets its context's error,
	// not a certificate.
	fred := e.ca.Issue(t, "fred@example.org", &testpki.Options{Key: "p256", OCSPServer: []string{silent.URL + "/fred"}})
	e.add(t, fred)
	slow := e.checker(t, revocation.Options{OCSP: true, Timeout: 2 * time.Second}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if got, err := slow.Lookup(ctx, "fred@example.org"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lookup abandoned by its caller = %v, %v; want the context's error", got, err)
	}

	e2 := newEnv(t)
	e2.add(t, dora)
	if err := e2.cache.Trust(e.ca.Cert); err != nil {
		t.Fatal(err)
	}
	hard := e2.checker(t, revocation.Options{OCSP: true, Timeout: 300 * time.Millisecond}, true)
	_, err := hard.Lookup(context.Background(), "dora@example.org")
	var nv *certcache.NoValidCertError
	if !errors.As(err, &nv) || nv.Rejected[0].Reason != certcache.ReasonRevocationUnknown {
		t.Errorf("hard-fail Lookup with a silent responder = %v, want no usable certificate, status unknown", err)
	}
}

// sign signs a message as id.
func sign(t *testing.T, id *testpki.Identity) []byte {
	t.Helper()
	addr := id.Cert.EmailAddresses[0]
	msg := "From: " + addr + "\r\nTo: someone@example.org\r\nSubject: signed\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
	out, err := smime.Sign([]byte(msg), &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCheckSignatures: a signature by a revoked certificate is reported
// as revoked (smime=fail, with the reason) and is not harvested, by OCSP
// and by CRL from openssl; a good one stays valid.
func TestCheckSignatures(t *testing.T) {
	for _, method := range []string{revocation.MethodOCSP, revocation.MethodCRL} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t)
			good := e.rt.Issue(t, "good@example.org", p256)
			bad := e.rt.Issue(t, "mallory@example.org", p256)
			e.rt.Revoke(bad.Cert, "keyCompromise")
			e.rt.Start(t)
			x := e.checker(t, revocation.Options{OCSP: method == revocation.MethodOCSP, CRL: method == revocation.MethodCRL}, false)
			for _, tc := range []struct {
				id      *testpki.Identity
				status  smime.Status
				harvest bool
				ar      string
			}{
				{good, smime.StatusValid, true, `smime=pass reason="valid: signature verified"`},
				{bad, smime.StatusRevoked, false, `smime=fail reason="revoked: the signer's certificate was revoked `},
			} {
				o, err := smime.Open(sign(t, tc.id), &smime.OpenOptions{Verify: smime.VerifyOptions{Roots: x.Roots(), Intermediates: x.Intermediates()}})
				if err != nil {
					t.Fatal(err)
				}
				if o.Signatures[0].Status != smime.StatusValid {
					t.Fatalf("smime.Open: %v, want valid before the check", o.Signatures[0].Status)
				}
				harvest := x.CheckSignatures(context.Background(), o.Signatures)
				ar := o.AuthenticationResults("mx.example")
				if o.Signatures[0].Status != tc.status || harvest[0] != tc.harvest || !strings.Contains(ar, tc.ar) {
					t.Errorf("CheckSignatures(%s) = %v, harvest %v, %s; want %v, harvest %v, %s", tc.id.Cert.EmailAddresses[0],
						o.Signatures[0].Status, harvest[0], ar, tc.status, tc.harvest, tc.ar)
				}
				if tc.status == smime.StatusRevoked && !strings.Contains(ar, "keyCompromise") {
					t.Errorf("Authentication-Results %s does not say why", ar)
				}
			}
			// Even asked to, Harvest refuses a certificate known revoked.
			if err := x.Harvest(bad.Cert, nil, time.Now(), nil); err == nil || len(e.cache.List()) != 0 {
				t.Errorf("Harvest(revoked) = %v, %d stored; want an error and nothing stored", err, len(e.cache.List()))
			}
			if err := x.Harvest(good.Cert, nil, time.Now(), nil); err != nil || len(e.cache.List()) != 1 {
				t.Errorf("Harvest(good) = %v, %d stored; want it stored", err, len(e.cache.List()))
			}
		})
	}
}

// TestCheckNow: re-checking asks again, whatever is stored.
func TestCheckNow(t *testing.T) {
	e := newEnv(t)
	id := e.rt.Issue(t, "dora@example.org", p256)
	e.rt.Start(t)
	e.add(t, id)
	x := e.checker(t, revocation.Options{OCSP: true}, false)
	if _, err := x.Lookup(context.Background(), "dora@example.org"); err != nil {
		t.Fatal(err)
	}
	e.rt.Revoke(id.Cert, "keyCompromise")
	e.rt.Start(t)
	if _, err := x.Lookup(context.Background(), "dora@example.org"); err != nil {
		t.Fatalf("Lookup within the stored status's lifetime = %v, want it used still", err)
	}
	r, err := x.CheckNow(context.Background(), id.Cert, nil, time.Time{})
	if err != nil || r.State != revocation.Revoked {
		t.Fatalf("CheckNow = %+v, %v; want revoked", r, err)
	}
	if _, err := x.Lookup(context.Background(), "dora@example.org"); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Lookup after CheckNow found it revoked = %v, want no usable certificate", err)
	}
	stranger := testpki.NewCA(t, "Stranger").Issue(t, "eve@example.org", nil)
	if _, err := x.CheckNow(context.Background(), stranger.Cert, nil, time.Time{}); !errors.Is(err, certstatus.ErrNotChecked) {
		t.Errorf("CheckNow(untrusted) = %v, want ErrNotChecked", err)
	}
}

// TestCheckRecipient: a user's own certificate, which the cache does not
// hold, is judged by the same rules: a good one may be encrypted to, a
// revoked one not (saying why), and one without a known issuer, or with
// revocation checks off, is not asked about.
func TestCheckRecipient(t *testing.T) {
	e := newEnv(t)
	good := e.rt.Issue(t, "alice@example.org", p256)
	revoked := e.rt.Issue(t, "bob@example.org", p256)
	e.rt.Revoke(revoked.Cert, "keyCompromise")
	e.rt.Start(t)
	x := e.checker(t, revocation.Options{OCSP: true}, false)
	ctx := context.Background()

	if err := x.CheckRecipient(ctx, "alice@example.org", good.Cert); err != nil {
		t.Errorf("CheckRecipient(good) = %v, want nil", err)
	}
	err := x.CheckRecipient(ctx, "Bob@example.org", revoked.Cert)
	var nv *certcache.NoValidCertError
	if !errors.As(err, &nv) || !errors.Is(err, certcache.ErrNoCert) || nv.Addr != "bob@example.org" || len(nv.Rejected) != 1 ||
		nv.Rejected[0].Reason != certcache.ReasonRevoked || !strings.Contains(nv.Rejected[0].Detail, "keyCompromise") {
		t.Errorf("CheckRecipient(revoked) = %v, want a NoValidCertError for bob@example.org saying revoked (keyCompromise)", err)
	}
	if n := len(e.cache.List()); n != 0 {
		t.Errorf("the cache holds %d certificates after checking own ones, want none", n)
	}
	o, c := e.rt.Hits()
	stranger := testpki.NewCA(t, "Stranger").Issue(t, "eve@example.org", nil)
	if err := x.CheckRecipient(ctx, "eve@example.org", stranger.Cert); err != nil {
		t.Errorf("CheckRecipient(no known issuer) = %v, want nil", err)
	}
	off := certstatus.New(e.cache, certstatus.Options{Logger: e.logger(t), Metrics: e.metrics})
	if err := off.CheckRecipient(ctx, "bob@example.org", revoked.Cert); err != nil {
		t.Errorf("CheckRecipient with revocation checks off = %v, want nil", err)
	}
	if o2, c2 := e.rt.Hits(); o2 != o || c2 != c {
		t.Errorf("the responder was asked %d and the CRL %d more times, want none", o2-o, c2-c)
	}
}

// TestDirectory: a recipient the cache knows nothing of is found in the
// directory and encrypted to, without being stored; a directory entry
// that is garbage, untrusted, for another address or revoked is not used,
// with a log line, and trusts nothing.
func TestDirectory(t *testing.T) {
	srv := ldaptest.Start(t)
	ou := srv.OU(t)
	e := newEnv(t)
	stranger := testpki.NewCA(t, "Stranger")
	dora := e.rt.Issue(t, "dora@example.org", p256)
	revoked := e.rt.Issue(t, "erin@example.org", p256)
	e.rt.Revoke(revoked.Cert, "keyCompromise")
	e.rt.Start(t)
	srv.AddPerson(t, ou, "dora@example.org", map[string][][]byte{"userCertificate;binary": {dora.Cert.Raw}})
	srv.AddPerson(t, ou, "erin@example.org", map[string][][]byte{"userCertificate;binary": {revoked.Cert.Raw}})
	srv.AddPerson(t, ou, "fred@example.org", map[string][][]byte{"userSMIMECertificate": {[]byte("garbage")}})
	srv.AddPerson(t, ou, "gina@example.org", map[string][][]byte{"userCertificate;binary": {stranger.Issue(t, "gina@example.org", nil).Cert.Raw}})
	srv.AddPerson(t, ou, "hal@example.org", map[string][][]byte{"userCertificate;binary": {e.ca.Issue(t, "notgina@example.org", nil).Cert.Raw}})
	d, err := directory.New(directory.Options{URL: srv.URL, RootCAs: srv.CAPool(t), Base: ou, BindDN: srv.BindDN, Password: srv.BindPassword,
		Filter: "(mail={address})", Attributes: []string{"userCertificate;binary", "userSMIMECertificate"},
		Timeout: 5 * time.Second, FoundTTL: time.Hour, NotFoundTTL: time.Minute, Logger: e.logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	x := e.checker(t, revocation.Options{OCSP: true}, false, d)

	got, err := x.Lookup(context.Background(), "Dora@example.org")
	if err != nil || !got.Cert.Equal(dora.Cert) || got.Source != certcache.SourceDirectory {
		t.Fatalf("Lookup(dora, in the directory) = %+v, %v; want her certificate from the directory", got, err)
	}
	if n := len(e.cache.List()); n != 0 {
		t.Errorf("the cache holds %d certificates after a directory lookup, want none", n)
	}
	for _, tc := range []struct {
		addr string
		want certcache.Reason // "": nothing usable found at all
		log  string
	}{
		{"erin@example.org", certcache.ReasonRevoked, "a certificate from the directory is not used"},
		{"fred@example.org", "", "a certificate in the directory does not parse"},
		{"gina@example.org", certcache.ReasonUntrusted, "a certificate from the directory is not used"},
		{"hal@example.org", certcache.ReasonAddress, "a certificate from the directory is not used"},
		{"nobody@example.org", "", ""},
	} {
		_, err := x.Lookup(context.Background(), tc.addr)
		var nv *certcache.NoValidCertError
		switch {
		case !errors.Is(err, certcache.ErrNoCert):
			t.Errorf("Lookup(%s) = %v, want no usable certificate", tc.addr, err)
		case tc.want == "" && errors.As(err, &nv):
			t.Errorf("Lookup(%s) = %v, want no certificate at all", tc.addr, err)
		case tc.want != "" && (!errors.As(err, &nv) || nv.Rejected[0].Reason != tc.want):
			t.Errorf("Lookup(%s) = %v, want one rejected as %s", tc.addr, err, tc.want)
		case !strings.Contains(e.log.String(), tc.log):
			t.Errorf("log = %q, want %q", e.log.String(), tc.log)
		}
	}
	if n := promtest.ToFloat64(e.metrics.Directory.WithLabelValues("used")); n != 1 {
		t.Errorf("directory certificates used = %v, want 1", n)
	}
}
