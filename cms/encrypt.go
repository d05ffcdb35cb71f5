package cms

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Encrypt makes an EnvelopedData (or AuthEnvelopedData) ContentInfo (DER)
// that each recipient can open: RSA certificates by key transport, EC
// certificates by ephemeral-static ECDH key agreement (RFC 5753).
func Encrypt(content []byte, recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	s, err := Seal(content, recipients, opts)
	if err != nil {
		return nil, err
	}
	return s.bytes(), nil
}

// Sealed is what Encrypt makes, before it is written: the recipients have
// their keys, and WriteTo writes the DER, Len bytes, encrypting the content
// on the way, so that the ciphertext of a CBC cipher is never held whole.
// The content must not change until then.
type Sealed struct {
	s       *sealer
	content []byte
	head    []byte // the DER before the ciphertext
	ctLen   int
	size    int
}

// Seal is Encrypt that leaves the writing to Sealed.WriteTo.
func Seal(content []byte, recipients []*x509.Certificate, opts *EncryptOptions) (*Sealed, error) {
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
	return seal(ci, cek, content, version, infos)
}

// envelope encrypts content under cek and wraps it with the recipient
// infos into a ContentInfo.
func envelope(ci cipherInfo, cek, content []byte, version int64, infos [][]byte) ([]byte, error) {
	s, err := seal(ci, cek, content, version, infos)
	if err != nil {
		return nil, err
	}
	return s.bytes(), nil
}

// seal prepares the envelope of content, encrypted under cek, with the
// recipient infos. The content is large and the rest small, so the DER is
// written by hand: its lengths are all known before encrypting.
func seal(ci cipherInfo, cek, content []byte, version int64, infos [][]byte) (*Sealed, error) {
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

	out := appendHeader(nil, cbasn1.SEQUENCE, ciLen)
	out = append(out, typeOID...)
	out = appendHeader(out, constructedTag(0), elementLen(dataLen))
	out = appendHeader(out, cbasn1.SEQUENCE, dataLen)
	out = append(out, head...)
	out = appendHeader(out, cbasn1.SEQUENCE, eciLen)
	out = append(out, eciHead...)
	out = appendHeader(out, implicitTag(0), ctLen)
	return &Sealed{s: s, content: content, head: out, ctLen: ctLen, size: elementLen(ciLen)}, nil
}

// Len is the length of the DER that WriteTo writes.
func (e *Sealed) Len() int { return e.size }

// WriteTo writes the DER to w.
func (e *Sealed) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(e.head)
	total := int64(n)
	if err != nil {
		return total, err
	}
	m, tag, err := e.s.writeTo(w, e.content)
	total += m
	if err != nil || tag == nil {
		return total, err
	}
	n, err = w.Write(append(appendHeader(nil, cbasn1.OCTET_STRING, len(tag)), tag...))
	return total + int64(n), err
}

// bytes writes the DER into a buffer of its exact size.
func (e *Sealed) bytes() []byte {
	b := bytes.NewBuffer(make([]byte, 0, e.size))
	_, _ = e.WriteTo(b) // a bytes.Buffer takes every write
	return b.Bytes()
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
