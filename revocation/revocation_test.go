package revocation_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"smimeproxy/internal/revtest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/revocation"
)

// goResponder is an OCSP responder and CRL server made in Go, whose
// answers a test sets: the way to send what openssl would not (a wrong
// signature, a stale answer, garbage) and to be slow.
type goResponder struct {
	t   *testing.T
	srv *httptest.Server
	ca  *testpki.CA

	mu     sync.Mutex
	status map[string]int // by serial; absent: good
	signer crypto.Signer  // signs the answers; default the CA's key
	rcert  *x509.Certificate
	next   time.Duration // nextUpdate after now
	crl    []byte
	ocspN  int
	crlN   int
	block  chan struct{} // when set, requests wait on it
}

// p256 makes test certificates quick to issue.
var p256 = &testpki.Options{Key: "p256"}

func newGoResponder(t *testing.T, ca *testpki.CA) *goResponder {
	r := &goResponder{t: t, ca: ca, status: map[string]int{}, signer: ca.Key, next: time.Hour}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.block != nil {
			close(r.block)
			r.block = nil
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

func (r *goResponder) ocspURL() string { return r.srv.URL + "/ocsp" }
func (r *goResponder) crlURL() string  { return r.srv.URL + "/crl" }

func (r *goResponder) issue(t *testing.T, email string, ocspOn, crlOn bool) *testpki.Identity {
	o := &testpki.Options{Key: "p256"}
	if ocspOn {
		o.OCSPServer = []string{r.ocspURL()}
	}
	if crlOn {
		o.CRLDistributionPoints = []string{r.crlURL()}
	}
	return r.ca.Issue(t, email, o)
}

func (r *goResponder) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	block := r.block
	if req.URL.Path == "/crl" {
		r.crlN++
	} else {
		r.ocspN++
	}
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-req.Context().Done():
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.URL.Path == "/crl" {
		w.Write(r.crl)
		return
	}
	body, _ := io.ReadAll(req.Body)
	q, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	tmpl := ocsp.Response{SerialNumber: q.SerialNumber, ThisUpdate: time.Now().Add(min(0, r.next) - time.Minute),
		NextUpdate: time.Now().Add(r.next), Certificate: r.rcert}
	if st, ok := r.status[q.SerialNumber.String()]; ok {
		tmpl.Status = st
		if st == ocsp.Revoked {
			tmpl.RevokedAt, tmpl.RevocationReason = time.Now().Add(-time.Hour), ocsp.KeyCompromise
		}
	}
	der, err := ocsp.CreateResponse(r.ca.Cert, r.certFor(), tmpl, r.signer)
	if err != nil {
		r.t.Errorf("CreateResponse: %v", err)
		return
	}
	w.Write(der)
}

// certFor is the certificate the answer is signed as: the responder's, or the CA's.
func (r *goResponder) certFor() *x509.Certificate {
	if r.rcert != nil {
		return r.rcert
	}
	return r.ca.Cert
}

func (r *goResponder) set(f func(r *goResponder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *goResponder) hits() (ocspN, crlN int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ocspN, r.crlN
}

// makeCRL makes a CRL of ca signed by key, listing revoked.
func makeCRL(t *testing.T, ca *testpki.CA, key crypto.Signer, next time.Duration, exts []pkix.Extension, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(min(0, next) - time.Minute),
		NextUpdate: time.Now().Add(next), ExtraExtensions: exts}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Hour), ReasonCode: ocsp.KeyCompromise})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

type logBuf = testutil.Buffer

func newChecker(t *testing.T, o revocation.Options) (*revocation.Checker, *logBuf) {
	var buf logBuf
	o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&buf, t.Output()), nil))
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	return revocation.New(o), &buf
}

func check(t *testing.T, c *revocation.Checker, id *testpki.Identity, ca *testpki.CA) revocation.Result {
	t.Helper()
	return c.Check(context.Background(), id.Cert, ca.Cert)
}

