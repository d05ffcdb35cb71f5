package cms

import "encoding/asn1"

// Identify reads the content type of a ContentInfo (BER or DER) without
// parsing the rest.
func Identify(data []byte) (Type, error) {
	p := berParser{data: data}
	id, _, err := p.identifier()
	if err != nil {
		return TypeOther, err
	}
	if len(id) != 1 || id[0] != 0x30 {
		return TypeOther, malformed("ContentInfo is not a SEQUENCE")
	}
	if _, _, err := p.length(); err != nil {
		return TypeOther, err
	}
	id, _, err = p.identifier()
	if err != nil {
		return TypeOther, err
	}
	n, indefinite, err := p.length()
	if err != nil {
		return TypeOther, err
	}
	if len(id) != 1 || id[0] != 0x06 || indefinite || n >= 0x80 {
		return TypeOther, malformed("ContentInfo without a content type")
	}
	var oid asn1.ObjectIdentifier
	der := append([]byte{0x06, byte(n)}, data[p.pos:p.pos+n]...)
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
