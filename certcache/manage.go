package certcache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"smimeproxy/cms"
	"smimeproxy/storage"
)

// Errors callers branch on.
var (
	// ErrNoCert: nothing stored matches. Lookup's *NoValidCertError matches
	// it too.
	ErrNoCert = errors.New("certcache: no certificate")
	// ErrCACert: Add was given a CA certificate.
	ErrCACert = errors.New("certcache: a CA certificate belongs among the intermediates (AddIntermediates) or the trust anchors (Trust), not with people's certificates")
	// ErrNoAddress: the certificate names no email address, so no lookup could find it.
	ErrNoAddress = errors.New("certcache: the certificate names no email address")
	// ErrNotRoot: only a self-signed certificate can be a trust anchor.
	ErrNotRoot = errors.New("certcache: only a self-signed root can be a trust anchor; add intermediates with AddIntermediates")
)

// AddOptions describe where a certificate came from; nil means imported now.
type AddOptions struct {
	Source Source // zero: SourceImported
	// SigningTime is the signing time of the message it was harvested from
	// (zero or future: now). The newest harvest's capabilities and
	// preference win; an older message harvested later does not undo them.
	SigningTime time.Time
	// Capabilities is the sender's SMIMECapabilities attribute.
	Capabilities []cms.Capability
	// EncryptionKeyPreference: the signature named this certificate.
	EncryptionKeyPreference bool
}

// Add stores someone's certificate, or updates the metadata of one already
// here. It does not validate: harvest only what verified, and Lookup checks
// validity each time anyway.
func (c *Cache) Add(cert *x509.Certificate, opts *AddOptions) (*Entry, error) {
	if isCA(cert) {
		return nil, ErrCACert
	}
	e := newEntry(cert)
	if len(e.Addresses) == 0 {
		return nil, ErrNoAddress
	}
	if opts == nil {
		opts = &AddOptions{}
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	name := certsDir + "/" + e.Fingerprint + ".json"
	wrote := false
	err := c.docs.Update(context.Background(), func(tx storage.Tx) error {
		// The store, not the index: another process may have written it since.
		old, err := tx.Get(name)
		if err != nil && !isNotExist(err) {
			return fmt.Errorf("certcache: %w", err)
		}
		now := c.now()
		e.Added, e.Source = now, cmp.Or(opts.Source, SourceImported)
		if old != nil {
			prev, err := parseEntry(old)
			if err != nil {
				return fmt.Errorf("certcache: %s: %w", c.docs.Where(name), err)
			}
			e.Added, e.Harvested, e.Capabilities, e.EncryptionKeyPreference = prev.Added, prev.Harvested, prev.Capabilities, prev.EncryptionKeyPreference
			if prev.Source == SourceImported {
				e.Source = SourceImported
			}
		}
		if opts.Source == SourceHarvested {
			t := opts.SigningTime
			if t.IsZero() || t.After(now) {
				t = now
			}
			if !t.Before(e.Harvested) {
				e.Harvested, e.Capabilities, e.EncryptionKeyPreference = t, slices.Clone(opts.Capabilities), opts.EncryptionKeyPreference
			}
		}
		data, err := marshalEntry(e)
		if err != nil {
			return err
		}
		if bytes.Equal(data, old) {
			return nil
		}
		if err := tx.Put(name, data); err != nil {
			return fmt.Errorf("certcache: add %s: %w", e.Fingerprint, err)
		}
		wrote = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if wrote {
		if err := c.rescan(); err != nil {
			return nil, err
		}
	}
	return e.clone(), nil
}

// AddIntermediates stores CA certificates for building paths. They are never
// trust anchors. It returns how many were new; nothing is stored if any
// certificate is not an intermediate.
func (c *Cache) AddIntermediates(certs ...*x509.Certificate) (int, error) {
	for _, cert := range certs {
		switch {
		case !isCA(cert):
			return 0, fmt.Errorf("certcache: %s is not a CA certificate; add it with Add", cert.Subject)
		case selfSigned(cert):
			return 0, fmt.Errorf("certcache: %s is a self-signed root: trust it explicitly (Trust) or leave it out", cert.Subject)
		}
	}
	return c.addPEM(interDir, certs)
}

// Trust makes a self-signed certificate, normally a root CA, a trust anchor.
func (c *Cache) Trust(cert *x509.Certificate) error {
	if !selfSigned(cert) {
		return fmt.Errorf("%w (%s is issued by %s)", ErrNotRoot, cert.Subject, cert.Issuer)
	}
	_, err := c.addPEM(anchorDir, []*x509.Certificate{cert})
	return err
}

func (c *Cache) addPEM(sub string, certs []*x509.Certificate) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n := 0
	err := c.docs.Update(context.Background(), func(tx storage.Tx) error {
		for _, cert := range certs {
			err := tx.Create(sub+"/"+Fingerprint(cert)+".pem", certPEM(cert))
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("certcache: store %s: %w", cert.Subject, err)
			}
			n++
		}
		return nil
	})
	if n == 0 && err == nil {
		return 0, nil
	}
	// After a failure too: in a directory what was written before it stays.
	return n, errors.Join(err, c.rescan())
}

// Untrust removes a trust anchor by fingerprint.
func (c *Cache) Untrust(fingerprint string) error {
	fp, ok := normalizeFingerprint(fingerprint)
	if !ok {
		return fmt.Errorf("certcache: %q is not a SHA-256 fingerprint", fingerprint)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	err := c.docs.Update(context.Background(), func(tx storage.Tx) error {
		return tx.Delete(anchorDir + "/" + fp + ".pem")
	})
	if isNotExist(err) {
		return fmt.Errorf("%w among the trust anchors with fingerprint %s", ErrNoCert, fp)
	}
	if err != nil {
		return fmt.Errorf("certcache: untrust %s: %w", fp, err)
	}
	return c.rescan()
}

// Remove deletes every certificate for an address, or the certificate or
// intermediate with a fingerprint, and says how many it removed. Trust
// anchors go with Untrust.
func (c *Cache) Remove(addrOrFingerprint string) (int, error) {
	c.refresh()
	var names []string
	c.mu.RLock()
	if strings.Contains(addrOrFingerprint, "@") {
		for _, e := range c.st.byAddr[normAddr(addrOrFingerprint)] {
			names = append(names, certsDir+"/"+e.Fingerprint+".json")
		}
	} else if fp, ok := normalizeFingerprint(addrOrFingerprint); ok {
		if c.st.certs[fp] != nil {
			names = append(names, certsDir+"/"+fp+".json")
		}
		if c.st.inters[fp] != nil {
			names = append(names, interDir+"/"+fp+".pem")
		}
	} else {
		c.mu.RUnlock()
		return 0, fmt.Errorf("certcache: %q is neither an email address nor a SHA-256 fingerprint", addrOrFingerprint)
	}
	c.mu.RUnlock()
	if len(names) == 0 {
		return 0, fmt.Errorf("%w for %s", ErrNoCert, addrOrFingerprint)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n := 0
	err := c.docs.Update(context.Background(), func(tx storage.Tx) error {
		for _, name := range names {
			err := tx.Delete(name)
			if err != nil && !isNotExist(err) {
				return fmt.Errorf("certcache: remove: %w", err)
			}
			if err == nil {
				n++
			}
		}
		return nil
	})
	return n, errors.Join(err, c.rescan())
}

// Get returns the entry with a fingerprint.
func (c *Cache) Get(fingerprint string) (*Entry, error) {
	c.refresh()
	fp, _ := normalizeFingerprint(fingerprint)
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.st.certs[fp]
	if e == nil {
		return nil, fmt.Errorf("%w with fingerprint %s", ErrNoCert, fingerprint)
	}
	return e.clone(), nil
}

// List returns every stored certificate of other people, by address and
// then newest first.
func (c *Cache) List() []Entry {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Entry, 0, len(c.st.certs))
	for _, e := range c.st.certs {
		out = append(out, *e.clone())
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(strings.Compare(a.Addresses[0], b.Addresses[0]), b.Cert.NotBefore.Compare(a.Cert.NotBefore), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out
}

// Export returns every certificate stored for an address, usable or not,
// newest first.
func (c *Cache) Export(addr string) ([]*x509.Certificate, error) {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	es := sortedNewest(c.st.byAddr[normAddr(addr)])
	if len(es) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoCert, addr)
	}
	out := make([]*x509.Certificate, len(es))
	for i, e := range es {
		out[i] = e.Cert
	}
	return out, nil
}

func sortedNewest(es []*Entry) []*Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b *Entry) int {
		return cmp.Or(b.Cert.NotBefore.Compare(a.Cert.NotBefore), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return es
}

// Anchors returns the trust anchors, by subject.
func (c *Cache) Anchors() []*x509.Certificate {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return sortedCerts(c.st.anchors)
}

// IntermediateCerts returns the stored intermediates, by subject.
func (c *Cache) IntermediateCerts() []*x509.Certificate {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return sortedCerts(c.st.inters)
}

func sortedCerts(m map[string]*x509.Certificate) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *x509.Certificate) int {
		return cmp.Or(strings.Compare(a.Subject.String(), b.Subject.String()), bytes.Compare(a.Raw, b.Raw))
	})
	return out
}

