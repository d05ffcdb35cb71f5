package keystore

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"unicode/utf16"

	"smimeproxy/internal/ber"
)

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	macHashes        = map[string]func() hash.Hash{
		"1.3.14.3.2.26":          sha1.New,
		"2.16.840.1.101.3.4.2.1": sha256.New,
		"2.16.840.1.101.3.4.2.2": sha512.New384,
		"2.16.840.1.101.3.4.2.3": sha512.New,
	}
)

// maxMACIterations bounds the work a hostile file can ask for.
const maxMACIterations = 1 << 22

var errPFX = errors.New("keystore: malformed PKCS #12 file")

type macData struct {
	Mac struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}
	MacSalt    []byte
	Iterations int `asn1:"optional,default:1"`
}

// derPKCS12 re-encodes a BER PKCS #12 file (as NSS and Java write them) in
// DER for go-pkcs12: the PFX, the authenticated safe and the plain
// SafeContents in it. The MAC covers the authenticated safe's bytes, so it
// is checked here on the original and computed again over the DER. Input
// that is DER already comes back unchanged. Encrypted SafeContents are not
// touched (their plaintext is go-pkcs12's business).
func derPKCS12(data []byte, password string) ([]byte, error) {
	root, err := ber.Parse(data)
	if err != nil {
		return nil, err
	}
	// PFX ::= SEQUENCE { version INTEGER, authSafe ContentInfo, macData MacData OPTIONAL }
	pfx := root.Children()
	if !is(root, ber.ClassUniversal, ber.TagSequence, true) || len(pfx) < 2 || len(pfx) > 3 {
		return nil, fmt.Errorf("%w: not a PFX", errPFX)
	}
	octets := contentOctets(pfx[1])
	if octets == nil {
		return nil, fmt.Errorf("%w: the authenticated safe is not data", errPFX)
	}
	orig := octets.Bytes()
	safe, err := ber.Parse(orig)
	if err != nil {
		return nil, err
	}
	for _, ci := range safe.Children() {
		if err := fixContentInfo(ci); err != nil {
			return nil, err
		}
	}
	safeDER := safe.DER()
	if bytes.Equal(safeDER, orig) {
		return root.DER(), nil // the MAC still holds
	}
	if len(pfx) == 3 {
		pw, err := checkMAC(pfx[2], orig, password)
		if err != nil {
			return nil, err
		}
		if err := remac(pfx[2], safeDER, pw); err != nil {
			return nil, err
		}
	}
	octets.SetBytes(safeDER)
	return root.DER(), nil
}

func is(n *ber.Node, class ber.Class, tag int, constructed bool) bool {
	return n.Class() == class && n.Tag() == tag && n.Constructed() == constructed
}

// contentOctets returns the OCTET STRING of a data ContentInfo
// (SEQUENCE { OID, [0] EXPLICIT OCTET STRING }), or nil.
func contentOctets(ci *ber.Node) *ber.Node {
	c := ci.Children()
	if !is(ci, ber.ClassUniversal, ber.TagSequence, true) || len(c) != 2 || !isOID(c[0], oidData) {
		return nil
	}
	wrap := c[1].Children()
	if !is(c[1], ber.ClassContextSpecific, 0, true) || len(wrap) != 1 || !is(wrap[0], ber.ClassUniversal, ber.TagOctetString, false) {
		return nil
	}
	return wrap[0]
}

func isOID(n *ber.Node, oid asn1.ObjectIdentifier) bool {
	var got asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(n.DER(), &got)
	return err == nil && len(rest) == 0 && got.Equal(oid)
}

