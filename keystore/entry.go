package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"smimeproxy/internal/mailaddr"
)

// Source says where a key came from.
type Source string

const (
	SourceGenerated Source = "generated" // made here, with a CSR
	SourcePKCS12    Source = "pkcs12"    // imported from a PKCS #12 file
)

// entry is one private key and the certificates issued for it. Entries are
// never removed: old keys decrypt old mail.
type entry struct {
	version int
	id      string
	emails  []string // lower case, sorted
	keyType KeyType
	source  Source
	created time.Time
	pubDER  []byte // SubjectPublicKeyInfo
	sealed  []byte // PKCS #8, sealed under the data key
	certs   []*x509.Certificate
	chain   []*x509.Certificate // intermediates, never roots
	mac     []byte              // version 2: HMAC-SHA-256 of the rest (macInput)
}

// entryFile is keys/<id>.json.
type entryFile struct {
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	Emails     []string  `json:"emails"`
	KeyType    KeyType   `json:"key_type"`
	Source     Source    `json:"source"`
	Created    time.Time `json:"created"`
	PublicKey  []byte    `json:"public_key"`
	PrivateKey []byte    `json:"private_key"` // AES-256-GCM(data key, PKCS #8)
	Certs      [][]byte  `json:"certs,omitempty"`
	Chain      [][]byte  `json:"chain,omitempty"`
	MAC        []byte    `json:"mac,omitempty"` // version 2: HMAC-SHA-256 under a key derived from the data key
}

func (e *entry) marshal() ([]byte, error) {
	f := entryFile{
		Version: e.version, ID: e.id, Emails: e.emails, KeyType: e.keyType, Source: e.source,
		Created: e.created.UTC(), PublicKey: e.pubDER, PrivateKey: e.sealed, MAC: e.mac,
	}
	for _, c := range e.certs {
		f.Certs = append(f.Certs, c.Raw)
	}
	for _, c := range e.chain {
		f.Chain = append(f.Chain, c.Raw)
	}
	return json.MarshalIndent(f, "", "\t")
}

// parseEntry reads a key entry file and checks that it is consistent: the id
// is the public key's, and every certificate is for that key.
func parseEntry(data []byte) (*entry, error) {
	var f entryFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	switch {
	case f.Version != legacyVersion && f.Version != formatVersion:
		return nil, fmt.Errorf("unsupported version %d", f.Version)
	case f.Version == formatVersion && len(f.MAC) != sha256.Size:
		return nil, errors.New("no MAC, or a MAC of a bad length")
	case f.Version == legacyVersion && f.MAC != nil:
		return nil, errors.New("a MAC in a version 1 file")
	}
	pub, err := x509.ParsePKIXPublicKey(f.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	id, pubDER, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	if f.ID != id {
		return nil, fmt.Errorf("id %q does not match the public key (%s)", f.ID, id)
	}
	if len(f.PrivateKey) == 0 {
		return nil, errors.New("no private key")
	}
	e := &entry{
		version: f.Version, id: id, keyType: f.KeyType, source: f.Source, created: f.Created,
		pubDER: pubDER, sealed: f.PrivateKey, emails: normalizeEmails(f.Emails), mac: f.MAC,
	}
	if len(e.emails) == 0 {
		return nil, errors.New("no email address")
	}
	for i, der := range f.Certs {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		if cid, _, err := keyID(c.PublicKey); err != nil || cid != id {
			return nil, fmt.Errorf("certificate %d is not for this key", i+1)
		}
		e.certs = append(e.certs, c)
	}
	for i, der := range f.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("chain certificate %d: %w", i+1, err)
		}
		e.chain = append(e.chain, c)
	}
	return e, nil
}

// clone copies e so that a writer can change it while readers use the old one.
func (e *entry) clone() *entry {
	c := *e
	c.emails = slices.Clone(e.emails)
	c.certs = slices.Clone(e.certs)
	c.chain = slices.Clone(e.chain)
	c.mac = slices.Clone(e.mac)
	return &c
}

// addCert joins c to e; it reports false when e already holds it.
func (e *entry) addCert(c *x509.Certificate) bool {
	if slices.ContainsFunc(e.certs, c.Equal) {
		return false
	}
	e.certs = append(e.certs, c)
	e.emails = normalizeEmails(append(e.emails, certEmails(c)...))
	return true
}

// keyID names a key by the first 128 bits of the SHA-256 of its
// SubjectPublicKeyInfo, re-encoded so that equal keys get equal ids.
func keyID(pub crypto.PublicKey) (id string, spki []byte, err error) {
	spki, err = x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", nil, fmt.Errorf("public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:16]), spki, nil
}

func validID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// keyTypeOf names any key we may hold, including imported ones we would not
// generate ("rsa1024", "ecdsa-p521", "ed25519").
func keyTypeOf(pub crypto.PublicKey) KeyType {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return KeyType(fmt.Sprintf("rsa%d", k.N.BitLen()))
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256
		case elliptic.P384():
			return ECDSAP384
		case elliptic.P521():
			return "ecdsa-p521"
		}
		return "ecdsa"
	case ed25519.PublicKey:
		return "ed25519"
	case *ecdh.PublicKey:
		return KeyType(strings.ToLower(fmt.Sprint(k.Curve())))
	}
	return "unknown"
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// certEmails lists the addresses a certificate names, in subjectAltName or
// in the subject's emailAddress, lower case.
func certEmails(c *x509.Certificate) []string {
	out := slices.Clone(c.EmailAddresses)
	for _, n := range c.Subject.Names {
		if s, ok := n.Value.(string); ok && n.Type.Equal(oidEmailAddress) {
			out = append(out, s)
		}
	}
	return normalizeEmails(out)
}

// normalizeEmails lower-cases, sorts and deduplicates. The whole address is
// folded, local part included: no mail system in use treats Alice@ and
// alice@ as different people, and clients compare them that way.
func normalizeEmails(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = normEmail(s); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func normEmail(s string) string { return mailaddr.Normalize(s) }

// names reports whether c is for the address.
func names(c *x509.Certificate, email string) bool {
	return slices.Contains(certEmails(c), email)
}

// issuedBy reports whether ca issued c. A chain here is only carried along
// for recipients, not trusted, so an old SHA-1 signature still counts.
func issuedBy(c, ca *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, ca.RawSubject) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(ca.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, ca.SubjectKeyId) {
		return false
	}
	err := c.CheckSignatureFrom(ca)
	var insecure x509.InsecureAlgorithmError
	return err == nil || errors.As(err, &insecure)
}

// isRoot reports whether c is a self-signed CA certificate.
func isRoot(c *x509.Certificate) bool { return isCA(c) && issuedBy(c, c) }

func isCA(c *x509.Certificate) bool { return c.BasicConstraintsValid && c.IsCA }

// chainFor orders the intermediates from c's issuer upwards.
func chainFor(c *x509.Certificate, pool []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for cur := c; len(out) < len(pool); {
		i := slices.IndexFunc(pool, func(ca *x509.Certificate) bool {
			return !ca.Equal(cur) && !slices.ContainsFunc(out, ca.Equal) && issuedBy(cur, ca)
		})
		if i < 0 {
			break
		}
		cur = pool[i]
		out = append(out, cur)
	}
	return out
}