func TestOCSP(t *testing.T) {
	ca := testpki.NewCA(t, "OCSP CA")
	r := newGoResponder(t, ca)
	good := r.issue(t, "good@example.org", true, false)
	bad := r.issue(t, "bad@example.org", true, false)
	r.set(func(r *goResponder) { r.status[bad.Cert.SerialNumber.String()] = ocsp.Revoked })
	c, _ := newChecker(t, revocation.Options{OCSP: true, CRL: true})

	if got := check(t, c, good, ca); got.State != revocation.Good || got.Method != revocation.MethodOCSP || got.URL != r.ocspURL() {
		t.Errorf("Check(good) = %+v, want good by OCSP from %s", got, r.ocspURL())
	}
	got := check(t, c, bad, ca)
	if got.State != revocation.Revoked || got.Reason != "keyCompromise" || got.RevokedAt.IsZero() {
		t.Errorf("Check(revoked) = %+v, want revoked, keyCompromise, with its time", got)
	}
	if until := time.Until(got.Until); until <= 0 || until > time.Hour {
		t.Errorf("Check(revoked).Until = %v from now, want within max_age (1h)", until)
	}
	check(t, c, good, ca)
	check(t, c, bad, ca)
	if n, _ := r.hits(); n != 2 {
		t.Errorf("the responder was asked %d times for 2 certificates checked twice each, want 2 (the answers are cached)", n)
	}
}

func TestOCSPConfiguredResponder(t *testing.T) {
	ca := testpki.NewCA(t, "OCSP CA")
	r := newGoResponder(t, ca)
	id := r.issue(t, "plain@example.org", false, false) // names no responder
	r.set(func(r *goResponder) { r.status[id.Cert.SerialNumber.String()] = ocsp.Revoked })
	c, _ := newChecker(t, revocation.Options{OCSP: true, OCSPResponder: r.ocspURL()})
	if got := check(t, c, id, ca); got.State != revocation.Revoked {
		t.Errorf("Check with a configured responder = %+v, want revoked", got)
	}
	plain, _ := newChecker(t, revocation.Options{OCSP: true, CRL: true})
	if got := check(t, plain, id, ca); got.State != revocation.NoSource {
		t.Errorf("Check of a certificate naming no source = %+v, want %s", got, revocation.NoSource)
	}
}

