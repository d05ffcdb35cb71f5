package keystore

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Status is where an identity stands.
type Status string

const (
	StatusPending     Status = "pending"       // key and CSR made, no certificate yet
	StatusActive      Status = "active"        // a certificate is valid now
	StatusExpiring    Status = "expiring"      // valid, but ends within ExpiryWarning
	StatusExpired     Status = "expired"       // every certificate has ended
	StatusNotYetValid Status = "not-yet-valid" // the only certificates start in the future
	StatusBroken      Status = "broken"        // refused: see IdentityInfo.Problem
)

// ExpiryWarning is how long before its end a certificate counts as expiring.
const ExpiryWarning = 30 * 24 * time.Hour

// IdentityInfo describes one key entry. It holds no secret.
type IdentityInfo struct {
	KeyID    string
	Email    string   // the first of Emails
	Emails   []string // every address the key's certificates name, and the CSR's
	KeyType  KeyType
	Source   Source
	Created  time.Time
	Status   Status
	NotAfter time.Time           // the latest end of any certificate; zero while pending
	Certs    []*x509.Certificate // newest (latest NotAfter) first
	Chain    []*x509.Certificate // intermediates held for the certificates
	// Problem says why a broken key is refused, naming its file. Keys are
	// checked only while the keystore is unlocked; until then the rest of
	// this information is what the file says, unchecked.
	Problem string
}

func infoOf(e *entry, now time.Time) IdentityInfo {
	certs := slices.Clone(e.certs)
	slices.SortFunc(certs, func(a, b *x509.Certificate) int { return b.NotAfter.Compare(a.NotAfter) })
	in := IdentityInfo{
		KeyID: e.id, Email: e.emails[0], Emails: slices.Clone(e.emails), KeyType: e.keyType,
		Source: e.source, Created: e.created, Certs: certs, Chain: slices.Clone(e.chain),
		Status: StatusPending,
	}
	if len(certs) == 0 {
		return in
	}
	in.NotAfter = certs[0].NotAfter
	in.Status = StatusExpired
	for _, c := range certs { // newest end first, so the first valid one decides
		switch {
		case now.Before(c.NotBefore):
			in.Status = StatusNotYetValid
		case !now.After(c.NotAfter):
			if c.NotAfter.Sub(now) < ExpiryWarning {
				return withStatus(in, StatusExpiring)
			}
			return withStatus(in, StatusActive)
		}
	}
	return in
}

func withStatus(in IdentityInfo, st Status) IdentityInfo {
	in.Status = st
	return in
}

// Identities lists every key entry, by address and then age. It needs no
// passphrase.
func (s *Store) Identities() []IdentityInfo {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	out := make([]IdentityInfo, 0, len(s.st.entries))
	for id, e := range s.st.entries {
		in := infoOf(e, now)
		if ke := s.st.broken[id]; ke != nil {
			in.Status, in.Problem = StatusBroken, ke.Error()
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b IdentityInfo) int {
		if c := strings.Compare(a.Email, b.Email); c != 0 {
			return c
		}
		return a.Created.Compare(b.Created)
	})
	return out
}

// Emails lists every address that has a key, sorted, in lower case.
func (s *Store) Emails() []string {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.st.byEmail))
}

// Signer is what signing as an address needs.
type Signer struct {
	KeyID string
	Key   crypto.Signer
	Cert  *x509.Certificate
	Chain []*x509.Certificate // intermediates from Cert's issuer upwards, without the root
	// EncryptionCert is the valid certificate others should encrypt to (for
	// SMIMEEncryptionKeyPreference); it may be Cert itself, or nil if none.
	EncryptionCert *x509.Certificate
}

// Signer returns the key and the valid signing certificate (keyUsage
// digitalSignature or nonRepudiation, or none) for email with the latest end.
// Errors: ErrNoIdentity, ErrPending, ErrExpired, ErrNotYetValid,
// ErrNoUsableCert, ErrLocked.
func (s *Store) Signer(email string, now time.Time) (*Signer, error) {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, cert, err := s.pick(email, now, useSign)
	if err != nil {
		return nil, err
	}
	key, err := s.privateKey(e)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w for %s: key %s cannot sign", ErrNoUsableCert, email, e.id)
	}
	out := &Signer{KeyID: e.id, Key: signer, Cert: cert, Chain: chainFor(cert, e.chain)}
	if _, enc, err := s.pick(email, now, useEncrypt); err == nil {
		out.EncryptionCert = enc
	}
	return out, nil
}

// EncryptionCert returns the valid certificate for email whose key usage
// allows encryption (keyEncipherment for RSA, keyAgreement for EC, or none),
// with the latest end: for encrypting to oneself. It needs no passphrase.
func (s *Store) EncryptionCert(email string, now time.Time) (*x509.Certificate, error) {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, cert, err := s.pick(email, now, useEncrypt)
	return cert, err
}

