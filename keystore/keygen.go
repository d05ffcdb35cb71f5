package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"smimeproxy/storage"
)

// KeyType names a kind of key.
type KeyType string

// The key types NewCSR generates.
const (
	RSA2048   KeyType = "rsa2048"
	RSA3072   KeyType = "rsa3072"
	RSA4096   KeyType = "rsa4096"
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"

	// DefaultKeyType: RSA is what every mail client can encrypt to (Outlook
	// and many phones still cannot use EC recipients), and 3072 bits is
	// NIST's level for use beyond 2030.
	DefaultKeyType = RSA3072
)

var keyTypes = []KeyType{RSA2048, RSA3072, RSA4096, ECDSAP256, ECDSAP384}

// KeyTypes lists the key types NewCSR generates, in the order to offer them.
func KeyTypes() []KeyType { return append([]KeyType(nil), keyTypes...) }

// ParseKeyType reads a key type name such as "rsa3072", in any case. The
// error, a *KeyTypeError, lists the options.
func ParseKeyType(s string) (KeyType, error) {
	k := KeyType(strings.ToLower(strings.TrimSpace(s)))
	for _, t := range keyTypes {
		if k == t {
			return t, nil
		}
	}
	return "", &KeyTypeError{Value: s}
}

func generate(t KeyType) (crypto.Signer, error) {
	switch t {
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, &KeyTypeError{Value: string(t)}
}

// CSRRequest is what NewCSR needs.
type CSRRequest struct {
	Email      string  // required: goes into subjectAltName and the subject's emailAddress
	KeyType    KeyType // zero: DefaultKeyType
	CommonName string  // optional subject common name, usually the person's name
}

var (
	oidExtKeyUsage  = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidEmailProtect = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}
	keyUsageRSA     = asn1.BitString{Bytes: []byte{0xa0}, BitLength: 3} // digitalSignature, keyEncipherment
	keyUsageEC      = asn1.BitString{Bytes: []byte{0x88}, BitLength: 5} // digitalSignature, keyAgreement
)

// NewCSR generates a key for req.Email, stores it at once (sealed, status
// pending) and returns a PKCS #10 request (DER) to send to the CA. The
// request asks for the S/MIME key usages, which CAs may or may not copy.
func (s *Store) NewCSR(req CSRRequest) ([]byte, *IdentityInfo, error) {
	email, err := plainAddress(req.Email)
	if err != nil {
		return nil, nil, err
	}
	kt := req.KeyType
	if kt == "" {
		kt = DefaultKeyType
	}
	if kt, err = ParseKeyType(string(kt)); err != nil {
		return nil, nil, err
	}
	if s.Locked() {
		return nil, nil, ErrLocked
	}
	key, err := generate(kt)
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: generate %s key: %w", kt, err)
	}
	ku := keyUsageRSA
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		ku = keyUsageEC
	}
	kuDER, err := asn1.Marshal(ku)
	if err != nil {
		return nil, nil, err
	}
	ekuDER, err := asn1.Marshal([]asn1.ObjectIdentifier{oidEmailProtect})
	if err != nil {
		return nil, nil, err
	}
	subject := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{
		Type:  oidEmailAddress,
		Value: asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte(email)}, // RFC 5280: IA5String
	}}}
	if req.CommonName != "" {
		subject.CommonName = req.CommonName
	}
	tmpl := &x509.CertificateRequest{
		Subject:        subject,
		EmailAddresses: []string{email},
		ExtraExtensions: []pkix.Extension{
			{Id: oidKeyUsage, Critical: true, Value: kuDER},
			{Id: oidExtKeyUsage, Value: ekuDER},
		},
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: make CSR: %w", err)
	}
	id, spki, err := keyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	e := &entry{
		id: id, emails: []string{email}, keyType: kt, source: SourceGenerated,
		created: time.Now().UTC().Truncate(time.Second), pubDER: spki,
	}
	err = s.write(func(st *state, tx storage.Tx) error {
		if err := s.sealKey(st, e, key); err != nil {
			return err
		}
		return s.saveEntry(st, tx, e)
	})
	if err != nil {
		return nil, nil, err
	}
	info := infoOf(e, s.now())
	return csr, &info, nil
}

// plainAddress accepts a bare addr-spec and returns it in lower case.
func plainAddress(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || !strings.EqualFold(a.Address, strings.TrimSpace(s)) {
		return "", fmt.Errorf("keystore: %q is not a plain email address (like alice@example.com)", s)
	}
	return strings.ToLower(a.Address), nil
}
