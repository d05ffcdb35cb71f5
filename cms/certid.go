package cms

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Matches reports whether cert is the certificate id names.
func (id CertID) Matches(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	if id.SubjectKeyID != nil {
		return len(cert.SubjectKeyId) > 0 && bytes.Equal(id.SubjectKeyID, cert.SubjectKeyId)
	}
	return id.Serial != nil && cert.SerialNumber != nil &&
		bytes.Equal(id.Issuer, cert.RawIssuer) && id.Serial.Cmp(cert.SerialNumber) == 0
}

// String describes id for logs and headers.
func (id CertID) String() string {
	if id.SubjectKeyID != nil {
		return "subject key id " + hex.EncodeToString(id.SubjectKeyID)
	}
	issuer := "(unreadable issuer)"
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(id.Issuer, &rdn); err == nil && len(rest) == 0 {
		var name pkix.Name
		name.FillFromRDNSequence(&rdn)
		issuer = name.String()
	}
	serial := "?"
	if id.Serial != nil {
		serial = id.Serial.Text(16)
	}
	return "issuer " + issuer + " serial " + serial
}

// certIDOf names cert by subject key identifier when bySKI is set and cert has
// one, and by issuer and serial number otherwise.
func certIDOf(cert *x509.Certificate, bySKI bool) CertID {
	if bySKI && len(cert.SubjectKeyId) > 0 {
		return CertID{SubjectKeyID: cert.SubjectKeyId}
	}
	return CertID{Issuer: cert.RawIssuer, Serial: cert.SerialNumber}
}

// readIssuerAndSerial reads the contents of an IssuerAndSerialNumber.
func readIssuerAndSerial(s *cryptobyte.String, id *CertID) bool {
	var issuer cryptobyte.String
	if !s.ReadASN1Element(&issuer, cbasn1.SEQUENCE) || !readInteger(s, &id.Serial) {
		return false
	}
	id.Issuer = issuer
	return true
}

// readCertID reads a SignerIdentifier or RecipientIdentifier: an
// IssuerAndSerialNumber or a [0] IMPLICIT SubjectKeyIdentifier.
func readCertID(s *cryptobyte.String, id *CertID) bool {
	if hasTag(*s, 0) {
		var ski []byte
		if !readOctets(s, 0, &ski) {
			return false
		}
		id.SubjectKeyID = ski
		return true
	}
	var ias cryptobyte.String
	return s.ReadASN1(&ias, cbasn1.SEQUENCE) && readIssuerAndSerial(&ias, id) && ias.Empty()
}

// addCertID writes id as an IssuerAndSerialNumber or as [0] IMPLICIT
// SubjectKeyIdentifier.
func addCertID(b *cryptobyte.Builder, id CertID) {
	if id.SubjectKeyID != nil {
		b.AddASN1(implicitTag(0), func(b *cryptobyte.Builder) { b.AddBytes(id.SubjectKeyID) })
		return
	}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
}

// addIssuerAndSerial writes the contents of an IssuerAndSerialNumber.
func addIssuerAndSerial(b *cryptobyte.Builder, id CertID) {
	b.AddBytes(id.Issuer)
	b.AddASN1BigInt(id.Serial)
}
