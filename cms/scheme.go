package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

type sigKind int

const (
	sigRSA sigKind = iota + 1 // RSASSA-PKCS1-v1_5
	sigPSS
	sigECDSA
	sigEd25519 // pure EdDSA (RFC 8419): the signature covers the message itself
)

// scheme is how a signature is made or checked.
type scheme struct {
	kind    sigKind
	hash    crypto.Hash // under the signature; zero for Ed25519
	saltLen int         // PSS
}

// parseScheme reads a SignerInfo's signatureAlgorithm; digest is its
// digestAlgorithm, which the RSA and ECDSA signatures reuse.
func parseScheme(alg algorithm, digest crypto.Hash) (scheme, error) {
	unsupported := &UnsupportedError{What: "signature algorithm", OID: alg.oid}
	switch {
	case alg.oid.Equal(oidRSAEncryption), alg.oid.Equal(oidSHA1WithRSA), alg.oid.Equal(oidSHA224WithRSA),
		alg.oid.Equal(oidSHA256WithRSA), alg.oid.Equal(oidSHA384WithRSA), alg.oid.Equal(oidSHA512WithRSA):
		if digest == 0 {
			return scheme{}, unsupported
		}
		return scheme{kind: sigRSA, hash: digest}, nil
	case alg.oid.Equal(oidECPublicKey), alg.oid.Equal(oidECDSAWithSHA1), alg.oid.Equal(oidECDSAWithSHA224),
		alg.oid.Equal(oidECDSAWithSHA256), alg.oid.Equal(oidECDSAWithSHA384), alg.oid.Equal(oidECDSAWithSHA512):
		if digest == 0 {
			return scheme{}, unsupported
		}
		return scheme{kind: sigECDSA, hash: digest}, nil
	case alg.oid.Equal(oidEd25519):
		return scheme{kind: sigEd25519}, nil
	case alg.oid.Equal(oidRSASSAPSS):
		return parsePSSParams(alg.params)
	}
	return scheme{}, unsupported
}

// parsePSSParams reads RSASSA-PSS-params (RFC 4055 3.1). Go verifies PSS
// only with MGF1 over the same hash and the standard trailer.
func parsePSSParams(params []byte) (scheme, error) {
	sc := scheme{kind: sigPSS, hash: crypto.SHA1, saltLen: 20}
	mgfHash := crypto.SHA1
	s := cryptobyte.String(params)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return scheme{}, malformed("bad RSASSA-PSS parameters")
	}
	if seq.PeekASN1Tag(constructedTag(0)) {
		h, err := readHashAlgorithm(&seq, 0)
		if err != nil {
			return scheme{}, err
		}
		sc.hash = h
	}
	if seq.PeekASN1Tag(constructedTag(1)) {
		h, err := readMGF1(&seq, 1)
		if err != nil {
			return scheme{}, err
		}
		mgfHash = h
	}
	var salt, trailer int64 = 20, 1
	if !seq.ReadOptionalASN1Integer(&salt, constructedTag(2), int64(20)) ||
		!seq.ReadOptionalASN1Integer(&trailer, constructedTag(3), int64(1)) || !seq.Empty() {
		return scheme{}, malformed("bad RSASSA-PSS parameters")
	}
	if mgfHash != sc.hash || trailer != 1 || salt < 0 || salt > 1<<16 {
		return scheme{}, &UnsupportedError{What: "RSASSA-PSS parameters"}
	}
	sc.saltLen = int(salt)
	return sc, nil
}

// readHashAlgorithm reads an [n] EXPLICIT AlgorithmIdentifier of a hash.
func readHashAlgorithm(s *cryptobyte.String, n int) (crypto.Hash, error) {
	var inner cryptobyte.String
	var alg algorithm
	if !s.ReadASN1(&inner, constructedTag(n)) || !readAlgorithm(&inner, &alg) || !inner.Empty() {
		return 0, malformed("bad hash algorithm")
	}
	h, ok := hashForOID(alg.oid)
	if !ok {
		return 0, &UnsupportedError{What: "digest algorithm", OID: alg.oid}
	}
	return h, nil
}

// readMGF1 reads an [n] EXPLICIT mask generation AlgorithmIdentifier, which
// must be MGF1, and returns its hash.
func readMGF1(s *cryptobyte.String, n int) (crypto.Hash, error) {
	var inner cryptobyte.String
	var alg algorithm
	if !s.ReadASN1(&inner, constructedTag(n)) || !readAlgorithm(&inner, &alg) || !inner.Empty() {
		return 0, malformed("bad mask generation function")
	}
	if !alg.oid.Equal(oidMGF1) {
		return 0, &UnsupportedError{What: "mask generation function", OID: alg.oid}
	}
	params := cryptobyte.String(alg.params)
	var hashAlg algorithm
	if !readAlgorithm(&params, &hashAlg) || !params.Empty() {
		return 0, malformed("bad MGF1 parameters")
	}
	h, ok := hashForOID(hashAlg.oid)
	if !ok {
		return 0, &UnsupportedError{What: "MGF1 digest algorithm", OID: hashAlg.oid}
	}
	return h, nil
}

type schemeKey struct {
	kind sigKind
	hash crypto.Hash
}

