package certcache

import (
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"smimeproxy/internal/mailaddr"
)

// Reason says why a certificate cannot be used.
type Reason string

const (
	ReasonExpired     Reason = "expired"
	ReasonNotYetValid Reason = "not yet valid"
	ReasonUntrusted   Reason = "untrusted"          // no path to a trusted root
	ReasonKeyUsage    Reason = "key usage"          // keyUsage or key type does not allow encryption
	ReasonExtKeyUsage Reason = "extended key usage" // not for email protection
	ReasonAddress     Reason = "address"            // does not name the address it was found for
	ReasonRevoked     Reason = "revoked"            // its issuer says so (OCSP or CRL)
	// ReasonRevocationUnknown: nobody could say whether it was revoked,
	// and the configuration treats that as revoked (hard-fail).
	ReasonRevocationUnknown Reason = "revocation status unknown"
)

// InvalidError says why one certificate is not usable.
type InvalidError struct {
	Fingerprint string
	Subject     string
	Reason      Reason
	Detail      string
	Err         error // from crypto/x509, when it decided; may be nil
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("certcache: certificate %s (%s): %s", e.Fingerprint[:16], e.Subject, e.Detail)
}

func (e *InvalidError) Unwrap() error { return e.Err }

// NoValidCertError: certificates for Addr are stored, but none is usable.
// errors.Is(err, ErrNoCert) holds.
type NoValidCertError struct {
	Addr     string
	Rejected []*InvalidError
}

func (e *NoValidCertError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "certcache: no valid certificate for %s:", e.Addr)
	for i, r := range e.Rejected {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s %s", r.Fingerprint[:16], r.Detail)
	}
	return b.String()
}

func (e *NoValidCertError) Is(target error) bool { return target == ErrNoCert }

// Candidate is one certificate for an address, with the verdict on it.
type Candidate struct {
	Entry
	Err  *InvalidError // nil when usable
	Best bool          // the one Lookup returns
	// Chain is the path that validated, the certificate first and a root
	// last; nil when it is not usable.
	Chain []*x509.Certificate
}

// Lookup returns the certificate to encrypt to for addr: one that names the
// address (subjectAltName or subject emailAddress) and is valid now (path to
// an anchor or a system root, in its validity period, keyUsage allowing
// encryption, extKeyUsage allowing email protection).
// Among valid ones it prefers the one the sender's latest signature named as
// its encryption key, then the newest notBefore: expired and superseded ones
// stay stored but are never chosen. The Entry carries the sender's
// capabilities. With none stored it returns an error wrapping ErrNoCert;
// with none valid, a *NoValidCertError.
func (c *Cache) Lookup(ctx context.Context, addr string) (*Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cands := c.ForAddress(addr)
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoCert, addr)
	}
	if cands[0].Best {
		return cands[0].Entry.clone(), nil
	}
	nv := &NoValidCertError{Addr: normAddr(addr)}
	for _, cd := range cands {
		nv.Rejected = append(nv.Rejected, cd.Err)
	}
	return nil, nv
}

// ForAddress returns every certificate stored for addr with the verdict on
// each, the chosen one first, then newest first.
func (c *Cache) ForAddress(addr string) []Candidate {
	c.refresh()
	addr = normAddr(addr)
	c.mu.RLock()
	st := c.st
	c.mu.RUnlock()
	now := c.now()
	var out []Candidate
	for _, e := range sortedNewest(st.byAddr[addr]) {
		cd := Candidate{Entry: *e.clone()}
		cd.Chain, cd.Err = st.check(e, now)
		out = append(out, cd)
	}
	best := -1
	for i, cd := range out {
		if cd.Err == nil && (best < 0 || better(&cd.Entry, &out[best].Entry)) {
			best = i
		}
	}
	if best >= 0 {
		out[best].Best = true
		// Chosen first; the rest stay newest first.
		out = append(append([]Candidate{out[best]}, out[:best]...), out[best+1:]...)
	}
	return out
}

// better ranks two valid certificates: the one the sender's signature named
// as its encryption key (the latest such signature), then the newest.
func better(a, b *Entry) bool {
	if a.EncryptionKeyPreference != b.EncryptionKeyPreference {
		return a.EncryptionKeyPreference
	}
	if a.EncryptionKeyPreference && !a.Harvested.Equal(b.Harvested) {
		return a.Harvested.After(b.Harvested)
	}
	return cmp.Or(a.Cert.NotBefore.Compare(b.Cert.NotBefore), a.Cert.NotAfter.Compare(b.Cert.NotAfter)) > 0
}

// Validate checks a certificate for S/MIME use at a time: within its
// validity period, extended key usage allowing email protection (or none or
// any), and a path through the stored intermediates to an anchor or, unless
// disabled, a system root. Key usage is the caller's, since it depends on
// signing or encrypting. The error is an *InvalidError.
func (c *Cache) Validate(cert *x509.Certificate, at time.Time) error {
	c.refresh()
	c.mu.RLock()
	st := c.st
	c.mu.RUnlock()
	if _, err := validate(newEntry(cert), at, st.roots, st.pool); err != nil {
		return err
	}
	return nil
}

