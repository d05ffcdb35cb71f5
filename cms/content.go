package cms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// GCM sizes we write (RFC 5084 3.2): the recommended 12-byte nonce and the
// full 16-byte tag.
const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// sealer encrypts content under a content key, with the IV or nonce it
// chose.
type sealer struct {
	block  cipher.Block
	aead   cipher.AEAD // nil for CBC
	iv     []byte      // the CBC IV or the GCM nonce
	params []byte      // DER parameters of the content cipher
}

func newSealer(ci cipherInfo, cek []byte) (*sealer, error) {
	block, err := newBlock(ci.cipher, cek)
	if err != nil {
		return nil, err
	}
	s := &sealer{block: block}
	if ci.cipher.AEAD() {
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
		s.iv = make([]byte, gcmNonceSize)
		rand.Read(s.iv)
		s.params, err = build(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(s.iv)
				b.AddASN1Int64(gcmTagSize) // not the DEFAULT 12, so it is written
			})
		})
		return s, err
	}
	s.iv = make([]byte, block.BlockSize())
	rand.Read(s.iv)
	s.params, err = build(func(b *cryptobyte.Builder) { b.AddASN1OctetString(s.iv) })
	return s, err
}

// size is the length of the ciphertext of n bytes of content, the AEAD tag
// not included.
func (s *sealer) size(n int) int {
	if s.aead != nil {
		return n
	}
	bs := s.block.BlockSize()
	return n + bs - n%bs // PKCS #7 padding, a whole block when n is a multiple
}

// writeTo writes the ciphertext of content to w, and returns the AEAD tag.
// CBC goes in pieces: the ciphertext is never held whole.
func (s *sealer) writeTo(w io.Writer, content []byte) (int64, []byte, error) {
	if s.aead != nil {
		out := s.aead.Seal(nil, s.iv, content, nil)
		n := len(out) - gcmTagSize
		written, err := w.Write(out[:n])
		return int64(written), out[n:], err
	}
	bs := s.block.BlockSize()
	enc := cipher.NewCBCEncrypter(s.block, s.iv)
	buf := make([]byte, min(cbcChunk, s.size(len(content))))
	var total int64
	for {
		n := min(len(content)-len(content)%bs, len(buf))
		if n == 0 {
			break
		}
		enc.CryptBlocks(buf[:n], content[:n])
		written, err := w.Write(buf[:n])
		total += int64(written)
		if err != nil {
			return total, nil, err
		}
		content = content[n:]
	}
	// The last block, padded (PKCS #7): a whole block of padding when the
	// content fills its blocks.
	last := buf[:bs]
	n := copy(last, content)
	for i := n; i < bs; i++ {
		last[i] = byte(bs - n)
	}
	enc.CryptBlocks(last, last)
	written, err := w.Write(last)
	return total + int64(written), nil, err
}

// cbcChunk is how much CBC ciphertext writeTo holds at a time.
const cbcChunk = 4 << 10

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
