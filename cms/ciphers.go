package cms

import (
	"encoding/asn1"
	"strconv"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// cipherInfo describes a content cipher.
type cipherInfo struct {
	cipher Cipher
	oid    asn1.ObjectIdentifier
	keyLen int
	// wrap is the AES key wrap of the same strength, for ECDH recipients
	// (RFC 5753); nil for a cipher we only decrypt.
	wrap asn1.ObjectIdentifier
}

var ciphers = []cipherInfo{
	{AES256CBC, oidAES256CBC, 32, oidAES256Wrap},
	{AES128CBC, oidAES128CBC, 16, oidAES128Wrap},
	{AES192CBC, oidAES192CBC, 24, oidAES192Wrap},
	{AES128GCM, oidAES128GCM, 16, oidAES128Wrap},
	{AES256GCM, oidAES256GCM, 32, oidAES256Wrap},
	{DES3CBC, oidDES3CBC, 24, nil},
}

// namedCiphers are content ciphers that mail in the field may use and
// that we do not decrypt: named in reports, never used. RC2 is named by
// cipherName, from its parameters.
var namedCiphers = []struct {
	name Cipher
	oid  asn1.ObjectIdentifier
}{
	{"des-cbc", asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}},
	{"aes-192-gcm", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}},
	{"aes-128-ccm", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 7}},
	{"aes-192-ccm", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 27}},
	{"aes-256-ccm", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 47}},
	{"chacha20-poly1305", asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 18}},
	{"camellia-128-cbc", asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 2}},
	{"camellia-192-cbc", asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 3}},
	{"camellia-256-cbc", asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 4}},
	{"cast5-cbc", asn1.ObjectIdentifier{1, 2, 840, 113533, 7, 66, 10}},
	{"idea-cbc", asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 188, 7, 1, 1, 2}},
	{"seed-cbc", asn1.ObjectIdentifier{1, 2, 410, 200004, 1, 4}},
}

var oidRC2CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}

// info returns what this package knows to encrypt or decrypt with c; the
// zero Cipher is AES256CBC.
func (c Cipher) info() (cipherInfo, bool) {
	if c == "" {
		c = AES256CBC
	}
	for _, ci := range ciphers {
		if ci.cipher == c {
			return ci, true
		}
	}
	return cipherInfo{}, false
}

func cipherForOID(oid asn1.ObjectIdentifier) (cipherInfo, bool) {
	for _, ci := range ciphers {
		if ci.oid.Equal(oid) {
			return ci, true
		}
	}
	return cipherInfo{}, false
}

// cipherName names the content-encryption algorithm alg, known or not.
func cipherName(alg algorithm) Cipher {
	if ci, ok := cipherForOID(alg.oid); ok {
		return ci.cipher
	}
	for _, n := range namedCiphers {
		if n.oid.Equal(alg.oid) {
			return n.name
		}
	}
	if alg.oid.Equal(oidRC2CBC) {
		return rc2Name(alg.params)
	}
	return Cipher(alg.oid.String())
}

// rc2Name reads the effective key size from RC2-CBC parameters (RFC 8018
// B.2.3: the version 160 means 40 bits, 120 64 bits, 58 128 bits, and 256
// or more the number itself).
func rc2Name(params []byte) Cipher {
	s := cryptobyte.String(params)
	var seq cryptobyte.String
	var version int64
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.PeekASN1Tag(cbasn1.INTEGER) || !seq.ReadASN1Integer(&version) {
		return "rc2-cbc"
	}
	bits := map[int64]int64{160: 40, 120: 64, 58: 128}[version]
	if version >= 256 {
		bits = version
	}
	if bits == 0 {
		return "rc2-cbc"
	}
	return Cipher("rc2-" + strconv.FormatInt(bits, 10) + "-cbc")
}

// String returns the name used in logs and headers, such as "aes-256-cbc",
// "rc2-40-cbc" or, for an algorithm without a name here, its dotted OID.
func (c Cipher) String() string { return string(c) }

// Supported reports whether this package can decrypt content encrypted
// with c.
func (c Cipher) Supported() bool {
	_, ok := c.info()
	return ok && c != ""
}

// Cipher returns the content cipher a capability names, if it names one we
// can decrypt.
func (c Capability) Cipher() (Cipher, bool) {
	ci, ok := cipherForOID(c.Algorithm)
	return ci.cipher, ok
}

// DefaultCapabilities is what we advertise in signatures: the ciphers and
// algorithms we read, strongest first.
func DefaultCapabilities() []Capability {
	caps := []Capability{
		{Algorithm: oidAES256GCM},
		{Algorithm: oidAES128GCM},
		{Algorithm: oidAES256CBC},
		{Algorithm: oidAES192CBC},
		{Algorithm: oidAES128CBC},
		// RFC 8551 2.7.1: RSAES-OAEP, with the SHA-256 parameters we send.
		{Algorithm: oidRSAESOAEP, Parameters: oaepSHA256Params},
	}
	// Copies, so that a caller who edits them cannot change our tables.
	for i := range caps {
		caps[i].Algorithm = append(asn1.ObjectIdentifier(nil), caps[i].Algorithm...)
		caps[i].Parameters = append([]byte(nil), caps[i].Parameters...)
	}
	return caps
}
