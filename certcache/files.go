package certcache

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"smimeproxy/cms"
)

const (
	certsDir  = "certs"
	interDir  = "intermediates"
	anchorDir = "anchors"
	// Files are 0600 (storage.Dir): certificates are public, but whose are
	// here says who mails whom.
	formatVersion = 1
)

// entryFile is certs/<fingerprint>.json.
type entryFile struct {
	Version      int       `json:"version"`
	Cert         []byte    `json:"cert"` // DER
	Source       Source    `json:"source"`
	Added        time.Time `json:"added"`
	Harvested    time.Time `json:"harvested,omitzero"`
	Capabilities []capJSON `json:"capabilities,omitempty"`
	// EncryptionKeyPreference: the sender's signature named this certificate.
	EncryptionKeyPreference bool `json:"encryption_key_preference,omitempty"`
}

type capJSON struct {
	Algorithm  string `json:"algorithm"` // dotted OID
	Parameters []byte `json:"parameters,omitempty"`
}

func marshalEntry(e *Entry) ([]byte, error) {
	f := entryFile{
		Version: formatVersion, Cert: e.Cert.Raw, Source: e.Source, Added: e.Added.UTC(),
		Harvested: e.Harvested.UTC(), EncryptionKeyPreference: e.EncryptionKeyPreference,
	}
	for _, c := range e.Capabilities {
		f.Capabilities = append(f.Capabilities, capJSON{Algorithm: c.Algorithm.String(), Parameters: c.Parameters})
	}
	return json.MarshalIndent(f, "", "\t")
}

func parseEntry(data []byte) (*Entry, error) {
	var f entryFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version != formatVersion {
		return nil, fmt.Errorf("unsupported version %d", f.Version)
	}
	if f.Source != SourceHarvested && f.Source != SourceImported {
		return nil, fmt.Errorf("unknown source %q", f.Source)
	}
	cert, err := x509.ParseCertificate(f.Cert)
	if err != nil {
		return nil, err
	}
	e := newEntry(cert)
	if len(e.Addresses) == 0 {
		return nil, errors.New("the certificate names no email address")
	}
	e.Source, e.Added, e.Harvested, e.EncryptionKeyPreference = f.Source, f.Added, f.Harvested, f.EncryptionKeyPreference
	for _, c := range f.Capabilities {
		oid, err := parseOID(c.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("capability: %w", err)
		}
		e.Capabilities = append(e.Capabilities, cms.Capability{Algorithm: oid, Parameters: c.Parameters})
	}
	return e, nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("bad OID %q", s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad OID %q", s)
		}
		oid[i] = n
	}
	return oid, nil
}

// parseCertPEM reads the one certificate in an anchors/ or intermediates/ file.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("not a single PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Fingerprint is the SHA-256 of a certificate's DER, in lower-case hex: the
// name of its file.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// normalizeFingerprint accepts hex in any case, with or without colons (as
// `openssl x509 -fingerprint -sha256` prints it).
func normalizeFingerprint(s string) (string, bool) {
	s = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(s) != 64 {
		return "", false
	}
	_, err := hex.DecodeString(s)
	return s, err == nil
}
