package cms

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Encrypt makes an EnvelopedData (or AuthEnvelopedData) ContentInfo (DER)
// that each recipient can open: RSA certificates by key transport, EC
// certificates by ephemeral-static ECDH key agreement (RFC 5753).
func Encrypt(content []byte, recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	if opts == nil {
		opts = &EncryptOptions{}
	}
	if len(recipients) == 0 {
		return nil, errors.New("cms: encrypt: no recipients")
	}
	ci, ok := opts.Cipher.info()
	if !ok || ci.wrap == nil {
		return nil, fmt.Errorf("cms: encrypt: %v is not a cipher to encrypt with", opts.Cipher)
	}
	cek := make([]byte, ci.keyLen)
	rand.Read(cek)

	// Version 0 needs every recipient to be a ktri named by issuer and
	// serial (RFC 5652 6.1); otherwise 2.
	version := int64(0)
	var infos [][]byte
	for _, cert := range recipients {
		if cert == nil {
			return nil, errors.New("cms: encrypt: nil recipient certificate")
		}
		info, v0, err := recipientInfo(cert, cek, ci, opts)
		if err != nil {
			return nil, fmt.Errorf("cms: encrypt to %q: %w", cert.Subject.String(), err)
		}
		if !v0 {
			version = 2
		}
		infos = append(infos, info)
	}

	return envelope(ci, cek, content, version, infos)
}

// envelope encrypts content under cek and wraps it with the recipient
// infos into a ContentInfo.
func envelope(ci cipherInfo, cek, content []byte, version int64, infos [][]byte) ([]byte, error) {
	sealed, err := seal(ci, cek, content)
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: %w", err)
	}
	contentType := oidEnvelopedData
	if ci.cipher.AEAD() {
		contentType, version = oidAuthEnvelopedData, 0
	}
	out, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(contentType)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(version)
					addSetOf(b, cbasn1.SET, infos)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidData)
						addAlgorithm(b, ci.oid, sealed.params)
						b.AddASN1(implicitTag(0), func(b *cryptobyte.Builder) { b.AddBytes(sealed.ciphertext) })
					})
					if ci.cipher.AEAD() {
						b.AddASN1OctetString(sealed.tag)
					}
				})
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: encode: %w", err)
	}
	return out, nil
}

// recipientInfo makes the RecipientInfo for cert, and reports whether it is
// a version 0 ktri.
func recipientInfo(cert *x509.Certificate, cek []byte, ci cipherInfo, opts *EncryptOptions) ([]byte, bool, error) {
	id := certIDOf(cert, opts.SubjectKeyID)
	key := cert.PublicKey
	if key == nil {
		// crypto/x509 leaves X25519 keys out of certificates, but parses them alone.
		key, _ = x509.ParsePKIXPublicKey(cert.RawSubjectPublicKeyInfo)
	}
	switch pub := key.(type) {
	case *rsa.PublicKey:
		alg, ek, err := keyTransport(pub, cek, opts.OAEP)
		if err != nil {
			return nil, false, err
		}
		v0 := id.SubjectKeyID == nil
		info, err := build(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if v0 {
					b.AddASN1Int64(0)
				} else {
					b.AddASN1Int64(2)
				}
				addCertID(b, id)
				addAlgorithm(b, alg.oid, alg.params)
				b.AddASN1OctetString(ek)
			})
		})
		return info, v0, err
	case *ecdsa.PublicKey:
		ep, err := pub.ECDH()
		if err != nil {
			return nil, false, &UnsupportedError{What: "EC curve " + pub.Curve.Params().Name}
		}
		info, err := keyAgreement(ep, id, cek, ci.wrap)
		return info, false, err
	case *ecdh.PublicKey:
		info, err := keyAgreement(pub, id, cek, ci.wrap)
		return info, false, err
	}
	return nil, false, &UnsupportedError{What: fmt.Sprintf("recipient key type %T", key)}
}