// Roots returns the pool that validation trusts: the system roots (unless
// Options.NoSystemRoots) and the anchors. It is a copy, for
// x509.VerifyOptions in signature verification.
func (c *Cache) Roots() *x509.CertPool {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.roots.Clone()
}

// Intermediates returns a copy of the pool of stored intermediates.
func (c *Cache) Intermediates() *x509.CertPool {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.pool.Clone()
}

func isCA(c *x509.Certificate) bool { return c.BasicConstraintsValid && c.IsCA }

// selfSigned reports whether c is signed by its own key. An old SHA-1
// self-signature counts: a root's own signature is never what trust rests on.
func selfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		return false
	}
	err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
	var insecure x509.InsecureAlgorithmError
	return err == nil || errors.As(err, &insecure)
}

// Harvest stores the certificates of a sender whose signature verified and
// whose chain validated: the signing certificate and, when the signature named
// a different one with SMIMEEncryptionKeyPreference, that encryption
// certificate, both with the capabilities the sender advertised.
func (c *Cache) Harvest(signer, encryptionCert *x509.Certificate, signingTime time.Time, caps []cms.Capability) error {
	opts := &AddOptions{Source: SourceHarvested, SigningTime: signingTime, Capabilities: caps}
	separate := encryptionCert != nil && !encryptionCert.Equal(signer)
	opts.EncryptionKeyPreference = encryptionCert != nil && !separate
	if _, err := c.Add(signer, opts); err != nil {
		return err
	}
	if !separate {
		return nil
	}
	opts.EncryptionKeyPreference = true
	_, err := c.Add(encryptionCert, opts)
	return err
}
