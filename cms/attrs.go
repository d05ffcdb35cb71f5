package cms

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// parseSignedAttrs fills s from the contents of its signedAttrs. Attributes
// that only inform (signing time, capabilities, key preference) are read
// leniently; the ones verification rests on are checked in Verify, through
// attrErr.
func (s *Signer) parseSignedAttrs(attrs cryptobyte.String) error {
	seen := map[string]bool{}
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return malformed("bad signed attribute")
		}
		key := oid.String()
		if seen[key] && (oid.Equal(oidAttrContentType) || oid.Equal(oidAttrMessageDigest) || oid.Equal(oidAttrSigningTime)) {
			s.attrErr = errors.New("signed attribute " + key + " appears twice")
		}
		seen[key] = true
		switch {
		case oid.Equal(oidAttrContentType):
			if !values.ReadASN1ObjectIdentifier(&s.contentType) || !values.Empty() {
				s.attrErr = errors.New("bad contentType attribute")
			}
		case oid.Equal(oidAttrMessageDigest):
			var md cryptobyte.String
			if !values.ReadASN1(&md, cbasn1.OCTET_STRING) || !values.Empty() {
				s.attrErr = errors.New("bad messageDigest attribute")
			}
			s.messageDigest = md
		case oid.Equal(oidAttrSigningTime):
			s.SigningTime = readTime(&values)
		case oid.Equal(oidAttrSMIMECapabilities):
			s.Capabilities = readCapabilities(values)
		case oid.Equal(oidAttrEncKeyPreference):
			s.EncryptionKeyPreference = readKeyPreference(values)
		case oid.Equal(oidAttrMSEncKeyPreference):
			if s.EncryptionKeyPreference == nil {
				var id CertID
				var ias cryptobyte.String
				if values.ReadASN1(&ias, cbasn1.SEQUENCE) && readIssuerAndSerial(&ias, &id) {
					s.EncryptionKeyPreference = &id
				}
			}
		}
	}
	return nil
}

// readTime reads a UTCTime or GeneralizedTime; zero when it is neither.
func readTime(s *cryptobyte.String) time.Time {
	var t time.Time
	switch {
	case s.PeekASN1Tag(cbasn1.UTCTime):
		if !s.ReadASN1UTCTime(&t) {
			return time.Time{}
		}
	case s.PeekASN1Tag(cbasn1.GeneralizedTime):
		if !s.ReadASN1GeneralizedTime(&t) {
			return time.Time{}
		}
	}
	return t
}

// readCapabilities reads SMIMECapabilities, keeping what parses.
func readCapabilities(values cryptobyte.String) []Capability {
	var seq cryptobyte.String
	if !values.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil
	}
	var caps []Capability
	for !seq.Empty() {
		var alg algorithm
		if !readAlgorithm(&seq, &alg) {
			break
		}
		caps = append(caps, Capability{Algorithm: alg.oid, Parameters: alg.params})
	}
	return caps
}

// readKeyPreference reads SMIMEEncryptionKeyPreference (RFC 8551 2.5.3).
func readKeyPreference(values cryptobyte.String) *CertID {
	var id CertID
	var body cryptobyte.String
	switch {
	case values.PeekASN1Tag(constructedTag(0)): // issuerAndSerialNumber
		if !values.ReadASN1(&body, constructedTag(0)) || !readIssuerAndSerial(&body, &id) {
			return nil
		}
	case values.PeekASN1Tag(constructedTag(1)): // receipentKeyId
		var ski cryptobyte.String
		if !values.ReadASN1(&body, constructedTag(1)) || !body.ReadASN1(&ski, cbasn1.OCTET_STRING) {
			return nil
		}
		id.SubjectKeyID = ski
	case hasTag(values, 2): // subjectAltKeyIdentifier
		if !readOctets(&values, 2, &id.SubjectKeyID) {
			return nil
		}
	default:
		return nil
	}
	return &id
}

// signedAttrs builds the signed attributes of a new signature: the contents
// of their DER SET OF. capsAttr is the SMIMECapabilities attribute; nil:
// none.
func signedAttrs(digest []byte, when time.Time, capsAttr []byte, pref *x509.Certificate) ([]byte, error) {
	var err error
	attr := func(oid asn1.ObjectIdentifier, value func(b *cryptobyte.Builder)) []byte {
		out, e := encodeAttr(oid, value)
		if e != nil {
			err = e
		}
		return out
	}
	when = when.UTC().Truncate(time.Second)
	attrs := [][]byte{
		derAttrContentTypeData,
		attr(oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }),
		attr(oidAttrSigningTime, func(b *cryptobyte.Builder) {
			// RFC 5652 11.3: UTCTime up to 2049, GeneralizedTime from 2050.
			if when.Year() >= 1950 && when.Year() < 2050 {
				b.AddASN1UTCTime(when)
			} else {
				b.AddASN1GeneralizedTime(when)
			}
		}),
	}
	if capsAttr != nil {
		attrs = append(attrs, capsAttr)
	}
	if pref != nil {
		id := certIDOf(pref, false)
		attrs = append(attrs,
			attr(oidAttrEncKeyPreference, func(b *cryptobyte.Builder) {
				b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
			}),
			// Outlook looks for Microsoft's own attribute.
			attr(oidAttrMSEncKeyPreference, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
			}),
		)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: encode signed attributes: %w", err)
	}
	return setContents(attrs), nil
}

// encodeAttr encodes an Attribute with one value.
func encodeAttr(oid asn1.ObjectIdentifier, value func(b *cryptobyte.Builder)) ([]byte, error) {
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(cbasn1.SET, value)
		})
	})
}

// capabilitiesAttr is the SMIMECapabilities attribute for caps: nil for
// none, and for nil that of DefaultCapabilities, encoded once.
func capabilitiesAttr(caps []Capability) ([]byte, error) {
	switch {
	case caps == nil:
		return defaultCapabilitiesAttr()
	case len(caps) == 0:
		return nil, nil
	}
	return encodeCapabilities(caps)
}

var defaultCapabilitiesAttr = sync.OnceValues(func() ([]byte, error) { return encodeCapabilities(DefaultCapabilities()) })

func encodeCapabilities(caps []Capability) ([]byte, error) {
	out, err := encodeAttr(oidAttrSMIMECapabilities, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, c := range caps {
				addAlgorithm(b, c.Algorithm, c.Parameters)
			}
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cms: encode signed attributes: %w", err)
	}
	return out, nil
}

// derAttrContentTypeData is the contentType attribute of id-data content.
var derAttrContentTypeData = must(encodeAttr(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) }))
