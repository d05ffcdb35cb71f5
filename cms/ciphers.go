package cms

import (
	"encoding/asn1"
	"strconv"
)

// cipherInfo describes a content cipher.
type cipherInfo struct {
	cipher Cipher
	name   string
	oid    asn1.ObjectIdentifier
	keyLen int
	// wrap is the AES key wrap of the same strength, for ECDH recipients
	// (RFC 5753); nil for a cipher we only decrypt.
	wrap asn1.ObjectIdentifier
}

var ciphers = []cipherInfo{
	{AES256CBC, "aes-256-cbc", oidAES256CBC, 32, oidAES256Wrap},
	{AES128CBC, "aes-128-cbc", oidAES128CBC, 16, oidAES128Wrap},
	{AES192CBC, "aes-192-cbc", oidAES192CBC, 24, oidAES192Wrap},
	{AES128GCM, "aes-128-gcm", oidAES128GCM, 16, oidAES128Wrap},
	{AES256GCM, "aes-256-gcm", oidAES256GCM, 32, oidAES256Wrap},
	{DES3CBC, "des-ede3-cbc", oidDES3CBC, 24, nil},
}

func (c Cipher) info() (cipherInfo, bool) {
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

// String returns the name used in logs and headers, such as "aes-256-cbc".
func (c Cipher) String() string {
	if ci, ok := c.info(); ok {
		return ci.name
	}
	return "cipher(" + strconv.Itoa(int(c)) + ")"
}

// Cipher returns the content cipher a capability names, if it names one.
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
