package cms_test

import (
	"bytes"
	"crypto/x509"
	"testing"

	"smimeproxy/cms"
)

var payload64K = bytes.Repeat([]byte("0123456789abcdef"), 4096)

func BenchmarkSign64KRSA2048(b *testing.B) {
	p := fixtures(b)
	b.SetBytes(int64(len(payload64K)))
	for b.Loop() {
		if _, err := cms.Sign(payload64K, p.rsa.Cert, p.rsa.Key, &cms.SignOptions{Detached: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify64KRSA2048(b *testing.B) {
	p := fixtures(b)
	der, err := cms.Sign(payload64K, p.rsa.Cert, p.rsa.Key, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload64K)))
	for b.Loop() {
		sd, err := cms.ParseSignedData(der)
		if err != nil {
			b.Fatal(err)
		}
		if err := sd.Verify(sd.Signers[0], p.rsa.Cert, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt64K(b *testing.B) {
	p := fixtures(b)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(payload64K)))
			for b.Loop() {
				if _, err := cms.Encrypt(payload64K, []*x509.Certificate{p.rsa.Cert}, &cms.EncryptOptions{Cipher: c}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt64K(b *testing.B) {
	p := fixtures(b)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		b.Run(c.String(), func(b *testing.B) {
			der, err := cms.Encrypt(payload64K, []*x509.Certificate{p.rsa.Cert}, &cms.EncryptOptions{Cipher: c})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload64K)))
			for b.Loop() {
				env, err := cms.ParseEnvelope(der)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := env.Decrypt(p.rsa.Cert, p.rsa.Key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
