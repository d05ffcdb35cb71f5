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
// infos into a ContentInfo. The content is large and the rest small, so the
// DER is written by hand into one buffer of its exact size, the ciphertext
// encrypted straight into it.
func envelope(ci cipherInfo, cek, content []byte, version int64, infos [][]byte) ([]byte, error) {
	s, err := newSealer(ci, cek)
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: %w", err)
	}
	contentType := oidEnvelopedData
	if ci.cipher.AEAD() {
		contentType, version = oidAuthEnvelopedData, 0
	}
	// What comes before the EncryptedContentInfo, inside it before the
	// ciphertext, and the ContentInfo's content type.
	head, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1Int64(version)
		addSetOf(b, cbasn1.SET, infos)
	})
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: encode: %w", err)
	}
	eciHead, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidData)
		addAlgorithm(b, ci.oid, s.params)
	})
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: encode: %w", err)
	}
	typeOID, err := build(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(contentType) })
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: encode: %w", err)
	}
	ctLen := s.size(len(content))
	tagLen := 0 // the OCTET STRING of the AEAD tag
	if ci.cipher.AEAD() {
		tagLen = elementLen(gcmTagSize)
	}
	eciLen := len(eciHead) + elementLen(ctLen)
	dataLen := len(head) + elementLen(eciLen) + tagLen
	ciLen := len(typeOID) + elementLen(elementLen(dataLen))

	out := make([]byte, 0, elementLen(ciLen))
	out = appendHeader(out, cbasn1.SEQUENCE, ciLen)
	out = append(out, typeOID...)
	out = appendHeader(out, constructedTag(0), elementLen(dataLen))
	out = appendHeader(out, cbasn1.SEQUENCE, dataLen)
	out = append(out, head...)
	out = appendHeader(out, cbasn1.SEQUENCE, eciLen)
	out = append(out, eciHead...)
	out = appendHeader(out, implicitTag(0), ctLen)
	out, tag := s.seal(out, content)
	if tag != nil {
		out = appendHeader(out, cbasn1.OCTET_STRING, len(tag))
		out = append(out, tag...)
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