var x509Names = map[schemeKey]x509.SignatureAlgorithm{
	{sigRSA, crypto.SHA1}:     x509.SHA1WithRSA,
	{sigRSA, crypto.SHA256}:   x509.SHA256WithRSA,
	{sigRSA, crypto.SHA384}:   x509.SHA384WithRSA,
	{sigRSA, crypto.SHA512}:   x509.SHA512WithRSA,
	{sigPSS, crypto.SHA256}:   x509.SHA256WithRSAPSS,
	{sigPSS, crypto.SHA384}:   x509.SHA384WithRSAPSS,
	{sigPSS, crypto.SHA512}:   x509.SHA512WithRSAPSS,
	{sigECDSA, crypto.SHA1}:   x509.ECDSAWithSHA1,
	{sigECDSA, crypto.SHA256}: x509.ECDSAWithSHA256,
	{sigECDSA, crypto.SHA384}: x509.ECDSAWithSHA384,
	{sigECDSA, crypto.SHA512}: x509.ECDSAWithSHA512,
	{sigEd25519, 0}:           x509.PureEd25519,
}

// x509Algorithm names sc the way crypto/x509 does; SHA-224 has no name there.
func (sc scheme) x509Algorithm() x509.SignatureAlgorithm {
	return x509Names[schemeKey{sc.kind, sc.hash}]
}

// verify checks sig over msg with pub.
func (sc scheme) verify(pub crypto.PublicKey, msg, sig []byte) error {
	var ok bool
	switch sc.kind {
	case sigRSA, sigPSS:
		var k *rsa.PublicKey
		if k, ok = pub.(*rsa.PublicKey); !ok {
			break
		}
		digest := hashOf(sc.hash, msg)
		var err error
		if sc.kind == sigRSA {
			err = rsa.VerifyPKCS1v15(k, sc.hash, digest, sig)
		} else {
			err = rsa.VerifyPSS(k, sc.hash, digest, sig, &rsa.PSSOptions{SaltLength: sc.saltLen, Hash: sc.hash})
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSignature, err)
		}
		return nil
	case sigECDSA:
		var k *ecdsa.PublicKey
		if k, ok = pub.(*ecdsa.PublicKey); !ok {
			break
		}
		if !ecdsa.VerifyASN1(k, hashOf(sc.hash, msg), sig) {
			return ErrSignature
		}
		return nil
	case sigEd25519:
		var k ed25519.PublicKey
		if k, ok = pub.(ed25519.PublicKey); !ok {
			break
		}
		if !ed25519.Verify(k, msg, sig) {
			return ErrSignature
		}
		return nil
	}
	return fmt.Errorf("%w: the certificate's %T does not fit the signature algorithm", ErrSignature, pub)
}

// signingScheme chooses how key signs, and the identifier that says so.
func signingScheme(pub crypto.PublicKey, h crypto.Hash, pss bool) (scheme, algorithm, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		if pss {
			return scheme{kind: sigPSS, hash: h, saltLen: h.Size()},
				algorithm{oid: oidRSASSAPSS, params: pssParams(h)}, nil
		}
		// rsaEncryption, as OpenSSL, NSS and Outlook write it.
		return scheme{kind: sigRSA, hash: h}, algorithm{oid: oidRSAEncryption, params: nullParams}, nil
	case *ecdsa.PublicKey:
		oids := map[crypto.Hash]algorithm{
			crypto.SHA256: {oid: oidECDSAWithSHA256},
			crypto.SHA384: {oid: oidECDSAWithSHA384},
			crypto.SHA512: {oid: oidECDSAWithSHA512},
		}
		return scheme{kind: sigECDSA, hash: h}, oids[h], nil
	case ed25519.PublicKey:
		return scheme{kind: sigEd25519}, algorithm{oid: oidEd25519}, nil
	}
	return scheme{}, algorithm{}, &UnsupportedError{What: fmt.Sprintf("signing key type %T", pub)}
}

// sign signs msg with key.
func (sc scheme) sign(key crypto.Signer, msg []byte) ([]byte, error) {
	var opts crypto.SignerOpts = sc.hash
	switch sc.kind {
	case sigPSS:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: sc.hash}
	case sigEd25519:
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	return key.Sign(rand.Reader, hashOf(sc.hash, msg), opts)
}

// pssParams encodes RSASSA-PSS-params for h: MGF1 with h, a salt as long as
// the hash (RFC 4056, RFC 8702).
func pssParams(h crypto.Hash) []byte {
	oid, _ := oidForHash(h)
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { addAlgorithm(b, oid, nullParams) })
		b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) { addMGF1(b, oid) })
		b.AddASN1(constructedTag(2), func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(h.Size())) })
	})
	return b.BytesOrPanic()
}

// addMGF1 writes the AlgorithmIdentifier of MGF1 over the hash oid.
func addMGF1(b *cryptobyte.Builder, hash asn1.ObjectIdentifier) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidMGF1)
		addAlgorithm(b, hash, nullParams)
	})
}

func hashOf(h crypto.Hash, msg []byte) []byte {
	w := h.New()
	w.Write(msg)
	return w.Sum(nil)
}
