package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// KDFParams is the cost of argon2id, which turns the passphrase into the key
// that wraps the data key.
type KDFParams struct {
	Time      uint32 // passes over the memory
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is RFC 9106's second recommended option (t=3, m=64 MiB, p=4):
// about a quarter to half a second on one core, paid once per unlock.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Limits on parameters read from disk, so a damaged or hostile keystore.json
// cannot make Unlock take minutes or gigabytes.
const (
	maxKDFTime      = 64
	maxKDFMemoryKiB = 4 << 20 // 4 GiB
	kdfAlgorithm    = "argon2id"
	keySize         = 32 // AES-256
	saltSize        = 16
)

// kdf is the KDF as stored in keystore.json.
type kdf struct {
	Algorithm string `json:"algorithm"`
	Salt      []byte `json:"salt"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

func newKDF(p KDFParams) (kdf, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return kdf{}, err
	}
	k := kdf{Algorithm: kdfAlgorithm, Salt: salt, Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}
	return k, k.check()
}

func (k kdf) check() error {
	switch {
	case k.Algorithm != kdfAlgorithm:
		return fmt.Errorf("unknown KDF %q", k.Algorithm)
	case len(k.Salt) < 8:
		return errors.New("KDF salt too short")
	case k.Time < 1 || k.Time > maxKDFTime:
		return fmt.Errorf("KDF time %d out of range 1..%d", k.Time, maxKDFTime)
	case k.MemoryKiB < 8 || k.MemoryKiB > maxKDFMemoryKiB:
		return fmt.Errorf("KDF memory %d KiB out of range 8..%d", k.MemoryKiB, maxKDFMemoryKiB)
	case k.Threads < 1:
		return errors.New("KDF threads must be at least 1")
	}
	return nil
}

func (k kdf) derive(passphrase []byte) []byte {
	return argon2.IDKey(passphrase, k.Salt, k.Time, k.MemoryKiB, k.Threads, keySize)
}

// seal encrypts plaintext with AES-256-GCM under key; the output is
// nonce || ciphertext || tag. Random 96-bit nonces are safe here: a keystore
// seals a few hundred values in its life, far below the 2^32 limit.
func seal(key, plaintext, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plaintext, aad), nil
}

var errOpen = errors.New("authentication failed")

func open(key, sealed, aad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, errOpen
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, errOpen
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// The additional data binds each sealed value to its place: the data key to
// this keystore and its format version, a private key to its entry (the
// same in both versions), so files cannot be swapped.
func dataKeyAAD(version int, storeID string) []byte {
	return fmt.Appendf(nil, "smimeproxy keystore v%d data key %s", version, storeID)
}

func privateKeyAAD(storeID, entryID string) []byte {
	return []byte("smimeproxy keystore v1 private key " + storeID + " " + entryID)
}
