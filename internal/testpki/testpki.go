// Package testpki makes certificate authorities and S/MIME identities for
// tests, and writes them as PEM files for real peers such as openssl and gpgsm.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

var serial atomic.Int64

// CA is a certificate authority that issues test certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is the path from this CA up to, but not including, the root.
	Chain []*x509.Certificate
	root  *x509.Certificate
}

// Identity is an end-entity certificate with its key and the intermediates
// between it and the root.
type Identity struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// Options tune an issued certificate. The zero value makes an RSA-2048
// certificate for email protection, valid from an hour ago for a year.
type Options struct {
	// Key is "rsa2048" (default), "rsa3072", "rsa4096", "p256", "p384" or "p521".
	Key string
	// PublicKey certifies an existing key instead of generating one (Key is
	// then ignored and Identity.Key is nil).
	PublicKey          crypto.PublicKey
	NotBefore          time.Time
	NotAfter           time.Time
	KeyUsage           x509.KeyUsage      // zero: digitalSignature plus the key's encipherment usage
	ExtKeyUsage        []x509.ExtKeyUsage // nil: emailProtection
	NoSAN              bool               // leave the address out of subjectAltName
	SubjectEmail       bool               // also put the address in the subject's emailAddress
	CommonName         string             // default: the address
	SignatureAlgorithm x509.SignatureAlgorithm
	// OCSPServer and CRLDistributionPoints are where revocation is checked.
	OCSPServer            []string
	CRLDistributionPoints []string
}

// NewKey generates a key of the named type ("rsa2048", "p256", ...).
func NewKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "", "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "rsa4096":
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		t.Fatalf("testpki: unknown key type %q", kind)
	}
	if err != nil {
		t.Fatalf("testpki: generate %s key: %v", kind, err)
	}
	return k
}

// NewCA makes a self-signed root CA with an RSA-2048 key.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := NewKey(t, "rsa2048")
	tmpl := caTemplate(name)
	cert := create(t, tmpl, tmpl, key.Public(), key)
	return &CA{Cert: cert, Key: key, root: cert}
}

// Intermediate makes a CA certified by ca.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	key := NewKey(t, "rsa2048")
	cert := create(t, caTemplate(name), ca.Cert, key.Public(), ca.Key)
	chain := append([]*x509.Certificate{cert}, ca.Chain...)
	return &CA{Cert: cert, Key: key, Chain: chain, root: ca.root}
}

// Root returns the self-signed certificate at the top of ca's chain.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Pool returns a pool holding only the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// Issue certifies a new key for the email address.
func (ca *CA) Issue(t testing.TB, email string, opts *Options) *Identity {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	var key crypto.Signer
	pub := opts.PublicKey
	if pub == nil {
		key = NewKey(t, opts.Key)
		pub = key.Public()
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(serial.Add(1) + 1000),
		Subject:            pkix.Name{CommonName: email, Organization: []string{"smimeproxy tests"}},
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(365 * 24 * time.Hour),
		KeyUsage:           opts.KeyUsage,
		ExtKeyUsage:        opts.ExtKeyUsage,
		SignatureAlgorithm: opts.SignatureAlgorithm,
		SubjectKeyId:       keyID(t, pub),

		OCSPServer:            opts.OCSPServer,
		CRLDistributionPoints: opts.CRLDistributionPoints,
	}
	if opts.CommonName != "" {
		tmpl.Subject.CommonName = opts.CommonName
	}
	if !opts.NotBefore.IsZero() {
		tmpl.NotBefore = opts.NotBefore
	}
	if !opts.NotAfter.IsZero() {
		tmpl.NotAfter = opts.NotAfter
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if _, ok := pub.(*rsa.PublicKey); ok {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		} else {
			tmpl.KeyUsage |= x509.KeyUsageKeyAgreement
		}
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	if !opts.NoSAN {
		tmpl.EmailAddresses = []string{email}
	}
	if opts.SubjectEmail {
		tmpl.Subject.ExtraNames = append(tmpl.Subject.ExtraNames, pkix.AttributeTypeAndValue{
			Type: []int{1, 2, 840, 113549, 1, 9, 1}, Value: email,
		})
	}
	cert := create(t, tmpl, ca.Cert, pub, ca.Key)
	chain := append([]*x509.Certificate{}, ca.chainToRoot()...)
	return &Identity{Cert: cert, Key: key, Chain: chain}
}

// chainToRoot is ca itself (when it is not the root) and its own chain.
func (ca *CA) chainToRoot() []*x509.Certificate {
	if ca.Cert == ca.root {
		return nil
	}
	return append([]*x509.Certificate{ca.Cert}, ca.Chain[1:]...)
}

func caTemplate(name string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1) + 1000),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"smimeproxy tests"}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("testpki: create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse certificate: %v", err)
	}
	return cert
}

func keyID(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("testpki: marshal public key: %v", err)
	}
	sum := sha1.Sum(der)
	return sum[:]
}

// CertPEM encodes certificates as PEM.
func CertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as unencrypted PKCS #8 PEM.
func KeyPEM(t testing.TB, key crypto.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFile writes data to name in dir with mode 0600 and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteIdentity writes id's certificate, key and chain as PEM files into dir,
// named after base, and returns their paths.
func WriteIdentity(t testing.TB, dir, base string, id *Identity) (certFile, keyFile, chainFile string) {
	t.Helper()
	certFile = WriteFile(t, dir, base+".crt", CertPEM(id.Cert))
	keyFile = WriteFile(t, dir, base+".key", KeyPEM(t, id.Key))
	chainFile = WriteFile(t, dir, base+".chain.pem", CertPEM(id.Chain...))
	return certFile, keyFile, chainFile
}
