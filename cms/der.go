package cms

import (
	"bytes"
	"encoding/asn1"
	"math/big"
	"math/bits"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"smimeproxy/internal/ber"
)

// Context-specific tags, as CMS uses them.
func implicitTag(n int) cbasn1.Tag    { return cbasn1.Tag(n).ContextSpecific() }
func constructedTag(n int) cbasn1.Tag { return cbasn1.Tag(n).ContextSpecific().Constructed() }

func malformed(msg string) error { return &SyntaxError{Msg: msg} }

// algorithm is an AlgorithmIdentifier.
type algorithm struct {
	oid    asn1.ObjectIdentifier
	params []byte // the DER element of the parameters; nil when absent
}

func readAlgorithm(s *cryptobyte.String, out *algorithm) bool {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&out.oid) {
		return false
	}
	out.params = nil
	if seq.Empty() {
		return true
	}
	var params cryptobyte.String
	var tag cbasn1.Tag
	if !seq.ReadAnyASN1Element(&params, &tag) || !seq.Empty() {
		return false
	}
	out.params = params
	return true
}

// paramsEmpty reports whether the parameters are absent or NULL, which
// RFC 4055 and RFC 5754 ask readers to treat alike.
func (a algorithm) paramsEmpty() bool {
	return a.params == nil || bytes.Equal(a.params, []byte{0x05, 0x00})
}

// addAlgorithm writes an AlgorithmIdentifier; params is a DER element or nil.
func addAlgorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, params []byte) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if params != nil {
			b.AddBytes(params)
		}
	})
}

// nullParams is the DER NULL that RSA algorithm identifiers carry.
var nullParams = []byte{0x05, 0x00}

// readInteger reads an INTEGER leniently: some certificates have serial
// numbers that are negative or not minimally encoded, and CMS names them
// as they are.
func readInteger(s *cryptobyte.String, out **big.Int) bool {
	var b cryptobyte.String
	if !s.ReadASN1(&b, cbasn1.INTEGER) || len(b) == 0 {
		return false
	}
	n := new(big.Int).SetBytes(b)
	if b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
	}
	*out = n
	return true
}

// readOctets reads an [n] IMPLICIT OCTET STRING, which BER senders may also
// send constructed, as a series of OCTET STRING segments.
func readOctets(s *cryptobyte.String, n int, out *[]byte) bool {
	if s.PeekASN1Tag(implicitTag(n)) {
		var b cryptobyte.String
		if !s.ReadASN1(&b, implicitTag(n)) {
			return false
		}
		*out = b
		return true
	}
	var segs cryptobyte.String
	if !s.ReadASN1(&segs, constructedTag(n)) {
		return false
	}
	joined := []byte{}
	for !segs.Empty() {
		var seg cryptobyte.String
		if !segs.ReadASN1(&seg, cbasn1.OCTET_STRING) {
			return false
		}
		joined = append(joined, seg...)
	}
	*out = joined
	return true
}

// hasTag reports whether the next element is [n], primitive or constructed.
func hasTag(s cryptobyte.String, n int) bool {
	return s.PeekASN1Tag(implicitTag(n)) || s.PeekASN1Tag(constructedTag(n))
}

// setContents joins the elements of a SET OF in DER order: sorted by
// their encodings.
func setContents(elems [][]byte) []byte {
	sorted := slices.Clone(elems)
	slices.SortFunc(sorted, bytes.Compare)
	return bytes.Join(sorted, nil)
}

// addSetOf writes a SET OF (or an implicitly tagged one) in DER order.
func addSetOf(b *cryptobyte.Builder, tag cbasn1.Tag, elems [][]byte) {
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(setContents(elems)) })
}

// appendHeader appends the identifier and length octets of a DER element
// with a low tag number and n bytes of contents.
func appendHeader(dst []byte, tag cbasn1.Tag, n int) []byte {
	dst = append(dst, byte(tag))
	if n < 0x80 {
		return append(dst, byte(n))
	}
	k := (bits.Len(uint(n)) + 7) / 8
	dst = append(dst, 0x80|byte(k))
	for i := k - 1; i >= 0; i-- {
		dst = append(dst, byte(n>>(8*i)))
	}
	return dst
}

// elementLen is the length of a DER element with a low tag number and n
// bytes of contents.
func elementLen(n int) int {
	if n < 0x80 {
		return 2 + n
	}
	return 2 + (bits.Len(uint(n))+7)/8 + n
}

// The DER of the object identifiers that every signature has.
var (
	derOIDData       = must(build(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) }))
	derOIDSignedData = must(build(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidSignedData) }))
)

// must is for DER that the package encodes from constants at start-up.
func must(der []byte, err error) []byte {
	if err != nil {
		panic("cms: encoding a constant: " + err.Error())
	}
	return der
}

// build runs f on a fresh builder and returns what it wrote.
func build(f func(b *cryptobyte.Builder)) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	f(b)
	return b.Bytes()
}

// parseContentInfo normalises data to DER and returns the content type of
// the ContentInfo and its [0] EXPLICIT content.
func parseContentInfo(data []byte) (asn1.ObjectIdentifier, cryptobyte.String, error) {
	der, err := ber.Normalize(data)
	if err != nil {
		return nil, nil, malformed(err.Error())
	}
	s := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) {
		return nil, nil, malformed("bad ContentInfo")
	}
	if !ci.ReadASN1(&content, constructedTag(0)) || !ci.Empty() {
		return nil, nil, malformed("ContentInfo without content")
	}
	return oid, content, nil
}