// KeyPair is one private key and one certificate issued for it.
type KeyPair struct {
	KeyID string
	Cert  *x509.Certificate
	Key   crypto.PrivateKey // crypto.Decrypter for RSA; *ecdsa.PrivateKey or *ecdh.PrivateKey for EC
}

// DecryptionKeys returns every key ever held for email with each certificate
// issued for it, expired ones included, newest certificate first: old mail
// was encrypted to old certificates. Keys without a certificate are left out,
// since nobody could have encrypted to them.
func (s *Store) DecryptionKeys(email string) ([]KeyPair, error) {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	email = normEmail(email)
	es := s.st.byEmail[email]
	if len(es) == 0 {
		return nil, s.noIdentity(email)
	}
	if s.sec == nil {
		return nil, ErrLocked
	}
	var out []KeyPair
	for _, e := range es {
		if len(e.certs) == 0 {
			continue
		}
		key, err := s.privateKey(e)
		if err != nil {
			return nil, err
		}
		for _, c := range e.certs {
			out = append(out, KeyPair{KeyID: e.id, Cert: c, Key: key})
		}
	}
	if len(out) == 0 {
		return nil, pending(email)
	}
	slices.SortStableFunc(out, func(a, b KeyPair) int { return b.Cert.NotBefore.Compare(a.Cert.NotBefore) })
	return out, nil
}

type usage int

const (
	useSign usage = iota
	useEncrypt
)

func (u usage) String() string {
	if u == useSign {
		return "signing"
	}
	return "encryption"
}

// noIdentity says why email has no usable key; s.mu is held.
func (s *Store) noIdentity(email string) error {
	if es := s.st.brokenFor[email]; len(es) > 0 {
		return fmt.Errorf("no usable key for %s: %w", email, s.st.broken[es[0].id])
	}
	return fmt.Errorf("%w for %s; make one with a CSR or import a PKCS #12 file", ErrNoIdentity, email)
}

func pending(email string) error {
	return fmt.Errorf("%w for %s; import the certificate the CA issued for the CSR", ErrPending, email)
}

// pick finds the valid certificate for email and use with the latest end,
// and says why when there is none; s.mu is held.
func (s *Store) pick(email string, now time.Time, use usage) (*entry, *x509.Certificate, error) {
	email = normEmail(email)
	es := s.st.byEmail[email]
	if len(es) == 0 {
		return nil, nil, s.noIdentity(email)
	}
	var (
		bestE               *entry
		best                *x509.Certificate
		anyCert, wrongUsage bool
		future, ended       time.Time // earliest start to come, latest end gone
	)
	for _, e := range es {
		for _, c := range e.certs {
			anyCert = true
			switch {
			case !names(c, email):
			case now.Before(c.NotBefore):
				if future.IsZero() || c.NotBefore.Before(future) {
					future = c.NotBefore
				}
			case now.After(c.NotAfter):
				if c.NotAfter.After(ended) {
					ended = c.NotAfter
				}
			case !allows(c, use):
				wrongUsage = true
			case best == nil || c.NotAfter.After(best.NotAfter) ||
				c.NotAfter.Equal(best.NotAfter) && c.NotBefore.After(best.NotBefore):
				bestE, best = e, c
			}
		}
	}
	switch {
	case best != nil:
		return bestE, best, nil
	case !anyCert:
		return nil, nil, pending(email)
	case wrongUsage:
		return nil, nil, fmt.Errorf("%w for %s: no valid certificate allows %s (key usage)", ErrNoUsableCert, email, use)
	case !future.IsZero():
		return nil, nil, fmt.Errorf("%w for %s: valid from %s", ErrNotYetValid, email, future.UTC().Format(time.RFC3339))
	case !ended.IsZero():
		return nil, nil, fmt.Errorf("%w for %s: the newest ended %s; import a renewed certificate", ErrExpired, email, ended.UTC().Format(time.RFC3339))
	}
	return nil, nil, fmt.Errorf("%w for %s: no certificate names this address", ErrNoUsableCert, email)
}

// allows checks a certificate's key usage, extended key usage and key type
// for use, following RFC 8550 section 4.4.
func allows(c *x509.Certificate, use usage) bool {
	if len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) > 0 &&
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) &&
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return false
	}
	ku := c.KeyUsage
	if use == useSign {
		switch c.PublicKey.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			return ku == 0 || ku&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) != 0
		}
		return false
	}
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		return ku == 0 || ku&x509.KeyUsageKeyEncipherment != 0
	case *ecdsa.PublicKey, *ecdh.PublicKey:
		return ku == 0 || ku&x509.KeyUsageKeyAgreement != 0
	}
	return false
}
