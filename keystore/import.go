package keystore

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/storage"
)

// ImportResult says where each imported certificate went.
type ImportResult struct {
	// Joined are the end-entity certificates whose key we hold.
	Joined []Joined
	// Intermediates are the CA certificates now stored to complete the chain
	// of at least one key entry.
	Intermediates []*x509.Certificate
	// Others are end-entity certificates whose key we do not hold: someone
	// else's. They are not stored here; they belong in the certificate cache.
	Others []*x509.Certificate
	// Roots are self-signed CA certificates. The keystore never stores them
	// and trusts nothing: trusting a root is a separate, explicit step.
	Roots []*x509.Certificate
	// UnusedCAs are CA certificates that complete no chain of ours; not stored.
	UnusedCAs []*x509.Certificate
	// KeyFromPKCS12 is set by ImportPKCS12: the private key was made
	// elsewhere, so whoever made the file (often the CA) has had a copy.
	KeyFromPKCS12 bool
	// Warnings are sentences for the person importing.
	Warnings []string
}

// Joined is a certificate that joined a key entry.
type Joined struct {
	KeyID string
	Cert  *x509.Certificate
	New   bool // false when the entry held it already
}

const pkcs12Warning = "the private key came inside the PKCS #12 file, so whoever made the file (often the CA) " +
	"has had a copy of it; a key made here with a CSR never leaves this keystore"

// ImportCertificates files what a CA issued: each end-entity certificate
// whose public key matches a key we hold joins that key's entry (making it
// active); CA certificates are stored as intermediates of the entries whose
// chains they complete. The rest is returned, not stored. A change to an
// entry rewrites its MAC, so it needs the keystore unlocked: ErrLocked
// otherwise, with nothing written. Certificates that are not ours need no
// passphrase.
func (s *Store) ImportCertificates(certs []*x509.Certificate) (*ImportResult, error) {
	res := &ImportResult{}
	if err := s.write(func(st *state, tx storage.Tx) error { return s.importCerts(st, tx, certs, nil, res) }); err != nil {
		return nil, err
	}
	return res, nil
}

