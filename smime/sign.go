package smime

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"smimeproxy/cms"
)

// Identity is a signer: a certificate with its private key, the
// intermediates up to (not including) the root, and optionally a separate
// encryption certificate to advertise.
type Identity struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
	// EncryptionCert is the certificate others should encrypt to; nil or the
	// same as Cert when there is no separate one.
	EncryptionCert *x509.Certificate
}

// SignOptions tune Sign; nil means the defaults.
type SignOptions struct {
	Opaque bool        // application/pkcs7-mime signed-data instead of multipart/signed
	Hash   crypto.Hash // SHA256 (default), SHA384 or SHA512
	Time   time.Time   // the signingTime attribute; zero: now
	// Capabilities is the SMIMECapabilities attribute; nil: cms.DefaultCapabilities.
	Capabilities []cms.Capability
	PSS          bool // RSASSA-PSS for RSA keys
	// Limits bound the message; nil: DefaultLimits. A message that would
	// be past them once signed (multipart/signed adds a level and two
	// parts) is refused with a *LimitError.
	Limits *Limits
	// HeaderProtection puts the header fields inside the signature too
	// (RFC 9788): ProtectClear for mail that is only signed, ProtectCipher
	// for mail that Encrypt wraps next (whose outer header Sign then
	// obscures already). Content that is already S/MIME cannot have it.
	HeaderProtection HeaderProtection
}

// micalgs names the hashes for multipart/signed (RFC 8551 3.5.3.2).
var micalgs = map[crypto.Hash]string{
	crypto.SHA256: "sha-256",
	crypto.SHA384: "sha-384",
	crypto.SHA512: "sha-512",
}

// newBoundary makes a multipart boundary; tests replace it for golden files.
// "=_" cannot occur in base64 or quoted-printable output (RFC 2045 6.7).
var newBoundary = func() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "----=_smime_" + hex.EncodeToString(b[:])
}

// Sign signs the RFC 5322 message msg as id. The content fields
// (Content-*) and the body become the signed entity, in canonical, 7-bit safe
// form; every other header field stays outside, in order and unchanged except
// that line breaks become CRLF. MIME-Version: 1.0 is added when missing.
// The result is multipart/signed, or application/pkcs7-mime when opts.Opaque.
func Sign(msg []byte, id *Identity, opts *SignOptions) ([]byte, error) {
	s, err := SignMessage(msg, id, opts)
	if err != nil {
		return nil, err
	}
	return s.Bytes(), nil
}

// SignedMessage is a message that SignMessage made, which knows where its
// outer header ends, so that encrypting it next needs no second reading:
// what Sign writes is canonical already.
type SignedMessage struct {
	msg    []byte
	header int // msg[:header] is the outer header, MIME-Version included
}

// Bytes returns the signed message, as Sign does.
func (s *SignedMessage) Bytes() []byte { return s.msg }

// SignMessage is Sign for a message that may be encrypted next: its result
// encrypts with SignedMessage.Encrypt, which gives what Encrypt(Sign(msg))
// gives without reading and canonicalising the signed message again.
func SignMessage(msg []byte, id *Identity, opts *SignOptions) (*SignedMessage, error) {
	if id == nil || id.Cert == nil || id.Key == nil {
		return nil, errors.New("smime: sign: identity without certificate or key")
	}
	if opts == nil {
		opts = &SignOptions{}
	}
	hash := opts.Hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	micalg, ok := micalgs[hash]
	if !ok {
		return nil, fmt.Errorf("smime: sign: unsupported hash %v", hash)
	}
	wrap := 1 // multipart/signed holds the message one level down
	if opts.Opaque {
		wrap = 0
	}
	p, err := prepare(msg, opts.Limits, wrap, opts.HeaderProtection)
	if err != nil {
		return nil, err // ErrMalformed, a *LimitError or errProtectedContent, which name the package already
	}
	copts := &cms.SignOptions{
		Hash:         hash,
		Detached:     !opts.Opaque,
		Certificates: id.Chain,
		SigningTime:  opts.Time,
		Capabilities: opts.Capabilities,
		PSS:          opts.PSS,
	}
	if ec := id.EncryptionCert; ec != nil && !ec.Equal(id.Cert) {
		copts.Certificates = append([]*x509.Certificate{ec}, id.Chain...)
		copts.EncryptionKeyPreference = ec
	}
	var b bytes.Buffer
	if opts.Opaque {
		der, err := cms.Sign(p.content(), id.Cert, id.Key, copts)
		if err != nil {
			return nil, fmt.Errorf("smime: sign: %w", err)
		}
		b.Grow(p.outerSize() + 256 + base64Len(len(der)))
		header := p.writeOuter(&b,
			"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
			"Content-Transfer-Encoding: base64",
			"Content-Disposition: attachment; filename=smime.p7m")
		b.Write(appendBase64(b.AvailableBuffer(), der))
		b.WriteString("\r\n")
		return &SignedMessage{msg: b.Bytes(), header: header}, nil
	}

	// The entity is written once, where it goes in the message, and
	// signed there. The signature adds the certificates, and at most a
	// few kilobytes of attributes, names and signature value.
	derSize := len(id.Cert.Raw) + 4096
	for _, c := range copts.Certificates {
		derSize += len(c.Raw)
	}
	boundary := newBoundary()
	b.Grow(p.outerSize() + p.size + 1024 + base64Len(derSize))
	header := p.writeOuter(&b,
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg="+micalg+";\r\n\tboundary=\""+boundary+"\"")
	b.WriteString("This is a cryptographically signed message in MIME format.\r\n\r\n")
	b.WriteString("--" + boundary + "\r\n")
	start := b.Len()
	p.writeContent(&b)
	content := b.Bytes()[start:]
	if bytes.Contains(content, []byte("--"+boundary)) {
		return nil, errors.New("smime: sign: boundary occurs in the content")
	}
	der, err := cms.Sign(content, id.Cert, id.Key, copts)
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=smime.p7s\r\n" +
		"Content-Description: S/MIME Cryptographic Signature\r\n\r\n")
	b.Write(appendBase64(b.AvailableBuffer(), der))
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return &SignedMessage{msg: b.Bytes(), header: header}, nil
}
