package demo

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/keystore"
)

// PKI is a demo certificate authority with an S/MIME identity per user.
type PKI struct {
	CA         *x509.Certificate
	caKey      *rsa.PrivateKey
	Identities map[string]Identity
}

// Identity is one user's key and certificate.
type Identity struct {
	Cert *x509.Certificate
	Key  *rsa.PrivateKey
}

// NewPKI makes the CA and an identity for each address, valid for a year.
func NewPKI(addrs []string) (*PKI, error) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("demo: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smimeproxy demo CA", Organization: []string{"smimeproxy demo"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	ca, err := create(tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, caKey: caKey, Identities: map[string]Identity{}}
	for i, addr := range addrs {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("demo: key for %s: %w", addr, err)
		}
		cert, err := create(&x509.Certificate{
			SerialNumber:   big.NewInt(int64(i + 2)),
			Subject:        pkix.Name{CommonName: addr, Organization: []string{"smimeproxy demo"}},
			EmailAddresses: []string{addr},
			NotBefore:      now.Add(-time.Hour),
			NotAfter:       now.AddDate(1, 0, 0),
			KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		}, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		p.Identities[addr] = Identity{Cert: cert, Key: key}
	}
	return p, nil
}

func create(tmpl, parent *x509.Certificate, pub *rsa.PublicKey, key *rsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("demo: certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// Install puts every identity into the keystore, trusts the CA and adds every
// user's certificate to the cache, so that the users can write to each other
// encrypted from the first message.
func (p *PKI) Install(ks *keystore.Store, cc *certcache.Cache) error {
	if err := cc.Trust(p.CA); err != nil {
		return err
	}
	for addr, id := range p.Identities {
		// A throwaway password: the file only carries the key into the keystore.
		p12, err := pkcs12.Modern.Encode(id.Key, id.Cert, nil, "demo")
		if err != nil {
			return fmt.Errorf("demo: package the key of %s: %w", addr, err)
		}
		if _, err := ks.ImportPKCS12(p12, "demo"); err != nil {
			return fmt.Errorf("demo: import the key of %s: %w", addr, err)
		}
		if _, err := cc.Add(id.Cert, nil); err != nil {
			return fmt.Errorf("demo: add the certificate of %s: %w", addr, err)
		}
	}
	return nil
}
