package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 3394 section 4 test vectors.
func TestKeyWrapVectors(t *testing.T) {
	tests := []struct{ name, kek, key, wrapped string }{
		{"4.1 128-bit key, 128-bit KEK",
			"000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
			"1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"4.3 128-bit key, 256-bit KEK",
			"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF",
			"64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"4.6 256-bit key, 256-bit KEK",
			"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
			"00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
			"28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
	}
	for _, tc := range tests {
		kek, key, want := unhex(t, tc.kek), unhex(t, tc.key), unhex(t, tc.wrapped)
		got, err := wrapKey(kek, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("wrapKey(%s) = %X, %v, want %X", tc.name, got, err, want)
		}
		back, err := unwrapKey(kek, want)
		if err != nil || !bytes.Equal(back, key) {
			t.Errorf("unwrapKey(%s) = %X, %v, want %X", tc.name, back, err, key)
		}
		want[len(want)-1] ^= 1
		if _, err := unwrapKey(kek, want); err == nil {
			t.Errorf("unwrapKey(%s, damaged) succeeded", tc.name)
		}
	}
}

// TestOpenGCMOddSizes covers what gpgsm writes: a 16-byte nonce with a
// 12-byte tag, which Go's GCM does not take in one AEAD.
func TestOpenGCMOddSizes(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	plain, aad := []byte("The police are making more anarchists"), []byte{0x31, 0x00}
	for _, size := range []struct{ nonce, tag int }{{12, 16}, {12, 12}, {16, 16}, {16, 12}, {8, 14}} {
		nonce := bytes.Repeat([]byte{9}, size.nonce)
		aead, err := cipher.NewGCMWithNonceSize(block, size.nonce)
		if err != nil {
			t.Fatal(err)
		}
		sealed := aead.Seal(nil, nonce, plain, aad)
		ct, tag := sealed[:len(plain)], sealed[len(plain):len(plain)+size.tag] // a short tag is a prefix
		got, err := openGCM(block, nonce, ct, tag, aad)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("nonce %d, tag %d: openGCM = %q, %v", size.nonce, size.tag, got, err)
		}
		bad := bytes.Clone(tag)
		bad[0] ^= 1
		if _, err := openGCM(block, nonce, ct, bad, aad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("nonce %d, tag %d: openGCM(bad tag) = %v, want ErrDecrypt", size.nonce, size.tag, err)
		}
		if _, err := openGCM(block, nonce, ct, tag, nil); !errors.Is(err, ErrDecrypt) {
			t.Errorf("nonce %d, tag %d: openGCM(no AAD) = %v, want ErrDecrypt", size.nonce, size.tag, err)
		}
	}
}

func TestOpenCBCPadding(t *testing.T) {
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, 16)
	encrypt := func(plain []byte) []byte {
		out := bytes.Clone(plain)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
		return out
	}
	good := append(bytes.Repeat([]byte{'a'}, 13), 3, 3, 3)
	if got, err := openCBC(block, iv, encrypt(good)); err != nil || string(got) != "aaaaaaaaaaaaa" {
		t.Errorf("openCBC(good) = %q, %v", got, err)
	}
	full := append(bytes.Repeat([]byte{'a'}, 16), bytes.Repeat([]byte{16}, 16)...)
	if got, err := openCBC(block, iv, encrypt(full)); err != nil || len(got) != 16 {
		t.Errorf("openCBC(full padding block) = %q, %v", got, err)
	}
	for name, plain := range map[string][]byte{
		"zero":         append(bytes.Repeat([]byte{'a'}, 15), 0),
		"too long":     append(bytes.Repeat([]byte{'a'}, 15), 17),
		"inconsistent": append(bytes.Repeat([]byte{'a'}, 13), 2, 3, 3),
	} {
		if _, err := openCBC(block, iv, encrypt(plain)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("openCBC(%s padding) = %v, want ErrDecrypt", name, err)
		}
	}
	if _, err := openCBC(block, iv, make([]byte, 15)); !errors.Is(err, ErrDecrypt) {
		t.Errorf("openCBC(partial block) = %v, want ErrDecrypt", err)
	}
}
