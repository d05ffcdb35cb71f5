package cms

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// agreeScheme is a key agreement algorithm we read: ephemeral-static ECDH
// with the X9.63 KDF (RFC 5753) or HKDF (RFC 8418).
type agreeScheme struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
	hkdf bool
}

// The cofactor variants compute the same on curves of cofactor 1.
var agreeSchemes = []agreeScheme{
	{oidDHStdSHA1KDF, crypto.SHA1, false},
	{oidDHStdSHA224KDF, crypto.SHA224, false},
	{oidDHStdSHA256KDF, crypto.SHA256, false},
	{oidDHStdSHA384KDF, crypto.SHA384, false},
	{oidDHStdSHA512KDF, crypto.SHA512, false},
	{oidDHCofactorSHA1KDF, crypto.SHA1, false},
	{oidDHCofactorSHA224KDF, crypto.SHA224, false},
	{oidDHCofactorSHA256KDF, crypto.SHA256, false},
	{oidDHCofactorSHA384KDF, crypto.SHA384, false},
	{oidDHCofactorSHA512KDF, crypto.SHA512, false},
	{oidHKDFWithSHA256, crypto.SHA256, true},
	{oidHKDFWithSHA384, crypto.SHA384, true},
	{oidHKDFWithSHA512, crypto.SHA512, true},
}

func agreeSchemeFor(oid asn1.ObjectIdentifier) (agreeScheme, bool) {
	for _, s := range agreeSchemes {
		if s.oid.Equal(oid) {
			return s, true
		}
	}
	return agreeScheme{}, false
}

// keyWrapLen is the key length of each AES key wrap algorithm.
func keyWrapLen(oid asn1.ObjectIdentifier) (int, bool) {
	switch {
	case oid.Equal(oidAES128Wrap):
		return 16, true
	case oid.Equal(oidAES192Wrap):
		return 24, true
	case oid.Equal(oidAES256Wrap):
		return 32, true
	}
	return 0, false
}

// agreedKey derives the key-encryption key of a kari and unwraps the
// content key with it.
func (r *Recipient) agreedKey(key crypto.PrivateKey) ([]byte, error) {
	var kx ecdh.KeyExchanger
	switch k := key.(type) {
	case ecdh.KeyExchanger:
		kx = k
	case *ecdsa.PrivateKey:
		p, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("cms: decrypt: %w", err)
		}
		kx = p
	default:
		return nil, fmt.Errorf("cms: decrypt: a %T cannot decrypt for an ECDH recipient", key)
	}
	if r.originator == nil {
		return nil, &UnsupportedError{What: "key agreement with a static originator key"}
	}
	scheme, ok := agreeSchemeFor(r.keyAlg.oid)
	if !ok {
		return nil, &UnsupportedError{What: "key agreement algorithm", OID: r.keyAlg.oid}
	}
	// The KDF covers the key wrap AlgorithmIdentifier as the sender encoded
	// it: RFC 5753 says its parameters are absent, but NSS 3.100 and later
	// write (and derive from) NULL ones, and OpenSSL reads both this way.
	params := cryptobyte.String(r.keyAlg.params)
	var wrapDER cryptobyte.String
	var wrap algorithm
	if !params.ReadASN1Element(&wrapDER, cbasn1.SEQUENCE) || !params.Empty() {
		return nil, malformed("bad key wrap algorithm")
	}
	if s := wrapDER; !readAlgorithm(&s, &wrap) || !wrap.paramsEmpty() {
		return nil, malformed("bad key wrap algorithm parameters")
	}
	kekLen, ok := keyWrapLen(wrap.oid)
	if !ok {
		return nil, &UnsupportedError{What: "key wrap algorithm", OID: wrap.oid}
	}
	pub, err := kx.Curve().NewPublicKey(r.originator.key)
	if err != nil {
		return nil, fmt.Errorf("%w: originator key: %v", ErrDecrypt, err)
	}
	z, err := kx.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	kek, err := deriveKEK(scheme.hash, scheme.hkdf, z, wrapDER, r.ukm, kekLen)
	if err != nil {
		return nil, err
	}
	cek, err := unwrapKey(kek, r.encryptedKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return cek, nil
}

// deriveKEK runs the KDF over the shared secret z and ECC-CMS-SharedInfo
// (RFC 5753 7.2): the key wrap AlgorithmIdentifier (DER, as the
// KeyAgreeRecipientInfo carries it), the ukm, and the key length in bits.
func deriveKEK(h crypto.Hash, useHKDF bool, z, wrapAlg, ukm []byte, kekLen int) ([]byte, error) {
	info, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(wrapAlg)
			if ukm != nil {
				b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddASN1OctetString(ukm) })
			}
			b.AddASN1(constructedTag(2), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(binary.BigEndian.AppendUint32(nil, uint32(kekLen*8)))
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cms: encode ECC-CMS-SharedInfo: %w", err)
	}
	if useHKDF {
		return hkdf.Key(h.New, z, nil, string(info), kekLen)
	}
	// ANSI X9.63: Hash(Z || counter || SharedInfo), counting from 1.
	var out []byte
	for counter := uint32(1); len(out) < kekLen; counter++ {
		w := h.New()
		w.Write(z)
		w.Write(binary.BigEndian.AppendUint32(nil, counter))
		w.Write(info)
		out = w.Sum(out)
	}
	return out[:kekLen], nil
}

// keyAgreement makes a kari for an EC or X25519 public key: an ephemeral
// key on the same curve, the X9.63 KDF with the hash that matches the curve
// (RFC 5753 and RFC 8551 2.7.1.2), and the AES key wrap wrap, named with
// absent parameters as RFC 5753 asks.
func keyAgreement(pub *ecdh.PublicKey, id CertID, cek []byte, wrap asn1.ObjectIdentifier) ([]byte, error) {
	wrapAlg, err := build(func(b *cryptobyte.Builder) { addAlgorithm(b, wrap, nil) })
	if err != nil {
		return nil, err
	}
	return keyAgreementWith(pub, id, cek, wrapAlg)
}

// keyAgreementWith is keyAgreement with the key wrap AlgorithmIdentifier
// given as DER: the same bytes go into the message and into the KDF.
func keyAgreementWith(pub *ecdh.PublicKey, id CertID, cek, wrapAlg []byte) ([]byte, error) {
	var wrap algorithm
	if s := cryptobyte.String(wrapAlg); !readAlgorithm(&s, &wrap) || !s.Empty() {
		return nil, errors.New("cms: bad key wrap algorithm")
	}
	curve := pub.Curve()
	kdf, h, keyAlg := oidDHStdSHA256KDF, crypto.SHA256, oidECPublicKey
	switch curve {
	case ecdh.P384():
		kdf, h = oidDHStdSHA384KDF, crypto.SHA384
	case ecdh.P521():
		kdf, h = oidDHStdSHA512KDF, crypto.SHA512
	case ecdh.X25519():
		keyAlg = oidX25519
	}
	kekLen, ok := keyWrapLen(wrap.oid)
	if !ok {
		return nil, &UnsupportedError{What: "key wrap algorithm", OID: wrap.oid}
	}
	eph, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(pub)
	if err != nil {
		return nil, err
	}
	kek, err := deriveKEK(h, false, z, wrapAlg, nil, kekLen)
	if err != nil {
		return nil, err
	}
	wrapped, err := wrapKey(kek, cek)
	if err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(3)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) {
				b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) {
					addAlgorithm(b, keyAlg, nil)
					b.AddASN1BitString(eph.PublicKey().Bytes())
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
