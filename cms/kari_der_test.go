package cms

import (
	"bytes"
	"encoding/asn1"
	"math/big"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// encodeKariReference is encodeKari as it was written with a DER builder.
func encodeKariReference(keyAlg, kdf asn1.ObjectIdentifier, ephKey, wrapAlg []byte, id CertID, wrapped []byte) ([]byte, error) {
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(3)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) {
				b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) {
					addAlgorithm(b, keyAlg, nil)
					b.AddASN1BitString(ephKey)
				})
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(kdf)
				b.AddBytes(wrapAlg)
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					if id.SubjectKeyID != nil {
						b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddASN1OctetString(id.SubjectKeyID) })
					} else {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
					}
					b.AddASN1OctetString(wrapped)
				})
			})
		})
	})
}

// TestKariDER: encodeKari writes what the DER builder wrote, for every
// curve's key sizes, both kinds of recipient identifier, and names long
// enough that lengths take more octets.
func TestKariDER(t *testing.T) {
	wrapAlg := must(build(func(b *cryptobyte.Builder) { addAlgorithm(b, oidAES256Wrap, nil) }))
	issuer := func(n int) []byte {
		return must(build(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1OctetString(bytes.Repeat([]byte("i"), n)) })
		}))
	}
	serial, _ := new(big.Int).SetString("1234567890abcdef1234567890abcdef", 16)
	ids := []CertID{
		{SubjectKeyID: bytes.Repeat([]byte{0x5a}, 20)},
		{Issuer: issuer(40), Serial: big.NewInt(1)},
		{Issuer: issuer(300), Serial: serial},
		{Issuer: issuer(70000), Serial: big.NewInt(-5)},
	}
	for _, alg := range []struct {
		keyAlg, kdf asn1.ObjectIdentifier
		keyLen      int
	}{
		{oidECPublicKey, oidDHStdSHA256KDF, 65},
		{oidECPublicKey, oidDHStdSHA384KDF, 97},
		{oidECPublicKey, oidDHStdSHA512KDF, 133},
		{oidX25519, oidDHStdSHA256KDF, 32},
	} {
		for i, id := range ids {
			ephKey := bytes.Repeat([]byte{4}, alg.keyLen)
			wrapped := bytes.Repeat([]byte{0xee}, 40)
			got, err := encodeKari(alg.keyAlg, alg.kdf, ephKey, wrapAlg, id, wrapped)
			if err != nil {
				t.Fatal(err)
			}
			want, err := encodeKariReference(alg.keyAlg, alg.kdf, ephKey, wrapAlg, id, wrapped)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%v, identifier %d: encodeKari wrote\n%x\nthe builder wrote\n%x", alg.keyAlg, i, head(got), head(want))
			}
			if cap(got) != len(got) {
				t.Errorf("%v, identifier %d: %d bytes in a buffer of %d", alg.keyAlg, i, len(got), cap(got))
			}
		}
	}
}