// ImportPKCS12 imports a PKCS #12 (.p12/.pfx) file, DER or PEM-armoured
// ("-----BEGIN PKCS12-----"): its key (joining the entry for that key if we
// hold it already), the certificates for the key and their chain. Other
// certificates in it are sorted as ImportCertificates does. A wrong password
// returns ErrWrongPassword and changes nothing.
func (s *Store) ImportPKCS12(data []byte, password string) (*ImportResult, error) {
	if s.Locked() {
		return nil, ErrLocked
	}
	key, certs, err := decodePKCS12(data, password)
	if err != nil {
		return nil, err
	}
	id, spki, err := keyID(publicOf(key))
	if err != nil {
		return nil, fmt.Errorf("keystore: PKCS #12 private key: %w", err)
	}
	var emails []string
	mine := false
	for _, c := range certs {
		if cid, _, err := keyID(c.PublicKey); err == nil && cid == id {
			mine = true
			emails = append(emails, certEmails(c)...)
		}
	}
	if !mine {
		return nil, errors.New("keystore: no certificate in the PKCS #12 file is for its private key")
	}
	if len(emails) == 0 {
		return nil, errors.New("keystore: the certificate in the PKCS #12 file names no email address")
	}
	res := &ImportResult{KeyFromPKCS12: true, Warnings: []string{pkcs12Warning}}
	err = s.write(func(st *state, tx storage.Tx) error {
		e := st.entries[id]
		if e != nil && st.broken[id] == nil {
			e = e.clone()
		} else {
			// New, or refused: the key in the file rebuilds the entry.
			e = &entry{
				id: id, emails: normalizeEmails(emails), keyType: keyTypeOf(publicOf(key)), source: SourcePKCS12,
				created: time.Now().UTC().Truncate(time.Second), pubDER: spki,
			}
			if err := s.sealKey(st, e, key); err != nil {
				return err
			}
		}
		return s.importCerts(st, tx, certs, e, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// decodePKCS12 returns the key and every certificate, in file order. It does
// not trust the file's order to say which certificate is the key's.
func decodePKCS12(data []byte, password string) (crypto.PrivateKey, []*x509.Certificate, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "PKCS12" {
			return nil, nil, fmt.Errorf("keystore: expected a PKCS #12 file, found PEM %s", block.Type)
		}
		der = block.Bytes
	}
	// On a parse failure go-pkcs12 gets the file as it is and says what is wrong.
	if fixed, err := derPKCS12(der, password); errors.Is(err, ErrWrongPassword) {
		return nil, nil, err
	} else if err == nil {
		der = fixed
	}
	key, leaf, cas, err := pkcs12.DecodeChain(der, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
		return nil, nil, ErrWrongPassword
	}
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: read PKCS #12 file: %w", err)
	}
	if publicOf(key) == nil {
		return nil, nil, fmt.Errorf("keystore: PKCS #12 file: unsupported private key type %T", key)
	}
	return key, append([]*x509.Certificate{leaf}, cas...), nil
}

// importCerts sorts certs into st's entries, plus extra (a key being
// imported), and saves the entries that changed, inside write.
// A certificate for a key the keystore refuses is an error: its entry is
// not touched, since saving it would bind what may be forged.
func (s *Store) importCerts(st *state, tx storage.Tx, certs []*x509.Certificate, extra *entry, res *ImportResult) error {
	work := map[string]*entry{} // entries being changed, cloned from st
	dirty := map[string]bool{}
	get := func(id string) *entry {
		if e := work[id]; e != nil {
			return e
		}
		if e := st.entries[id]; e != nil && st.broken[id] == nil {
			work[id] = e.clone()
			return work[id]
		}
		return nil
	}
	if extra != nil {
		work[extra.id] = extra
		dirty[extra.id] = st.entries[extra.id] != extra
	}
	var cas []*x509.Certificate
	for i, c := range certs {
		if slices.ContainsFunc(certs[:i], c.Equal) {
			continue
		}
		switch {
		case isRoot(c):
			res.Roots = append(res.Roots, c)
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is a self-signed root: not stored and not trusted; use `smimeproxy trust add` to trust it", c.Subject))
		case isCA(c):
			cas = append(cas, c)
		default:
			id, _, err := keyID(c.PublicKey)
			if ke := st.broken[id]; err == nil && ke != nil && work[id] == nil {
				return fmt.Errorf("keystore: the certificate for %s (%s) is for a key the keystore refuses: %w", certEmails(c), c.Subject, ke)
			}
			var e *entry
			if err == nil {
				e = get(id)
			}
			if e == nil {
				res.Others = append(res.Others, c)
				continue
			}
			added := e.addCert(c)
			dirty[id] = dirty[id] || added
			res.Joined = append(res.Joined, Joined{KeyID: id, Cert: c, New: added})
		}
	}

	// Any entry's chain may be completed, not only those that gained a
	// certificate: the intermediate can come in a file of its own.
	used := make([]bool, len(cas))
	ids := slices.Sorted(maps.Keys(st.entries))
	if extra != nil && st.entries[extra.id] == nil {
		ids = append(ids, extra.id)
	}
	for _, id := range ids {
		e := work[id]
		if e == nil && st.broken[id] != nil {
			continue
		}
		if e == nil {
			e = st.entries[id]
		}
		for grew := true; grew; {
			grew = false
			for i, ca := range cas {
				if slices.ContainsFunc(e.chain, ca.Equal) {
					used[i] = true
					continue
				}
				if !slices.ContainsFunc(e.certs, func(c *x509.Certificate) bool { return issuedBy(c, ca) }) &&
					!slices.ContainsFunc(e.chain, func(c *x509.Certificate) bool { return issuedBy(c, ca) }) {
					continue
				}
				e = get(id)
				e.chain = append(e.chain, ca)
				used[i], dirty[id], grew = true, true, true
			}
		}
	}
	for i, ca := range cas {
		if used[i] {
			res.Intermediates = append(res.Intermediates, ca)
		} else {
			res.UnusedCAs = append(res.UnusedCAs, ca)
		}
	}

	for _, id := range slices.Sorted(maps.Keys(dirty)) {
		if dirty[id] {
			if err := s.saveEntry(st, tx, work[id]); err != nil {
				return err
			}
		}
	}
	return nil
}