// fixContentInfo re-encodes the SafeContents of a data ContentInfo, and
// joins the encrypted content of an encryptedData one: in
// EncryptedContentInfo it is [0] IMPLICIT OCTET STRING, which BER may split.
func fixContentInfo(ci *ber.Node) error {
	if octets := contentOctets(ci); octets != nil {
		sc, err := ber.Parse(octets.Bytes())
		if err != nil {
			return err
		}
		octets.SetBytes(sc.DER())
		return nil
	}
	c := ci.Children()
	if !is(ci, ber.ClassUniversal, ber.TagSequence, true) || len(c) != 2 || !isOID(c[0], oidEncryptedData) {
		return nil // go-pkcs12 will say what it is
	}
	// [0] { EncryptedData SEQUENCE { version, EncryptedContentInfo SEQUENCE { type, alg, [0] content } } }
	wrap := c[1].Children()
	if len(wrap) != 1 || len(wrap[0].Children()) < 2 {
		return fmt.Errorf("%w: bad encryptedData", errPFX)
	}
	eci := wrap[0].Children()[1].Children()
	if len(eci) == 3 && eci[2].Class() == ber.ClassContextSpecific && eci[2].Tag() == 0 {
		return eci[2].Join(ber.TagOctetString)
	}
	return nil
}

// checkMAC verifies the PFX MAC over content and returns the password bytes
// that matched. An empty password is tried both ways implementations write it.
func checkMAC(mac *ber.Node, content []byte, password string) ([]byte, error) {
	var md macData
	if rest, err := asn1.Unmarshal(mac.DER(), &md); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: bad MAC data", errPFX)
	}
	newHash := macHashes[md.Mac.Algorithm.Algorithm.String()]
	if newHash == nil {
		return nil, fmt.Errorf("keystore: PKCS #12 MAC algorithm %s is not supported in a BER file", md.Mac.Algorithm.Algorithm)
	}
	if md.Iterations < 1 || md.Iterations > maxMACIterations {
		return nil, fmt.Errorf("%w: MAC iteration count %d", errPFX, md.Iterations)
	}
	candidates := [][]byte{bmpPassword(password)}
	if password == "" {
		candidates = append(candidates, nil)
	}
	for _, pw := range candidates {
		if hmac.Equal(pfxMAC(newHash, md, pw, content), md.Mac.Digest) {
			return pw, nil
		}
	}
	return nil, ErrWrongPassword
}

// remac replaces the digest in mac with the MAC of content.
func remac(mac *ber.Node, content, pw []byte) error {
	var md macData
	if _, err := asn1.Unmarshal(mac.DER(), &md); err != nil {
		return err
	}
	digestInfo := mac.Children()[0].Children()
	if len(digestInfo) != 2 {
		return fmt.Errorf("%w: bad MAC data", errPFX)
	}
	digestInfo[1].SetBytes(pfxMAC(macHashes[md.Mac.Algorithm.Algorithm.String()], md, pw, content))
	return nil
}

func pfxMAC(newHash func() hash.Hash, md macData, pw, content []byte) []byte {
	key := pkcs12KDF(newHash, md.MacSalt, pw, md.Iterations, 3, newHash().Size())
	h := hmac.New(newHash, key)
	h.Write(content)
	return h.Sum(nil)
}

// bmpPassword is the password as PKCS #12 hashes it: UTF-16BE, NUL-terminated.
func bmpPassword(s string) []byte {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = append(out, byte(u>>8), byte(u))
	}
	return append(out, 0, 0)
}

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2; id 3 makes MAC keys.
func pkcs12KDF(newHash func() hash.Hash, salt, password []byte, iterations int, id byte, size int) []byte {
	h := newHash()
	v := h.BlockSize()
	fill := func(p []byte) []byte {
		out := make([]byte, v*((len(p)+v-1)/v))
		for i := range out {
			out[i] = p[i%len(p)]
		}
		return out
	}
	d := bytes.Repeat([]byte{id}, v)
	in := append(fill(salt), fill(password)...)
	var out []byte
	for len(out) < size {
		h.Reset()
		h.Write(d)
		h.Write(in)
		a := h.Sum(nil)
		for range iterations - 1 {
			h.Reset()
			h.Write(a)
			a = h.Sum(a[:0])
		}
		out = append(out, a...)
		b := fill(a)[:v]
		for k := 0; k < len(in); k += v { // each v-byte block of in += b + 1
			carry := 1
			for m := v - 1; m >= 0; m-- {
				s := int(in[k+m]) + int(b[m]) + carry
				in[k+m], carry = byte(s), s>>8
			}
		}
	}
	return out[:size]
}
