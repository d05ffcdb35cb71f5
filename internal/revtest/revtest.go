// Package revtest gives tests a real OpenSSL OCSP responder (`openssl
// ocsp`) and a CRL made by `openssl ca -gencrl`, both for a test CA and
// both from one index of its certificates, served on a loopback HTTP
// server of the test: /ocsp reaches the responder, /ca.crl the CRL. The
// URLs are known before the responder starts, so that certificates can
// name them.
package revtest

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// Responder is the test CA's OCSP responder and CRL.
type Responder struct {
	OCSPURL string // the responder, through the test's server
	CRLURL  string // the CRL, DER

	ca      *testpki.CA
	openssl string
	dir     string

	mu      sync.Mutex
	certs   []entry
	target  *url.URL // the running openssl ocsp
	crl     []byte
	stop    func()
	ocspHit int
	crlHit  int
}

type entry struct {
	cert    *x509.Certificate
	revoked time.Time // zero: valid
	reason  string
}

// New makes the server for ca; Start starts the responder behind it.
// Everything stops when the test ends.
func New(t testing.TB, ca *testpki.CA) *Responder {
	t.Helper()
	r := &Responder{ca: ca, openssl: testutil.NeedTool(t, "openssl"), dir: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.OCSPURL, r.CRLURL = srv.URL+"/ocsp", srv.URL+"/ca.crl"
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stop != nil {
			r.stop()
		}
	})
	return r
}

// Options are what a certificate checked by this responder names.
func (r *Responder) Options() *testpki.Options {
	return &testpki.Options{OCSPServer: []string{r.OCSPURL}, CRLDistributionPoints: []string{r.CRLURL}}
}

// Issue issues a certificate for email that names the responder and the
// CRL, and lists it in the index as valid; opts may be nil.
func (r *Responder) Issue(t testing.TB, email string, opts *testpki.Options) *testpki.Identity {
	t.Helper()
	o := r.Options()
	if opts != nil {
		c := *opts
		c.OCSPServer, c.CRLDistributionPoints = o.OCSPServer, o.CRLDistributionPoints
		o = &c
	}
	id := r.ca.Issue(t, email, o)
	r.mu.Lock()
	r.certs = append(r.certs, entry{cert: id.Cert})
	r.mu.Unlock()
	return id
}

// Revoke lists cert as revoked (reason as openssl names it, such as
// keyCompromise) from an hour ago. Call Start after.
func (r *Responder) Revoke(cert *x509.Certificate, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.certs {
		if r.certs[i].cert.Equal(cert) {
			r.certs[i].revoked, r.certs[i].reason = time.Now().Add(-time.Hour), reason
			return
		}
	}
	r.certs = append(r.certs, entry{cert: cert, revoked: time.Now().Add(-time.Hour), reason: reason})
}

// Hits says how many requests reached the responder and the CRL.
func (r *Responder) Hits() (ocsp, crl int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ocspHit, r.crlHit
}

// Start writes the index and the CRL and (re)starts `openssl ocsp` on it:
// the responder reads its index once.
func (r *Responder) Start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	caPEM := testpki.WriteFile(t, r.dir, "ca.pem", testpki.CertPEM(r.ca.Cert))
	caKey := testpki.WriteFile(t, r.dir, "ca.key", testpki.KeyPEM(t, r.ca.Key))
	var idx strings.Builder
	for _, e := range r.certs {
		serial := fmt.Sprintf("%X", e.cert.SerialNumber)
		if len(serial)%2 == 1 {
			serial = "0" + serial
		}
		exp := e.cert.NotAfter.UTC().Format("060102150405Z")
		if e.revoked.IsZero() {
			fmt.Fprintf(&idx, "V\t%s\t\t%s\tunknown\t/CN=%s\n", exp, serial, e.cert.Subject.CommonName)
		} else {
			fmt.Fprintf(&idx, "R\t%s\t%s,%s\t%s\tunknown\t/CN=%s\n", exp, e.revoked.UTC().Format("060102150405Z"), e.reason, serial, e.cert.Subject.CommonName)
		}
	}
	index := testpki.WriteFile(t, r.dir, "index.txt", []byte(idx.String()))
	testpki.WriteFile(t, r.dir, "index.txt.attr", []byte("unique_subject = no\n"))
	testpki.WriteFile(t, r.dir, "crlnumber", []byte("01\n"))
	cnf := testpki.WriteFile(t, r.dir, "ca.cnf", []byte("[ca]\ndefault_ca = test\n[test]\ndatabase = "+index+
		"\ncrlnumber = "+filepath.Join(r.dir, "crlnumber")+"\ndefault_md = sha256\ndefault_crl_days = 1\n"))
	crlPEM := filepath.Join(r.dir, "ca.crl.pem")
	r.run(t, "ca", "-gencrl", "-config", cnf, "-keyfile", caKey, "-cert", caPEM, "-out", crlPEM)
	crlDER := filepath.Join(r.dir, "ca.crl")
	r.run(t, "crl", "-in", crlPEM, "-outform", "DER", "-out", crlDER)
	var err error
	if r.crl, err = os.ReadFile(crlDER); err != nil {
		t.Fatal(err)
	}

	if r.stop != nil {
		r.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, r.openssl, "ocsp", "-index", index, "-CA", caPEM, "-rsigner", caPEM, "-rkey", caKey,
		"-port", "0", "-nmin", "60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("openssl ocsp: %v", err)
	}
	r.stop = func() { cancel(); _ = cmd.Wait() }
	// It prints "ACCEPT [::]:PORT PID=..." once it listens.
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		re := regexp.MustCompile(`ACCEPT .*:(\d+) `)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
			}
		}
	}()
	select {
	case p := <-port:
		r.target = &url.URL{Scheme: "http", Host: "127.0.0.1:" + p}
	case <-time.After(10 * time.Second):
		t.Fatal("openssl ocsp did not start listening within 10s")
	}
}

func (r *Responder) run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(r.openssl, args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (r *Responder) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	target, crl := r.target, r.crl
	switch req.URL.Path {
	case "/ocsp":
		r.ocspHit++
	case "/ca.crl":
		r.crlHit++
	}
	r.mu.Unlock()
	switch {
	case req.URL.Path == "/ca.crl" && crl != nil:
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(crl)
	case req.URL.Path == "/ocsp" && target != nil:
		req.URL.Path = "/"
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, req)
	default:
		http.NotFound(w, req)
	}
}
