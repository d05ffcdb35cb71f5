package cms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// GCM sizes we write (RFC 5084 3.2): the recommended 12-byte nonce and the
// full 16-byte tag.
const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// sealed is encrypted content with what the EncryptedContentInfo and the
// AuthEnvelopedData need to describe it.
type sealed struct {
	params     []byte // DER parameters of the content cipher
	ciphertext []byte
	tag        []byte // AEAD only
}

// seal encrypts content under cek.
func seal(ci cipherInfo, cek, content []byte) (*sealed, error) {
	block, err := newBlock(ci.cipher, cek)
	if err != nil {
		return nil, err
	}
	if ci.cipher.AEAD() {
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, gcmNonceSize)
		rand.Read(nonce)
		out := aead.Seal(nil, nonce, content, nil)
		params, err := build(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(nonce)
				b.AddASN1Int64(gcmTagSize) // not the DEFAULT 12, so it is written
			})
		})
		if err != nil {
			return nil, err
		}
		n := len(out) - gcmTagSize
		return &sealed{params: params, ciphertext: out[:n], tag: out[n:]}, nil
	}
	iv := make([]byte, block.BlockSize())
	rand.Read(iv)
	pad := block.BlockSize() - len(content)%block.BlockSize()
	buf := make([]byte, len(content)+pad)
	copy(buf, content)
	for i := len(content); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	params, err := build(func(b *cryptobyte.Builder) { b.AddASN1OctetString(iv) })
	if err != nil {
		return nil, err
	}
	return &sealed{params: params, ciphertext: buf}, nil
}

func newBlock(c Cipher, key []byte) (cipher.Block, error) {
	if c == DES3CBC {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}

// decryptContent decrypts the envelope's content with the content key.
// Every failure past the key is ErrDecrypt: a wrong key shows only here.
func (e *Envelope) decryptContent(cek []byte) ([]byte, error) {
	if e.encrypted == nil {
		return nil, errors.New("cms: decrypt: the envelope does not carry its content")
	}
	block, err := newBlock(e.Cipher, cek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	params := cryptobyte.String(e.contentAlg.params)
	if e.Cipher.AEAD() {
		var seq, nonce cryptobyte.String
		icvLen := int64(12) // the DEFAULT of RFC 5084
		if !params.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1(&nonce, cbasn1.OCTET_STRING) ||
			(!seq.Empty() && !seq.ReadASN1Integer(&icvLen)) || !seq.Empty() {
			return nil, malformed("bad GCM parameters")
		}
		if len(nonce) == 0 || len(nonce) > 64 || icvLen < 12 || icvLen > 16 || int64(len(e.mac)) != icvLen {
			return nil, fmt.Errorf("%w: GCM nonce or tag of a bad length", ErrDecrypt)
		}
		return openGCM(block, nonce, e.encrypted, e.mac, e.authAttrs)
	}
	var iv cryptobyte.String
	if !params.ReadASN1(&iv, cbasn1.OCTET_STRING) || len(iv) != block.BlockSize() {
		return nil, malformed("bad CBC parameters")
	}
	return openCBC(block, iv, e.encrypted)
}

// openCBC decrypts and strips the padding, which it checks in constant time
// so that a failure tells nothing about the plaintext.
func openCBC(block cipher.Block, iv, ciphertext []byte) ([]byte, error) {
	bs := block.BlockSize()
	if len(ciphertext) == 0 || len(ciphertext)%bs != 0 {
		return nil, fmt.Errorf("%w: ciphertext is not whole blocks", ErrDecrypt)
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ciphertext)
	n := int(out[len(out)-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, bs)
	for i := range bs {
		inPad := subtle.ConstantTimeLessOrEq(i+1, n)
		same := subtle.ConstantTimeByteEq(out[len(out)-1-i], byte(n))
		good &= subtle.ConstantTimeSelect(inPad, same, 1)
	}
	if good != 1 {
		return nil, fmt.Errorf("%w: bad padding", ErrDecrypt)
	}
	return out[:len(out)-n], nil
}

// openGCM checks the tag and decrypts. Go's GCM takes either a nonce other
// than 12 bytes or a tag shorter than 16, not both (gpgsm writes both); for
// that case it computes the full tag and compares its prefix.
func openGCM(block cipher.Block, nonce, ciphertext, tag, aad []byte) ([]byte, error) {
	var aead cipher.AEAD
	var err error
	switch {
	case len(nonce) == gcmNonceSize:
		aead, err = cipher.NewGCMWithTagSize(block, len(tag))
	default:
		aead, err = cipher.NewGCMWithNonceSize(block, len(nonce))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	if len(tag) == aead.Overhead() {
		out, err := aead.Open(nil, nonce, append(ciphertext[:len(ciphertext):len(ciphertext)], tag...), aad)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		return out, nil
	}
	// GCM is CTR mode underneath: sealing the ciphertext yields the plaintext,
	// and sealing that yields the ciphertext again with its full tag.
	plain := aead.Seal(nil, nonce, ciphertext, aad)[:len(ciphertext)]
	full := aead.Seal(nil, nonce, plain, aad)[len(ciphertext):]
	if subtle.ConstantTimeCompare(full[:len(tag)], tag) != 1 {
		return nil, fmt.Errorf("%w: authentication tag mismatch", ErrDecrypt)
	}
	return plain, nil
}
