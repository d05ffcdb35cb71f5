package cms

import (
	"encoding/asn1"

	"smimeproxy/internal/ber"
)

// Identify reads the content type of a ContentInfo (BER or DER) without
// parsing the rest.
func Identify(data []byte) (Type, error) {
	h, rest, err := ber.ReadHeader(data)
	if err != nil {
		return TypeOther, malformed(err.Error())
	}
	if h.Class != ber.ClassUniversal || h.Tag != ber.TagSequence || !h.Constructed {
		return TypeOther, malformed("ContentInfo is not a SEQUENCE")
	}
	h, rest, err = ber.ReadHeader(rest)
	if err != nil {
		return TypeOther, malformed(err.Error())
	}
	if h.Class != ber.ClassUniversal || h.Tag != ber.TagOID || h.Constructed || h.Length >= 0x80 {
		return TypeOther, malformed("ContentInfo without a content type")
	}
	var oid asn1.ObjectIdentifier
	der := append([]byte{0x06, byte(h.Length)}, rest[:h.Length]...)
	if _, err := asn1.Unmarshal(der, &oid); err != nil {
		return TypeOther, malformed("bad content type")
	}
	return typeOf(oid), nil
}

func typeOf(oid asn1.ObjectIdentifier) Type {
	switch {
	case oid.Equal(oidData):
		return TypeData
	case oid.Equal(oidSignedData):
		return TypeSignedData
	case oid.Equal(oidEnvelopedData):
		return TypeEnvelopedData
	case oid.Equal(oidAuthEnvelopedData):
		return TypeAuthEnvelopedData
	}
	return TypeOther
}
