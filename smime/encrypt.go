package smime

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"

	"smimeproxy/cms"
)

// EncryptOptions tune Encrypt; nil means the defaults.
type EncryptOptions struct {
	Cipher cms.Cipher // cms.AES256CBC by default; GCM makes authEnveloped-data
	OAEP   bool       // RSAES-OAEP for RSA recipients
	// Limits bound the message; nil: DefaultLimits. A message past them is
	// refused with a *LimitError.
	Limits *Limits
	// ProtectHeaders encrypts the header fields with the content and
	// obscures the outer header (RFC 9788 hp="cipher"), for content that is
	// not signed; signed content is protected by Sign's ProtectCipher.
	ProtectHeaders bool
}

// Encrypt encrypts the RFC 5322 message msg to every recipient certificate.
// As in Sign, the content fields and the body become the encrypted entity and
// every other header field stays outside, so Encrypt(Sign(msg)) makes a
// signed-then-encrypted message.
func Encrypt(msg []byte, recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("smime: encrypt: no recipients")
	}
	if opts == nil {
		opts = &EncryptOptions{}
	}
	hp := NoHeaderProtection
	if opts.ProtectHeaders {
		hp = ProtectCipher
	}
	p, err := prepare(msg, opts.Limits, 0, hp)
	if err != nil {
		return nil, err // ErrMalformed, a *LimitError or errProtectedContent, which name the package already
	}
	return encrypt(p, p.content(), recipients, opts)
}

// Encrypt encrypts s to every recipient certificate: it gives what
// Encrypt(s.Bytes(), recipients, opts) gives, reading only the header that
// stays outside. The limits were applied when s was signed, so
// opts.Limits is not used; opts.ProtectHeaders cannot apply to signed
// content.
func (s *SignedMessage) Encrypt(recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("smime: encrypt: no recipients")
	}
	if opts == nil {
		opts = &EncryptOptions{}
	}
	if opts.ProtectHeaders {
		return nil, errProtectedContent
	}
	// The outer header, MIME-Version included, as prepare would split it.
	p := &prepared{outer: [][]byte{s.msg[:s.header]}, hasMIMEVer: true}
	return encrypt(p, s.msg[s.header:], recipients, opts)
}

// encrypt encrypts content, the canonical entity of p, and writes the message.
func encrypt(p *prepared, content []byte, recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	sealed, err := cms.Seal(content, recipients, &cms.EncryptOptions{Cipher: opts.Cipher, OAEP: opts.OAEP})
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	smimeType := "enveloped-data"
	if opts.Cipher.AEAD() {
		smimeType = "authEnveloped-data" // RFC 8551 3.4
	}
	var b bytes.Buffer
	b.Grow(p.outerSize() + 256 + base64Len(sealed.Len()))
	p.writeOuter(&b,
		"Content-Type: application/pkcs7-mime; smime-type="+smimeType+"; name=smime.p7m",
		"Content-Transfer-Encoding: base64",
		"Content-Disposition: attachment; filename=smime.p7m")
	// The DER goes into base64 as it is made, never held whole.
	w := &base64Lines{b: &b}
	if _, err := sealed.WriteTo(w); err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	w.finish()
	b.WriteString("\r\n")
	return b.Bytes(), nil
}
