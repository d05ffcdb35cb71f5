package cms

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
)

// Decrypt opens the envelope with the private key of cert: a crypto.Decrypter
// for RSA, an ecdh.KeyExchanger or *ecdsa.PrivateKey for EC. It returns
// ErrNoRecipient when no recipient names cert.
func (e *Envelope) Decrypt(cert *x509.Certificate, key crypto.PrivateKey) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, errors.New("cms: decrypt: no certificate or key")
	}
	ci, err := e.contentCipher()
	if err != nil {
		return nil, err
	}
	var lastErr error = ErrNoRecipient
	for i := range e.Recipients {
		r := &e.Recipients[i]
		if (r.Kind != KeyTransport && r.Kind != KeyAgreement) || !r.ID.Matches(cert) {
			continue
		}
		var cek []byte
		if r.Kind == KeyTransport {
			cek, err = r.transportedKey(key, ci.keyLen)
		} else {
			cek, err = r.agreedKey(key)
		}
		if err != nil {
			lastErr = err
			continue
		}
		return e.open(ci, cek)
	}
	return nil, lastErr
}

// DecryptKEK opens the envelope with a pre-shared key-encryption key.
func (e *Envelope) DecryptKEK(keyID, kek []byte) ([]byte, error) {
	ci, err := e.contentCipher()
	if err != nil {
		return nil, err
	}
	for _, r := range e.Recipients {
		if r.Kind != KEK || !bytes.Equal(r.KEKID, keyID) {
			continue
		}
		if n, ok := keyWrapLen(r.keyAlg.oid); !ok {
			return nil, &UnsupportedError{What: "key wrap algorithm", OID: r.keyAlg.oid}
		} else if n != len(kek) {
			return nil, fmt.Errorf("cms: decrypt: the key-encryption key has %d bytes, %s needs %d", len(kek), r.keyAlg.oid, n)
		}
		cek, err := unwrapKey(kek, r.encryptedKey)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		return e.open(ci, cek)
	}
	return nil, ErrNoRecipient
}

func (e *Envelope) contentCipher() (cipherInfo, error) {
	if !e.CipherKnown {
		name := string(e.Cipher)
		if e.Cipher.Supported() { // one of ours, in the other kind of envelope
			name += map[bool]string{false: " in EnvelopedData", true: " in AuthEnvelopedData"}[e.Authenticated]
		}
		return cipherInfo{}, &UnsupportedError{What: "content cipher", Name: name, OID: e.CipherOID}
	}
	ci, _ := e.Cipher.info()
	return ci, nil
}

// open decrypts the content once the content key is known.
func (e *Envelope) open(ci cipherInfo, cek []byte) ([]byte, error) {
	if len(cek) != ci.keyLen {
		return nil, fmt.Errorf("%w: content key of a bad length", ErrDecrypt)
	}
	return e.decryptContent(cek)
}
