package keystore

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"software.sslmate.com/src/go-pkcs12"
)

// Iteration counts for Backup.
const (
	// DefaultBackupIterations is the PBKDF2 (and MAC) iteration count of the
	// default format: what NSS (Thunderbird, Firefox) writes, and OWASP's
	// figure for PBKDF2-HMAC-SHA-256.
	DefaultBackupIterations = 600_000
	// LegacyBackupIterations is the default for the legacy format: what
	// OpenSSL writes for it, and what old clients are known to read.
	LegacyBackupIterations = 2048
	// MinBackupIterations is the least Backup accepts.
	MinBackupIterations = 2048
)

// BackupOptions tune Backup; nil means the defaults.
type BackupOptions struct {
	// Legacy selects PBE-SHA1-3DES for keys and certificates with a SHA-1
	// MAC (go-pkcs12's LegacyDES), which Windows 7, old macOS and old
	// Android read too, instead of PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA-256)
	// with a SHA-256 MAC.
	Legacy bool
	// Iterations is the iteration count of the key derivation for the
	// encryption and for the MAC; zero: DefaultBackupIterations, or
	// LegacyBackupIterations with Legacy. Fewer make the password cheaper to
	// guess; at least MinBackupIterations.
	Iterations int
}

// encoder returns the go-pkcs12 encoder for o.
func (o *BackupOptions) encoder() (*pkcs12.Encoder, error) {
	if o == nil {
		o = &BackupOptions{}
	}
	enc, n := pkcs12.Modern, DefaultBackupIterations
	if o.Legacy {
		enc, n = pkcs12.LegacyDES, LegacyBackupIterations
	}
	if o.Iterations != 0 {
		n = o.Iterations
	}
	if n < MinBackupIterations {
		return nil, fmt.Errorf("keystore: %d iterations are too few for a backup; use at least %d", n, MinBackupIterations)
	}
	return enc.WithIterations(n), nil
}

// Backup returns a password-protected PKCS #12 file with the key email signs
// with now (or, when no certificate is valid, the key whose certificate ends
// last), its certificate, chain, and the key's older certificates. Each key
// is a file of its own: use BackupKey with the ids from Identities to back up
// every key an address ever held.
//
// By default the file uses PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA-256) with a
// SHA-256 MAC, as OpenSSL 3 and NSS write: OpenSSL 1.1.1+, Java 12+, NSS,
// current Windows and macOS read it. Legacy (see BackupOptions) is preferred
// over LegacyRC2 because RC2-40 is breakable in hours and OpenSSL 3 reads RC2
// only with -legacy, while it reads 3DES as is.
func (s *Store) Backup(email, password string, opts *BackupOptions) ([]byte, error) {
	if password == "" {
		return nil, ErrEmptyPassword
	}
	enc, err := opts.encoder()
	if err != nil {
		return nil, err
	}
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, cert, err := s.pick(email, s.now(), useSign)
	if errors.Is(err, ErrExpired) || errors.Is(err, ErrNotYetValid) || errors.Is(err, ErrNoUsableCert) {
		// An expired key still decrypts old mail: worth backing up.
		e, cert = newest(s.st.byEmail[normEmail(email)])
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return s.backup(e, cert, password, enc)
}

// BackupKey is Backup for one key entry, by its id.
func (s *Store) BackupKey(keyID, password string, opts *BackupOptions) ([]byte, error) {
	if password == "" {
		return nil, ErrEmptyPassword
	}
	enc, err := opts.encoder()
	if err != nil {
		return nil, err
	}
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.st.entries[keyID]
	if e == nil {
		return nil, fmt.Errorf("%w with id %q", ErrNoIdentity, keyID)
	}
	if ke := s.st.broken[keyID]; ke != nil {
		return nil, ke
	}
	if len(e.certs) == 0 {
		return nil, fmt.Errorf("%w for key %s; import the certificate the CA issued for the CSR", ErrPending, keyID)
	}
	_, cert := newest([]*entry{e})
	return s.backup(e, cert, password, enc)
}

// newest finds the certificate with the latest end among es.
func newest(es []*entry) (*entry, *x509.Certificate) {
	var (
		be *entry
		bc *x509.Certificate
	)
	for _, e := range es {
		for _, c := range e.certs {
			if bc == nil || c.NotAfter.After(bc.NotAfter) {
				be, bc = e, c
			}
		}
	}
	return be, bc
}

// backup encodes e's key with cert as the leaf; s.mu is held.
func (s *Store) backup(e *entry, cert *x509.Certificate, password string, enc *pkcs12.Encoder) ([]byte, error) {
	key, err := s.privateKey(e)
	if err != nil {
		return nil, err
	}
	extra := chainFor(cert, e.chain)
	// Clients find the key for old mail by the certificate it was sent to.
	older := slices.DeleteFunc(slices.Clone(e.certs), cert.Equal)
	slices.SortFunc(older, func(a, b *x509.Certificate) int { return b.NotAfter.Compare(a.NotAfter) })
	extra = append(extra, older...)
	p12, err := enc.Encode(key, cert, extra, password)
	if err != nil {
		return nil, fmt.Errorf("keystore: encode PKCS #12 for key %s: %w", e.id, err)
	}
	return p12, nil
}
