package cms

import (
	"crypto/hmac"
	"crypto/x509"
	"errors"
	"fmt"
)

// Verify checks the signature of s with cert's public key over content, or
// over the encapsulated content when content is nil. It checks cryptography
// only; certificate paths are the caller's business, and so is policy on
// weak digests: a sound SHA-1 signature verifies, and s.Hash says SHA-1.
func (sd *SignedData) Verify(s *Signer, cert *x509.Certificate, content []byte) error {
	if s == nil || cert == nil {
		return errors.New("cms: verify: no signer or certificate")
	}
	if content == nil {
		content = sd.Content
	}
	if content == nil {
		return errors.New("cms: verify: detached signature and no content given")
	}
	if s.Hash == 0 {
		return fmt.Errorf("cms: verify: %w", &UnsupportedError{What: "digest algorithm", OID: s.digestAlg.oid})
	}
	sc, err := parseScheme(s.sigAlg, s.Hash)
	if err != nil {
		return fmt.Errorf("cms: verify: %w", err)
	}
	msg := content
	if s.signedAttrs != nil {
		switch {
		case s.attrErr != nil:
			return fmt.Errorf("%w: %v", ErrSignature, s.attrErr)
		case s.messageDigest == nil:
			return fmt.Errorf("%w: no messageDigest attribute", ErrSignature)
		case !hmac.Equal(hashOf(s.Hash, content), s.messageDigest):
			return fmt.Errorf("%w: the content's digest differs", ErrSignature)
		case s.contentType != nil && !s.contentType.Equal(sd.ContentType):
			return fmt.Errorf("%w: the contentType attribute differs from the content's type", ErrSignature)
		}
		msg = s.signedAttrs
	}
	return sc.verify(cert.PublicKey, msg, s.signature)
}
