package revocation_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"smimeproxy/revocation"
)

func readCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestFixtures: what OpenSSL made verifies and says what it should.
func TestFixtures(t *testing.T) {
	ca, good, revoked := readCert(t, "ca.pem"), readCert(t, "good.pem"), readCert(t, "revoked.pem")
	now := time.Now()
	for _, tc := range []struct {
		file string
		cert *x509.Certificate
		want int
	}{{"ocsp-good.der", good, ocsp.Good}, {"ocsp-revoked.der", revoked, ocsp.Revoked}} {
		resp, err := revocation.VerifyOCSP(readFile(t, tc.file), tc.cert, ca, now, time.Hour)
		if err != nil || resp.Status != tc.want {
			t.Errorf("VerifyOCSP(%s) = %v, %v, want status %d", tc.file, resp, err, tc.want)
		}
	}
	if _, err := revocation.VerifyOCSP(readFile(t, "ocsp-good.der"), revoked, ca, now, time.Hour); err == nil {
		t.Error("VerifyOCSP(the answer about another certificate) = nil error, want one")
	}
	for _, file := range []string{"ca.crl", "ca-idp.crl"} {
		rl, err := revocation.VerifyCRL(readFile(t, file), ca, now)
		if err != nil {
			t.Errorf("VerifyCRL(%s) = %v", file, err)
			continue
		}
		if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(revoked.SerialNumber) != 0 {
			t.Errorf("VerifyCRL(%s) lists %v, want only serial %v", file, rl.RevokedCertificateEntries, revoked.SerialNumber)
		}
	}
}

// FuzzVerifyOCSP: no answer a responder sends makes VerifyOCSP panic, and
// none it accepts is about another certificate.
func FuzzVerifyOCSP(f *testing.F) {
	ca, good := readCert(f, "ca.pem"), readCert(f, "good.pem")
	for _, name := range []string{"ocsp-good.der", "ocsp-revoked.der"} {
		f.Add(readFile(f, name))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := revocation.VerifyOCSP(data, good, ca, now, time.Hour)
		if err == nil && resp.SerialNumber.Cmp(good.SerialNumber) != 0 {
			t.Errorf("VerifyOCSP accepted an answer about serial %v for %v", resp.SerialNumber, good.SerialNumber)
		}
	})
}

// FuzzVerifyCRL: no CRL a server sends makes VerifyCRL panic.
func FuzzVerifyCRL(f *testing.F) {
	ca := readCert(f, "ca.pem")
	for _, name := range []string{"ca.crl", "ca-idp.crl"} {
		f.Add(readFile(f, name))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = revocation.VerifyCRL(data, ca, now)
	})
}
