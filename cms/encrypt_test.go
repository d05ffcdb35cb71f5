package cms

import (
	"bytes"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestEnvelopeDER: envelope writes its DER by hand; it must be what a DER
// builder writes from the same parts, at every size where a length takes
// one more octet, and decrypt to the content.
func TestEnvelopeDER(t *testing.T) {
	infos := [][]byte{{0x30, 0x03, 0x02, 0x01, 0x02}, {0x30, 0x03, 0x02, 0x01, 0x01}}
	for _, c := range []Cipher{AES256CBC, AES128GCM} {
		ci, _ := c.info()
		cek := make([]byte, ci.keyLen)
		rand.Read(cek)
		for _, n := range []int{0, 1, 15, 16, 17, 63, 64, 80, 95, 96, 111, 112, 127, 128, 200, 255, 256, 4000, 65519, 65535, 65536, 1<<16 + 100, 1 << 24} {
			content := make([]byte, n)
			rand.Read(content)
			der, err := envelope(ci, cek, content, 2, infos)
			if err != nil {
				t.Fatal(err)
			}
			if want := rebuildEnvelope(t, der); !bytes.Equal(der, want) {
				t.Fatalf("%v, %d bytes: envelope wrote\n%x\na DER builder writes\n%x", c, n, head(der), head(want))
			}
			e, err := ParseEnvelope(der)
			if err != nil {
				t.Fatalf("%v, %d bytes: %v", c, n, err)
			}
			got, err := e.decryptContent(cek)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("%v, %d bytes: decrypts to %d bytes, %v", c, n, len(got), err)
			}
			if cap(der) != len(der) {
				t.Errorf("%v, %d bytes: %d bytes of DER in a buffer of %d", c, n, len(der), cap(der))
			}
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 96)] }

// rebuildEnvelope reads der strictly and writes it again with a DER builder.
func rebuildEnvelope(t *testing.T, der []byte) []byte {
	t.Helper()
	s := cryptobyte.String(der)
	var ci, explicit, data, infos, eci, alg, ct, tag cryptobyte.String
	var typ, dataType cbasn1.Tag
	var contentType, inner []byte
	var version int64
	var innerType cryptobyte.String
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() ||
		!ci.ReadAnyASN1Element((*cryptobyte.String)(&contentType), &typ) ||
		!ci.ReadASN1(&explicit, constructedTag(0)) || !ci.Empty() ||
		!explicit.ReadASN1(&data, cbasn1.SEQUENCE) || !explicit.Empty() ||
		!data.ReadASN1Integer(&version) || !data.ReadASN1(&infos, cbasn1.SET) ||
		!data.ReadASN1(&eci, cbasn1.SEQUENCE) ||
		!eci.ReadAnyASN1Element(&innerType, &dataType) ||
		!eci.ReadAnyASN1Element((*cryptobyte.String)(&inner), &dataType) ||
		!eci.ReadASN1(&ct, implicitTag(0)) || !eci.Empty() {
		t.Fatalf("envelope is not DER of the expected shape: %x", head(der))
	}
	alg = cryptobyte.String(inner)
	hasTag := data.PeekASN1Tag(cbasn1.OCTET_STRING)
	if hasTag && !data.ReadASN1(&tag, cbasn1.OCTET_STRING) || !data.Empty() {
		t.Fatalf("envelope ends badly: %x", head(der))
	}
	out, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(contentType)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(version)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(infos) })
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddBytes(innerType)
						b.AddBytes(alg)
						b.AddASN1(implicitTag(0), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
					})
					if hasTag {
						b.AddASN1OctetString(tag)
					}
				})
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
