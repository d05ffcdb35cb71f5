package cms

import (
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// originatorKey is the sender's ephemeral public key in a kari.
type originatorKey struct {
	alg algorithm
	key []byte // an uncompressed EC point, or an X25519 key
}

// ParseEnvelope parses an EnvelopedData or AuthEnvelopedData ContentInfo,
// BER or DER. Recipient kinds it cannot use are listed, not rejected.
func ParseEnvelope(data []byte) (*Envelope, error) {
	oid, content, err := parseContentInfo(data)
	if err != nil {
		return nil, err
	}
	e := &Envelope{}
	switch {
	case oid.Equal(oidEnvelopedData):
	case oid.Equal(oidAuthEnvelopedData):
		e.Authenticated = true
	default:
		return nil, fmt.Errorf("cms: content type %s is not enveloped-data", oid)
	}
	var body, infos, eci cryptobyte.String
	var version int64
	if !content.ReadASN1(&body, cbasn1.SEQUENCE) || !content.Empty() ||
		!body.ReadASN1Integer(&version) || !body.SkipOptionalASN1(constructedTag(0)) ||
		!body.ReadASN1(&infos, cbasn1.SET) || !body.ReadASN1(&eci, cbasn1.SEQUENCE) {
		return nil, malformed("bad EnvelopedData")
	}
	for !infos.Empty() {
		var info cryptobyte.String
		var tag cbasn1.Tag
		if !infos.ReadAnyASN1(&info, &tag) {
			return nil, malformed("bad RecipientInfo")
		}
		e.Recipients = append(e.Recipients, parseRecipientInfo(tag, info)...)
	}
	var contentType asn1.ObjectIdentifier
	if !eci.ReadASN1ObjectIdentifier(&contentType) || !readAlgorithm(&eci, &e.contentAlg) {
		return nil, malformed("bad EncryptedContentInfo")
	}
	// The encrypted content may be absent (carried elsewhere); Decrypt says so.
	if (hasTag(eci, 0) && !readOctets(&eci, 0, &e.encrypted)) || !eci.Empty() {
		return nil, malformed("bad EncryptedContentInfo")
	}
	if e.Authenticated {
		if body.PeekASN1Tag(constructedTag(1)) {
			var elem cryptobyte.String
			if !body.ReadASN1Element(&elem, constructedTag(1)) {
				return nil, malformed("bad authenticated attributes")
			}
			// The tag covers the attributes with the SET tag (RFC 5083 2.1).
			e.authAttrs = append([]byte{0x31}, elem[1:]...)
		}
		var mac cryptobyte.String
		if !body.ReadASN1(&mac, cbasn1.OCTET_STRING) || !body.SkipOptionalASN1(constructedTag(2)) {
			return nil, malformed("bad AuthEnvelopedData")
		}
		e.mac = mac
	} else if !body.SkipOptionalASN1(constructedTag(1)) {
		return nil, malformed("bad EnvelopedData")
	}
	if !body.Empty() {
		return nil, malformed("bad EnvelopedData")
	}
	e.CipherOID = e.contentAlg.oid
	e.Cipher = cipherName(e.contentAlg)
	e.CipherKnown = e.Cipher.Supported() && e.Cipher.AEAD() == e.Authenticated
	return e, nil
}

// parseRecipientInfo reads one RecipientInfo, which yields several
// recipients for a kari with several keys. A recipient it cannot read is
// listed as OtherRecipient: it may not be ours, and must not keep the
// others from decrypting.
func parseRecipientInfo(tag cbasn1.Tag, info cryptobyte.String) []Recipient {
	other := []Recipient{{Kind: OtherRecipient}}
	var version int64
	switch tag {
	case cbasn1.SEQUENCE:
		r := Recipient{Kind: KeyTransport}
		var ek cryptobyte.String
		if !info.ReadASN1Integer(&version) || !readCertID(&info, &r.ID) || !readAlgorithm(&info, &r.keyAlg) ||
			!info.ReadASN1(&ek, cbasn1.OCTET_STRING) || !info.Empty() {
			return other
		}
		r.encryptedKey = ek
		return []Recipient{r}
	case constructedTag(1):
		if rs := parseKeyAgreement(info); rs != nil {
			return rs
		}
		return other
	case constructedTag(2):
		r := Recipient{Kind: KEK}
		var kekid, id, ek cryptobyte.String
		if !info.ReadASN1Integer(&version) || !info.ReadASN1(&kekid, cbasn1.SEQUENCE) ||
			!kekid.ReadASN1(&id, cbasn1.OCTET_STRING) || !readAlgorithm(&info, &r.keyAlg) ||
			!info.ReadASN1(&ek, cbasn1.OCTET_STRING) || !info.Empty() {
			return other
		}
		r.KEKID, r.encryptedKey = id, ek
		return []Recipient{r}
	case constructedTag(3):
		return []Recipient{{Kind: Password}}
	}
	return other
}

// parseKeyAgreement reads the contents of a KeyAgreeRecipientInfo; nil when
// they do not parse.
func parseKeyAgreement(info cryptobyte.String) []Recipient {
	var version int64
	var originator, keys cryptobyte.String
	if !info.ReadASN1Integer(&version) || !info.ReadASN1(&originator, constructedTag(0)) {
		return nil
	}
	var orig *originatorKey
	// Only an ephemeral originator key (RFC 5753) is usable; a static one
	// is listed all the same.
	if originator.PeekASN1Tag(constructedTag(1)) {
		var okey cryptobyte.String
		var bits asn1.BitString
		orig = &originatorKey{}
		if !originator.ReadASN1(&okey, constructedTag(1)) || !readAlgorithm(&okey, &orig.alg) ||
			!okey.ReadASN1BitString(&bits) || bits.BitLength%8 != 0 {
			return nil
		}
		orig.key = bits.Bytes
	}
	var ukm []byte
	if info.PeekASN1Tag(constructedTag(1)) {
		var explicit, octets cryptobyte.String
		if !info.ReadASN1(&explicit, constructedTag(1)) || !explicit.ReadASN1(&octets, cbasn1.OCTET_STRING) {
			return nil
		}
		ukm = octets
	}
	var alg algorithm
	if !readAlgorithm(&info, &alg) || !info.ReadASN1(&keys, cbasn1.SEQUENCE) || !info.Empty() {
		return nil
	}
	var out []Recipient
	for !keys.Empty() {
		var rek, ek cryptobyte.String
		r := Recipient{Kind: KeyAgreement, keyAlg: alg, originator: orig, ukm: ukm}
		if !keys.ReadASN1(&rek, cbasn1.SEQUENCE) || !readKeyAgreeID(&rek, &r.ID) ||
			!rek.ReadASN1(&ek, cbasn1.OCTET_STRING) || !rek.Empty() {
			return nil
		}
		r.encryptedKey = ek
		out = append(out, r)
	}
	return out
}

// readKeyAgreeID reads a KeyAgreeRecipientIdentifier: an
// IssuerAndSerialNumber or [0] IMPLICIT RecipientKeyIdentifier.
func readKeyAgreeID(s *cryptobyte.String, id *CertID) bool {
	if !s.PeekASN1Tag(constructedTag(0)) {
		var ias cryptobyte.String
		return s.ReadASN1(&ias, cbasn1.SEQUENCE) && readIssuerAndSerial(&ias, id) && ias.Empty()
	}
	var rkeyID, ski cryptobyte.String
	if !s.ReadASN1(&rkeyID, constructedTag(0)) || !rkeyID.ReadASN1(&ski, cbasn1.OCTET_STRING) {
		return false
	}
	id.SubjectKeyID = ski
	return true
}
