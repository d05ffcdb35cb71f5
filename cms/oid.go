package cms

import (
	"crypto"
	_ "crypto/sha1" // crypto.Hash.New needs the hashes linked in
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/asn1"
)

// Object identifiers, named as in the RFCs that define them.
var (
	// Content types (RFC 5652, RFC 5083).
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}

	// Attributes (RFC 5652, RFC 8551, Microsoft).
	oidAttrContentType        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAttrSMIMECapabilities  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}
	oidAttrEncKeyPreference   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 11}
	oidAttrMSEncKeyPreference = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 16, 4}

	// Digests.
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA224 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	// RSA (RFC 8017, RFC 4055, RFC 4056).
	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidRSASSAPSS       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA224WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 14}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA224 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidX25519          = asn1.ObjectIdentifier{1, 3, 101, 110}

	// Content ciphers.
	oidAES128CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES256GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	oidDES3CBC   = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}

	// Key wrap (RFC 3394 in CMS, RFC 3565).
	oidAES128Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	oidAES192Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	oidAES256Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}

	// ECDH key agreement schemes (RFC 5753, RFC 8418).
	oidDHStdSHA1KDF        = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 2}
	oidDHStdSHA224KDF      = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 0}
	oidDHStdSHA256KDF      = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}
	oidDHStdSHA384KDF      = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	oidDHStdSHA512KDF      = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}
	oidDHCofactorSHA1KDF   = asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 3}
	oidDHCofactorSHA224KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 0}
	oidDHCofactorSHA256KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 1}
	oidDHCofactorSHA384KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 2}
	oidDHCofactorSHA512KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 14, 3}
	oidHKDFWithSHA256      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 28}
	oidHKDFWithSHA384      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 29}
	oidHKDFWithSHA512      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 30}
)

// digests maps digest algorithm identifiers to hashes.
var digests = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{oidSHA1, crypto.SHA1},
	{oidSHA224, crypto.SHA224},
	{oidSHA256, crypto.SHA256},
	{oidSHA384, crypto.SHA384},
	{oidSHA512, crypto.SHA512},
}

func hashForOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	for _, d := range digests {
		if d.oid.Equal(oid) {
			return d.hash, true
		}
	}
	return 0, false
}

func oidForHash(h crypto.Hash) (asn1.ObjectIdentifier, bool) {
	for _, d := range digests {
		if d.hash == h {
			return d.oid, true
		}
	}
	return nil, false
}