// TestOCSPRejected: answers that cannot be believed leave the state
// unknown, with a log line saying why, and are never taken as good.
func TestOCSPRejected(t *testing.T) {
	ca := testpki.NewCA(t, "OCSP CA")
	other := testpki.NewCA(t, "Another CA")
	noEKU := ca.Issue(t, "not-a-responder@example.org", nil)
	delegate := ca.Issue(t, "responder@example.org", &testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
	tests := []struct {
		name string
		set  func(r *goResponder)
		want string // in the log
	}{
		{"signed by the wrong key", func(r *goResponder) { r.signer = other.Key }, "OCSP response rejected"},
		{"signed by a certificate of the CA that is not a responder", func(r *goResponder) { r.signer, r.rcert = noEKU.Key, noEKU.Cert }, "did not authorize for OCSP signing"},
		{"signed by a responder of another CA", func(r *goResponder) {
			d := other.Issue(t, "r@example.org", &testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
			r.signer, r.rcert = d.Key, d.Cert
		}, "OCSP response rejected"},
		{"stale", func(r *goResponder) { r.next = -time.Hour }, "stale"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newGoResponder(t, ca)
			id := r.issue(t, "x@example.org", true, false)
			r.set(tc.set)
			c, log := newChecker(t, revocation.Options{OCSP: true})
			got := check(t, c, id, ca)
			if got.State != revocation.Unknown {
				t.Errorf("Check = %+v, want unknown", got)
			}
			if !strings.Contains(log.String(), tc.want) || !strings.Contains(log.String(), "nothing in it is used") {
				t.Errorf("log = %q, want a line saying the answer was rejected (%q)", log.String(), tc.want)
			}
		})
	}
	t.Run("a delegated responder", func(t *testing.T) {
		r := newGoResponder(t, ca)
		id := r.issue(t, "x@example.org", true, false)
		r.set(func(r *goResponder) {
			r.signer, r.rcert = delegate.Key, delegate.Cert
			r.status[id.Cert.SerialNumber.String()] = ocsp.Revoked
		})
		c, _ := newChecker(t, revocation.Options{OCSP: true})
		if got := check(t, c, id, ca); got.State != revocation.Revoked {
			t.Errorf("Check with an answer from the CA's delegated responder = %+v, want revoked", got)
		}
	})
}

func TestCRL(t *testing.T) {
	ca := testpki.NewCA(t, "CRL CA")
	r := newGoResponder(t, ca)
	good := r.issue(t, "good@example.org", false, true)
	bad := r.issue(t, "bad@example.org", false, true)
	r.set(func(r *goResponder) { r.crl = makeCRL(t, ca, ca.Key, 24*time.Hour, nil, bad.Cert) })
	c, _ := newChecker(t, revocation.Options{OCSP: true, CRL: true})
	if got := check(t, c, good, ca); got.State != revocation.Good || got.Method != revocation.MethodCRL {
		t.Errorf("Check(good) = %+v, want good by CRL", got)
	}
	if got := check(t, c, bad, ca); got.State != revocation.Revoked || got.Reason != "keyCompromise" {
		t.Errorf("Check(revoked) = %+v, want revoked by CRL, keyCompromise", got)
	}
	if _, n := r.hits(); n != 1 {
		t.Errorf("the CRL was downloaded %d times for two certificates, want once (cached until its next update)", n)
	}
}

func TestCRLRejected(t *testing.T) {
	ca := testpki.NewCA(t, "CRL CA")
	other := testpki.NewCA(t, "Another CA")
	tests := []struct {
		name string
		crl  func(revoked *x509.Certificate) []byte
		want string
	}{
		{"garbage", func(*x509.Certificate) []byte { return []byte("this is not a CRL") }, "does not parse"},
		{"signed by another CA", func(c *x509.Certificate) []byte { return makeCRL(t, other, other.Key, time.Hour, nil, c) }, "not by the certificate's issuer"},
		{"signed by the wrong key", func(c *x509.Certificate) []byte { return makeCRL(t, ca, other.Key, time.Hour, nil, c) }, "does not verify"},
		{"stale", func(c *x509.Certificate) []byte { return makeCRL(t, ca, ca.Key, -time.Hour, nil, c) }, "stale"},
		{"a delta CRL", func(c *x509.Certificate) []byte {
			return makeCRL(t, ca, ca.Key, time.Hour, []pkix.Extension{{Id: []int{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}}}, c)
		}, "delta"},
		{"for CA certificates only", func(c *x509.Certificate) []byte {
			return makeCRL(t, ca, ca.Key, time.Hour, []pkix.Extension{{Id: []int{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 3, 0x82, 1, 0xff}}}, c)
		}, "only CA"},
		{"an unknown critical extension", func(c *x509.Certificate) []byte {
			return makeCRL(t, ca, ca.Key, time.Hour, []pkix.Extension{{Id: []int{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}}, c)
		}, "not understood"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newGoResponder(t, ca)
			id := r.issue(t, "x@example.org", false, true)
			r.set(func(r *goResponder) { r.crl = tc.crl(id.Cert) })
			c, log := newChecker(t, revocation.Options{CRL: true})
			if got := check(t, c, id, ca); got.State != revocation.Unknown || !strings.Contains(got.Reason, tc.want) {
				t.Errorf("Check = %+v, want unknown, because %q", got, tc.want)
			}
			if !strings.Contains(log.String(), "CRL rejected; nothing in it is used") {
				t.Errorf("log = %q, want a line saying the CRL was rejected", log.String())
			}
		})
	}
}

// TestFallBackToCRL: a responder that is down leaves the CRL to answer.
func TestFallBackToCRL(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	r := newGoResponder(t, ca)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	id := ca.Issue(t, "x@example.org", &testpki.Options{Key: "p256", OCSPServer: []string{down.URL}, CRLDistributionPoints: []string{r.crlURL()}})
	r.set(func(r *goResponder) { r.crl = makeCRL(t, ca, ca.Key, time.Hour, nil, id.Cert) })
	c, _ := newChecker(t, revocation.Options{OCSP: true, CRL: true})
	if got := check(t, c, id, ca); got.State != revocation.Revoked || got.Method != revocation.MethodCRL {
		t.Errorf("Check with the responder down = %+v, want revoked by the CRL", got)
	}
}

// TestSlowResponder: a responder that never answers costs one timeout;
// until Retry has passed, the next check does not ask it again.
func TestSlowResponder(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	r := newGoResponder(t, ca)
	r.set(func(r *goResponder) { r.block = make(chan struct{}) })
	id := r.issue(t, "x@example.org", true, false)
	other := r.issue(t, "y@example.org", true, false)
	now := time.Now()
	clock := func() time.Time { return now }
	c, log := newChecker(t, revocation.Options{OCSP: true, Timeout: 200 * time.Millisecond, Retry: time.Minute, Now: clock})
	got := check(t, c, id, ca)
	if got.State != revocation.Unknown || !strings.Contains(got.Reason, "no answer within 200ms") {
		t.Errorf("Check with a silent responder = %+v, want unknown after the timeout", got)
	}
	if !strings.Contains(log.String(), "OCSP responder did not answer") {
		t.Errorf("log = %q, want a line about the responder", log.String())
	}
	if got := check(t, c, other, ca); got.State != revocation.Unknown || !strings.Contains(got.Reason, "failed recently") {
		t.Errorf("Check of another certificate at the same responder = %+v, want unknown without asking", got)
	}
	if n, _ := r.hits(); n != 1 {
		t.Errorf("the silent responder was asked %d times, want once", n)
	}
	r.set(func(r *goResponder) { close(r.block); r.block = nil })
	now = now.Add(2 * time.Minute)
	if got := check(t, c, other, ca); got.State != revocation.Good {
		t.Errorf("Check after the retry period, with the responder back = %+v, want good", got)
	}
}

// TestOpenSSL checks against the real `openssl ocsp` responder and an
// `openssl ca -gencrl` CRL.
func TestOpenSSL(t *testing.T) {
	ca := testpki.NewCA(t, "OpenSSL CA")
	rt := revtest.New(t, ca)
	good := rt.Issue(t, "good@example.org", p256)
	bad := rt.Issue(t, "bad@example.org", p256)
	rt.Revoke(bad.Cert, "keyCompromise")
	rt.Start(t)
	ocspOnly, _ := newChecker(t, revocation.Options{OCSP: true})
	crlOnly, _ := newChecker(t, revocation.Options{CRL: true})
	for _, tc := range []struct {
		name   string
		c      *revocation.Checker
		method string
	}{{"ocsp", ocspOnly, revocation.MethodOCSP}, {"crl", crlOnly, revocation.MethodCRL}} {
		if got := check(t, tc.c, good, ca); got.State != revocation.Good || got.Method != tc.method {
			t.Errorf("%s: Check(good) = %+v, want good", tc.name, got)
		}
		if got := check(t, tc.c, bad, ca); got.State != revocation.Revoked || got.Reason != "keyCompromise" || got.Method != tc.method {
			t.Errorf("%s: Check(revoked) = %+v, want revoked, keyCompromise", tc.name, got)
		}
	}
	if o, c := rt.Hits(); o != 2 || c != 1 {
		t.Errorf("openssl's responder was asked %d times and its CRL downloaded %d times, want 2 and 1", o, c)
	}
}
