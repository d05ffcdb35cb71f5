// Package cms implements the parts of the Cryptographic Message Syntax
// (RFC 5652) that S/MIME 4.0 needs: SignedData, EnvelopedData and
// AuthEnvelopedData, with keys kept opaque behind crypto.Signer,
// crypto.Decrypter and ecdh.KeyExchanger.
package cms

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"time"
)

// Errors that callers branch on.
var (
	// ErrSignature: the content's digest or the signature does not match (tampered).
	ErrSignature = errors.New("cms: signature does not match the content")
	// ErrNoRecipient: the message is not encrypted to the given key.
	ErrNoRecipient = errors.New("cms: not encrypted to this key")
	// ErrDecrypt: the key matched a recipient, but the content did not decrypt
	// (wrong key, damaged data, failed authentication tag).
	ErrDecrypt = errors.New("cms: decryption failed")
)

// UnsupportedError names an algorithm or structure this package does not handle.
type UnsupportedError struct {
	What string                // "content cipher", "signature algorithm", ...
	Name string                // the algorithm's name when known, such as "rc2-40-cbc"
	OID  asn1.ObjectIdentifier // nil when not about an OID
}

func (e *UnsupportedError) Error() string {
	msg := "cms: unsupported " + e.What
	switch {
	case e.Name != "" && e.OID != nil && e.Name != e.OID.String():
		return msg + " " + e.Name + " (" + e.OID.String() + ")"
	case e.Name != "":
		return msg + " " + e.Name
	case e.OID != nil:
		return msg + " " + e.OID.String()
	}
	return msg
}

// SyntaxError reports input that is not well-formed CMS.
type SyntaxError struct{ Msg string }

func (e *SyntaxError) Error() string { return "cms: malformed input: " + e.Msg }

// Type is the content type of a ContentInfo.
type Type int

const (
	TypeOther Type = iota
	TypeData
	TypeSignedData
	TypeEnvelopedData
	TypeAuthEnvelopedData
)

// Capability is one entry of the SMIMECapabilities attribute (RFC 8551 2.5.2).
type Capability struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters []byte // DER, nil when absent
}

// Cipher names a content-encryption algorithm as OpenSSL does
// ("aes-256-cbc"). An algorithm this package cannot decrypt is still named
// ("rc2-40-cbc", "des-cbc"), and one it does not know at all by its OID in
// dotted form, so that logs and headers always say what a message used.
// The zero value means AES256CBC where a cipher is chosen (EncryptOptions).
type Cipher string

// The ciphers this package encrypts with, and DES3CBC, which it only decrypts.
const (
	AES256CBC Cipher = "aes-256-cbc" // the default: every client reads it
	AES128CBC Cipher = "aes-128-cbc"
	AES192CBC Cipher = "aes-192-cbc"
	AES128GCM Cipher = "aes-128-gcm" // AuthEnvelopedData (RFC 5083, RFC 5084)
	AES256GCM Cipher = "aes-256-gcm"
	DES3CBC   Cipher = "des-ede3-cbc" // decryption only, for old mail
)

// AEAD reports whether c is carried in AuthEnvelopedData.
func (c Cipher) AEAD() bool { return c == AES128GCM || c == AES256GCM }

// CertID identifies a certificate the way CMS does: by issuer and serial
// number, or by subject key identifier.
type CertID struct {
	Issuer       []byte // DER of the issuer Name; nil for a key identifier
	Serial       *big.Int
	SubjectKeyID []byte
}

// SignOptions tune Sign; nil means the defaults.
type SignOptions struct {
	Hash         crypto.Hash         // SHA256 (default), SHA384 or SHA512
	Detached     bool                // leave the content out (multipart/signed)
	Certificates []*x509.Certificate // carried besides the signer's own: chain, encryption certificate
	SigningTime  time.Time           // zero: now
	// Capabilities is the SMIMECapabilities attribute; nil: DefaultCapabilities.
	Capabilities []Capability
	// EncryptionKeyPreference names the certificate to encrypt to when it is
	// not the signing certificate (RFC 8551 2.5.3).
	EncryptionKeyPreference *x509.Certificate
	PSS                     bool // RSASSA-PSS for RSA keys instead of PKCS #1 v1.5
}

// SignedData is a parsed SignedData.
type SignedData struct {
	ContentType  asn1.ObjectIdentifier
	Content      []byte // the encapsulated content; nil when detached
	Certificates []*x509.Certificate
	Signers      []*Signer
}

// Signer is one SignerInfo.
type Signer struct {
	ID                      CertID
	Hash                    crypto.Hash             // zero when not supported
	SignatureAlgorithm      x509.SignatureAlgorithm // UnknownSignatureAlgorithm when not supported
	SigningTime             time.Time               // zero when absent
	Capabilities            []Capability
	EncryptionKeyPreference *CertID

	digestAlg     algorithm
	sigAlg        algorithm
	signedAttrs   []byte // DER, re-tagged as a SET as the signature covers it; nil when absent
	contentType   asn1.ObjectIdentifier
	messageDigest []byte
	attrErr       error // a signed attribute that is malformed or repeated
	signature     []byte
}

// EncryptOptions tune Encrypt; nil means the defaults.
type EncryptOptions struct {
	Cipher Cipher // AES256CBC by default; a GCM cipher makes AuthEnvelopedData
	OAEP   bool   // RSAES-OAEP (SHA-256) instead of PKCS #1 v1.5 for RSA recipients
	// SubjectKeyID names recipients by subject key identifier, where their
	// certificate has one, instead of by issuer and serial number.
	SubjectKeyID bool
}

// RecipientKind is the kind of a RecipientInfo.
type RecipientKind int

const (
	KeyTransport RecipientKind = iota // ktri: RSA
	KeyAgreement                      // kari: ECDH
	KEK                               // kekri: a pre-shared key-encryption key
	Password                          // pwri
	OtherRecipient
)

// Recipient is one recipient of an Envelope.
type Recipient struct {
	Kind  RecipientKind
	ID    CertID // for KeyTransport and KeyAgreement
	KEKID []byte // for KEK

	keyAlg       algorithm // the key encryption (or agreement) algorithm
	encryptedKey []byte
	originator   *originatorKey // for KeyAgreement
	ukm          []byte         // for KeyAgreement: user keying material, nil when absent
}

// Envelope is a parsed EnvelopedData or AuthEnvelopedData.
type Envelope struct {
	Authenticated bool // AuthEnvelopedData
	// Cipher names the content cipher, whatever it is; CipherKnown is false
	// when this package cannot decrypt it.
	Cipher      Cipher
	CipherKnown bool
	CipherOID   asn1.ObjectIdentifier
	Recipients  []Recipient

	contentAlg algorithm
	encrypted  []byte
	authAttrs  []byte // AuthEnvelopedData: DER, re-tagged as a SET as the tag covers it
	mac        []byte // AuthEnvelopedData: the authentication tag
}
