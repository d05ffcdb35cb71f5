package keystore

import (
	"errors"
	"fmt"
	"strings"
)

// Conditions callers branch on. Lookups wrap them with the address and what
// to do, so errors.Is still matches.
var (
	ErrLocked          = errors.New("keystore: locked; unlock it with the keystore passphrase")
	ErrWrongPassphrase = errors.New("keystore: wrong passphrase")
	ErrEmptyPassphrase = errors.New("keystore: the passphrase is empty; private keys are never stored in the clear")
	ErrNoKeystore      = errors.New("keystore: no keystore")
	ErrExists          = errors.New("keystore: a keystore already exists")
	ErrNoIdentity      = errors.New("keystore: no key")
	ErrPending         = errors.New("keystore: no certificate yet")
	ErrExpired         = errors.New("keystore: certificate expired")
	ErrNotYetValid     = errors.New("keystore: certificate not yet valid")
	ErrNoUsableCert    = errors.New("keystore: no usable certificate")
	// ErrBrokenKey is a key file the keystore refuses (see KeyError).
	ErrBrokenKey = errors.New("keystore: broken key")
	// ErrNotPrivate is a keystore directory or file that others than its
	// owner may open.
	ErrNotPrivate = errors.New("keystore: open to other users")
	// ErrWrongPassword is a wrong password for a PKCS #12 file.
	ErrWrongPassword = errors.New("keystore: wrong password for the PKCS #12 file")
	ErrEmptyPassword = errors.New("keystore: the backup password is empty; a backup holds the private key")
)

// KeyTypeError is an unknown key type name. Its message lists the options,
// ready for a command line's usage error.
type KeyTypeError struct{ Value string }

func (e *KeyTypeError) Error() string {
	names := make([]string, len(keyTypes))
	for i, k := range keyTypes {
		names[i] = string(k)
	}
	return fmt.Sprintf("invalid key type %q; options are %s", e.Value, strings.Join(names, ", "))
}