// Judge gives the verdict on a certificate found for addr elsewhere than
// in the cache, such as in a directory, as Lookup would on a stored one:
// it must name the address, be valid now, allow encryption and email
// protection, and have a path to a trusted root through the stored
// intermediates and those given (which are never trusted themselves). The
// Entry's Source is SourceDirectory; nothing is stored.
func (c *Cache) Judge(addr string, cert *x509.Certificate, intermediates []*x509.Certificate) Candidate {
	c.refresh()
	c.mu.RLock()
	st := c.st
	c.mu.RUnlock()
	e := newEntry(cert)
	e.Source = SourceDirectory
	cd := Candidate{Entry: *e}
	addr = normAddr(addr)
	if !slices.Contains(e.Addresses, addr) {
		cd.Err = invalid(e, ReasonAddress, "it does not name "+addr, nil)
		return cd
	}
	pool := st.pool
	if len(intermediates) > 0 {
		pool = pool.Clone()
		for _, i := range intermediates {
			pool.AddCert(i)
		}
	}
	cd.Chain, cd.Err = check(e, c.now(), st.roots, pool)
	return cd
}

// validated is a path that validated, and the span of time it holds for:
// where the validity periods of every certificate on it overlap.
type validated struct {
	chain       []*x509.Certificate
	from, until time.Time
}

// check is check with the state's anchors and intermediates, remembering
// the paths that validated: a path holds for as long as the state and its
// certificates' validity periods, so that building it, with a signature
// check per link, is done once per certificate and not on every message.
// A certificate that does not validate is checked again each time.
func (st *state) check(e *Entry, at time.Time) ([]*x509.Certificate, *InvalidError) {
	if v, ok := st.valid.Load(e.Fingerprint); ok {
		if v := v.(*validated); !at.Before(v.from) && !at.After(v.until) {
			return v.chain, nil
		}
	}
	chain, err := check(e, at, st.roots, st.pool)
	if err == nil {
		v := &validated{chain: slices.Clip(chain), from: chain[0].NotBefore, until: chain[0].NotAfter}
		for _, c := range chain[1:] {
			if c.NotBefore.After(v.from) {
				v.from = c.NotBefore
			}
			if c.NotAfter.Before(v.until) {
				v.until = c.NotAfter
			}
		}
		st.valid.Store(e.Fingerprint, v)
	}
	return chain, err
}

// check decides whether e, found by its address, can be encrypted to at a
// time, and returns the path that validated.
func check(e *Entry, at time.Time, roots, pool *x509.CertPool) ([]*x509.Certificate, *InvalidError) {
	if err := checkTime(e, at); err != nil {
		return nil, err
	}
	if detail := encryptionUsage(e.Cert); detail != "" {
		return nil, invalid(e, ReasonKeyUsage, detail, nil)
	}
	return validate(e, at, roots, pool)
}

func checkTime(e *Entry, at time.Time) *InvalidError {
	switch {
	case at.Before(e.Cert.NotBefore):
		return invalid(e, ReasonNotYetValid, "not valid until "+e.Cert.NotBefore.UTC().Format(time.RFC3339), nil)
	case at.After(e.Cert.NotAfter):
		return invalid(e, ReasonExpired, "expired "+e.Cert.NotAfter.UTC().Format(time.RFC3339), nil)
	}
	return nil
}

func validate(e *Entry, at time.Time, roots, pool *x509.CertPool) ([]*x509.Certificate, *InvalidError) {
	if err := checkTime(e, at); err != nil {
		return nil, err
	}
	c := e.Cert
	if len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) > 0 &&
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, invalid(e, ReasonExtKeyUsage, "extended key usage does not include email protection", nil)
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err == nil {
		return chains[0], nil
	}
	var (
		unknown x509.UnknownAuthorityError
		inv     x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return nil, invalid(e, ReasonUntrusted, fmt.Sprintf("no path from issuer %q to a trusted root (trust the root, or add the missing intermediate)", c.Issuer.String()), err)
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return nil, invalid(e, ReasonExpired, "a certificate in its chain is outside its validity period: "+err.Error(), err)
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return nil, invalid(e, ReasonExtKeyUsage, "its chain does not allow email protection", err)
	}
	return nil, invalid(e, ReasonUntrusted, "chain rejected: "+err.Error(), err)
}

func invalid(e *Entry, r Reason, detail string, err error) *InvalidError {
	return &InvalidError{Fingerprint: e.Fingerprint, Subject: e.Cert.Subject.String(), Reason: r, Detail: detail, Err: err}
}

// encryptionUsage says why c cannot be encrypted to, or "" when it can: RSA
// needs keyEncipherment, EC keyAgreement (RFC 8550 section 4.4.2); no
// keyUsage extension allows both.
func encryptionUsage(c *x509.Certificate) string {
	ku := c.KeyUsage
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		if ku != 0 && ku&x509.KeyUsageKeyEncipherment == 0 {
			return "key usage does not allow key encipherment"
		}
	case *ecdsa.PublicKey, *ecdh.PublicKey:
		if ku != 0 && ku&x509.KeyUsageKeyAgreement == 0 {
			return "key usage does not allow key agreement"
		}
	default:
		return fmt.Sprintf("a %s key cannot be encrypted to", c.PublicKeyAlgorithm)
	}
	return ""
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// certAddresses lists the addresses c names in subjectAltName and in the
// subject's emailAddress (still common in older certificates), normalized.
func certAddresses(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.EmailAddresses)+1)
	for _, a := range c.EmailAddresses {
		out = append(out, normAddr(a))
	}
	for _, n := range c.Subject.Names {
		if s, ok := n.Value.(string); ok && n.Type.Equal(oidEmailAddress) {
			out = append(out, normAddr(s))
		}
	}
	slices.Sort(out)
	return slices.Compact(slices.DeleteFunc(out, func(s string) bool { return s == "" }))
}

// normAddr puts an address in the form the policy compares it in
// (mailaddr.Normalize): Bob@Example.org. finds bob@example.org's
// certificate, where an exact match would silently fail to find it and send
// in the clear or refuse.
func normAddr(s string) string { return mailaddr.Normalize(s) }
