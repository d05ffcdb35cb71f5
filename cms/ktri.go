package cms

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// oaepSHA256Params is RSAES-OAEP-params for SHA-256 with MGF1-SHA-256 and
// the empty label, every field written out (RFC 4055 4.1): OpenSSL cannot
// decrypt when the MGF1 hash is left to its SHA-1 default by mistake.
var oaepSHA256Params = func() []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { addAlgorithm(b, oidSHA256, nullParams) })
		b.AddASN1(constructedTag(1), func(b *cryptobyte.Builder) { addMGF1(b, oidSHA256) })
	})
	return b.BytesOrPanic()
}()

// keyTransport encrypts cek to an RSA key and returns the algorithm
// identifier and the encrypted key.
func keyTransport(pub *rsa.PublicKey, cek []byte, oaep bool) (algorithm, []byte, error) {
	if oaep {
		ek, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, cek, nil)
		return algorithm{oid: oidRSAESOAEP, params: oaepSHA256Params}, ek, err
	}
	//lint:ignore SA1019 PKCS #1 v1.5 is the key transport every S/MIME client reads (RFC 8551 2.3).
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
	return algorithm{oid: oidRSAEncryption, params: nullParams}, ek, err
}

// transportedKey decrypts a ktri's content key of keyLen bytes.
func (r *Recipient) transportedKey(key crypto.PrivateKey, keyLen int) ([]byte, error) {
	d, ok := key.(crypto.Decrypter)
	if !ok {
		return nil, fmt.Errorf("cms: decrypt: a %T cannot decrypt for an RSA recipient", key)
	}
	switch {
	case r.keyAlg.oid.Equal(oidRSAEncryption):
		// Bleichenbacher: a padding failure must look like any other wrong
		// key. So go on with a random key and let the content fail to
		// decrypt. rsa.PrivateKey does this itself, in constant time, when
		// given SessionKeyLen; this covers other Decrypters.
		//lint:ignore SA1019 most S/MIME mail arrives with PKCS #1 v1.5 key transport.
		cek, err := d.Decrypt(rand.Reader, r.encryptedKey, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: keyLen})
		if err != nil || len(cek) != keyLen {
			cek = make([]byte, keyLen)
			rand.Read(cek)
		}
		return cek, nil
	case r.keyAlg.oid.Equal(oidRSAESOAEP):
		opts, err := parseOAEPParams(r.keyAlg.params)
		if err != nil {
			return nil, err
		}
		cek, err := d.Decrypt(rand.Reader, r.encryptedKey, opts)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		if len(cek) != keyLen {
			return nil, fmt.Errorf("%w: content key of a bad length", ErrDecrypt)
		}
		return cek, nil
	}
	return nil, &UnsupportedError{What: "key transport algorithm", OID: r.keyAlg.oid}
}

// parseOAEPParams reads RSAES-OAEP-params (RFC 4055 4.1); absent parameters
// mean SHA-1, MGF1-SHA-1 and the empty label.
func parseOAEPParams(params []byte) (*rsa.OAEPOptions, error) {
	opts := &rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA1}
	if (algorithm{params: params}).paramsEmpty() {
		return opts, nil
	}
	s := cryptobyte.String(params)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed("bad RSAES-OAEP parameters")
	}
	var err error
	if seq.PeekASN1Tag(constructedTag(0)) {
		if opts.Hash, err = readHashAlgorithm(&seq, 0); err != nil {
			return nil, err
		}
	}
	if seq.PeekASN1Tag(constructedTag(1)) {
		if opts.MGFHash, err = readMGF1(&seq, 1); err != nil {
			return nil, err
		}
	}
	if seq.PeekASN1Tag(constructedTag(2)) {
		var explicit, label cryptobyte.String
		var alg algorithm
		if !seq.ReadASN1(&explicit, constructedTag(2)) || !readAlgorithm(&explicit, &alg) || !explicit.Empty() {
			return nil, malformed("bad OAEP label source")
		}
		if !alg.oid.Equal(oidPSpecified) {
			return nil, &UnsupportedError{What: "OAEP label source", OID: alg.oid}
		}
		p := cryptobyte.String(alg.params)
		if !p.ReadASN1(&label, cbasn1.OCTET_STRING) || !p.Empty() {
			return nil, malformed("bad OAEP label")
		}
		opts.Label = label
	}
	if !seq.Empty() {
		return nil, malformed("bad RSAES-OAEP parameters")
	}
	return opts, nil
}
