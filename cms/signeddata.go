package cms

import (
	"crypto/x509"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ParseSignedData parses a SignedData ContentInfo, BER or DER. A certs-only
// (degenerate) SignedData, such as a .p7b/.p7c file, parses with no signers.
func ParseSignedData(data []byte) (*SignedData, error) {
	oid, content, err := parseContentInfo(data)
	if err != nil {
		return nil, err
	}
	if !oid.Equal(oidSignedData) {
		return nil, fmt.Errorf("cms: content type %s is not signed-data", oid)
	}
	var sd, digestAlgs, encap, signerInfos cryptobyte.String
	var version int64
	// digestAlgorithms only helps one-pass verifiers; each SignerInfo names
	// its own digest, so an empty or odd set does not matter here.
	if !content.ReadASN1(&sd, cbasn1.SEQUENCE) || !content.Empty() ||
		!sd.ReadASN1Integer(&version) || !sd.ReadASN1(&digestAlgs, cbasn1.SET) ||
		!sd.ReadASN1(&encap, cbasn1.SEQUENCE) {
		return nil, malformed("bad SignedData")
	}
	out := &SignedData{}
	if err := out.parseEncapsulated(encap); err != nil {
		return nil, err
	}
	if sd.PeekASN1Tag(constructedTag(0)) {
		var certs cryptobyte.String
		if !sd.ReadASN1(&certs, constructedTag(0)) {
			return nil, malformed("bad certificates")
		}
		out.Certificates, err = parseCertificates(certs)
		if err != nil {
			return nil, err
		}
	}
	if !sd.SkipOptionalASN1(constructedTag(1)) || !sd.ReadASN1(&signerInfos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("bad SignedData")
	}
	for !signerInfos.Empty() {
		var si cryptobyte.String
		if !signerInfos.ReadASN1(&si, cbasn1.SEQUENCE) {
			return nil, malformed("bad SignerInfo")
		}
		s, err := parseSignerInfo(si)
		if err != nil {
			return nil, err
		}
		out.Signers = append(out.Signers, s)
	}
	return out, nil
}

// parseEncapsulated reads the EncapsulatedContentInfo.
func (sd *SignedData) parseEncapsulated(encap cryptobyte.String) error {
	if !encap.ReadASN1ObjectIdentifier(&sd.ContentType) {
		return malformed("bad encapsulated content type")
	}
	if encap.Empty() {
		return nil
	}
	var explicit cryptobyte.String
	if !encap.ReadASN1(&explicit, constructedTag(0)) || !encap.Empty() {
		return malformed("bad encapsulated content")
	}
	var inner cryptobyte.String
	var tag cbasn1.Tag
	// PKCS #7 v1.5 signers put content other than id-data in without the
	// OCTET STRING; its digest then covers the contents octets, which is
	// what ReadAnyASN1 returns either way.
	if !explicit.ReadAnyASN1(&inner, &tag) || !explicit.Empty() {
		return malformed("bad encapsulated content")
	}
	sd.Content = append([]byte{}, inner...)
	return nil
}

// parseCertificates reads a CertificateSet, skipping attribute certificates
// and certificates crypto/x509 cannot read: other certificates may still be
// the signer's.
func parseCertificates(set cryptobyte.String) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for !set.Empty() {
		var elem cryptobyte.String
		var tag cbasn1.Tag
		if !set.ReadAnyASN1Element(&elem, &tag) {
			return nil, malformed("bad certificates")
		}
		if tag != cbasn1.SEQUENCE {
			continue
		}
		if cert, err := x509.ParseCertificate(elem); err == nil {
			certs = append(certs, cert)
		}
	}
	return certs, nil
}

func parseSignerInfo(si cryptobyte.String) (*Signer, error) {
	s := &Signer{}
	var version int64
	if !si.ReadASN1Integer(&version) || !readCertID(&si, &s.ID) || !readAlgorithm(&si, &s.digestAlg) {
		return nil, malformed("bad SignerInfo")
	}
	if si.PeekASN1Tag(constructedTag(0)) {
		var elem, attrs cryptobyte.String
		if !si.ReadASN1Element(&elem, constructedTag(0)) {
			return nil, malformed("bad signed attributes")
		}
		// The signature covers the attributes with the SET tag, not [0].
		s.signedAttrs = append([]byte{0x31}, elem[1:]...)
		if !elem.ReadASN1(&attrs, constructedTag(0)) {
			return nil, malformed("bad signed attributes")
		}
		if err := s.parseSignedAttrs(attrs); err != nil {
			return nil, err
		}
	}
	var sig cryptobyte.String
	if !readAlgorithm(&si, &s.sigAlg) || !si.ReadASN1(&sig, cbasn1.OCTET_STRING) ||
		!si.SkipOptionalASN1(constructedTag(1)) || !si.Empty() {
		return nil, malformed("bad SignerInfo")
	}
	s.signature = sig
	s.Hash, _ = hashForOID(s.digestAlg.oid)
	if sc, err := parseScheme(s.sigAlg, s.Hash); err == nil {
		s.SignatureAlgorithm = sc.x509Algorithm()
	}
	return s, nil
}

// FindCertificate returns the certificate s names, looked up among the
// certificates carried in sd and then in extra; nil when none matches.
func (sd *SignedData) FindCertificate(s *Signer, extra []*x509.Certificate) *x509.Certificate {
	if s == nil {
		return nil
	}
	for _, list := range [][]*x509.Certificate{sd.Certificates, extra} {
		for _, c := range list {
			if s.ID.Matches(c) {
				return c
			}
		}
	}
	return nil
}
