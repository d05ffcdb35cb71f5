// Package certstatus is the certificate cache as the proxies use it, with
// what the cache alone cannot tell: certificates from the organisation's
// LDAP directories for recipients the cache holds none usable for (package
// directory), and whether a certificate was revoked (package revocation),
// asked before encrypting to it and for the signer of a message being
// verified. A revoked certificate is never encrypted to: the recipient
// counts as having no certificate, and policy decides. A certificate whose
// status nobody could tell is used (soft-fail, logged and counted) or not
// (hard-fail), as configured.
//
// Certificates found in a directory are not stored in the cache: the
// directory stays the authority, so that one it removes or replaces stops
// being used once the lookup's cache lifetime passes, instead of living on
// in the cache; and the cache does not fill with the address book.
// Revocation statuses are stored, by certificate, for the CLI and for the
// other instances sharing the cache.
package certstatus

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/directory"
	"smimeproxy/internal/mailaddr"
	"smimeproxy/revocation"
	"smimeproxy/smime"
)

// Options configure a Checker. The zero value checks nothing and asks no
// directory: the Checker is then the cache alone.
type Options struct {
	Directories []*directory.Directory
	Revocation  *revocation.Checker // nil: no revocation checks
	// HardFail makes a certificate whose status is unknown unusable, and
	// its signatures untrusted.
	HardFail bool
	Logger   *slog.Logger // nil: no log
	Metrics  *Metrics     // nil: not counted
}

// Checker is the certificate cache with directory lookups and revocation
// checks. It is safe for concurrent use.
type Checker struct {
	cache *certcache.Cache
	o     Options
	log   *slog.Logger
	m     *Metrics
}

// New returns a Checker around cache.
func New(cache *certcache.Cache, o Options) *Checker {
	x := &Checker{cache: cache, o: o, log: o.Logger, m: o.Metrics}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if x.m == nil {
		x.m = NewMetrics(nil)
	}
	return x
}

// Uses of a certificate, for the metrics.
const (
	useEncrypt = "encrypt"
	useVerify  = "verify"
)

// Lookup returns the certificate to encrypt to for addr: the cache's
// choice (certcache.Cache.Lookup) when it is not revoked, else the next
// usable one stored, else one from the directories, validated as a stored
// one would be. With none stored or found it returns an error wrapping
// certcache.ErrNoCert; with none usable, a *certcache.NoValidCertError that
// says why each was refused (revoked ones with certcache.ReasonRevoked). A
// directory that does not answer counts as one that holds nothing, so that
// mail still goes (signed only, or refused under encrypt: required).
func (x *Checker) Lookup(ctx context.Context, addr string) (*certcache.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rejected []*certcache.InvalidError
	for _, cd := range x.cache.ForAddress(addr) {
		if cd.Err != nil {
			rejected = append(rejected, cd.Err)
			continue
		}
		if ie := x.usable(ctx, &cd, useEncrypt); ie != nil {
			rejected = append(rejected, ie)
			continue
		}
		e := cd.Entry
		return &e, nil
	}
	var dirErrs []string
	for _, d := range x.o.Directories {
		e, rej, err := x.fromDirectory(ctx, d, addr)
		if e != nil {
			return e, nil
		}
		rejected = append(rejected, rej...)
		if err != nil {
			dirErrs = append(dirErrs, err.Error())
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(rejected) > 0 {
		return nil, &certcache.NoValidCertError{Addr: mailaddr.Normalize(addr), Rejected: rejected}
	}
	if len(dirErrs) > 0 {
		return nil, fmt.Errorf("%w for %s (%s)", certcache.ErrNoCert, addr, strings.Join(dirErrs, "; "))
	}
	return nil, fmt.Errorf("%w for %s", certcache.ErrNoCert, addr)
}

// fromDirectory returns a usable certificate d holds for addr, or the
// verdicts on those it holds.
func (x *Checker) fromDirectory(ctx context.Context, d *directory.Directory, addr string) (*certcache.Entry, []*certcache.InvalidError, error) {
	found, err := d.Lookup(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	cands := make([]certcache.Candidate, 0, len(found.Certs))
	for _, c := range found.Certs {
		cands = append(cands, x.cache.Judge(addr, c, found.Intermediates))
	}
	// Usable first, then the newest: as the cache chooses among its own.
	slices.SortStableFunc(cands, func(a, b certcache.Candidate) int {
		if (a.Err == nil) != (b.Err == nil) {
			return map[bool]int{true: -1, false: 1}[a.Err == nil]
		}
		return cmp.Or(b.Cert.NotBefore.Compare(a.Cert.NotBefore), b.Cert.NotAfter.Compare(a.Cert.NotAfter))
	})
	var rejected []*certcache.InvalidError
	for _, cd := range cands {
		ie := cd.Err
		if ie == nil {
			ie = x.usable(ctx, &cd, useEncrypt)
		}
		if ie != nil {
			x.m.Directory.WithLabelValues("rejected").Inc()
			x.log.Info("a certificate from the directory is not used", "directory", d.String(), "fingerprint", cd.Fingerprint[:16],
				"subject", cd.Cert.Subject.String(), "reason", string(ie.Reason), "err", ie.Detail)
			rejected = append(rejected, ie)
			continue
		}
		x.m.Directory.WithLabelValues("used").Inc()
		e := cd.Entry
		return &e, nil, nil
	}
	return nil, rejected, nil
}

// usable asks whether a candidate that validated was revoked, and says why
// it may not be used, or nil.
func (x *Checker) usable(ctx context.Context, cd *certcache.Candidate, use string) *certcache.InvalidError {
	if x.o.Revocation == nil || len(cd.Chain) < 2 {
		return nil // a trust anchor itself has no issuer to ask
	}
	r := x.status(ctx, cd.Cert, cd.Chain[1])
	if r.Checked.IsZero() && ctx.Err() != nil {
		// The caller went away before an answer: no verdict, and no use.
		return &certcache.InvalidError{Fingerprint: cd.Fingerprint, Subject: cd.Cert.Subject.String(),
			Reason: certcache.ReasonRevocationUnknown, Detail: "the check was abandoned: " + ctx.Err().Error()}
	}
	switch x.verdict(r, use) {
	case verdictRevoked:
		return &certcache.InvalidError{Fingerprint: cd.Fingerprint, Subject: cd.Cert.Subject.String(),
			Reason: certcache.ReasonRevoked, Detail: revokedDetail(r)}
	case verdictHardFail:
		return &certcache.InvalidError{Fingerprint: cd.Fingerprint, Subject: cd.Cert.Subject.String(),
			Reason: certcache.ReasonRevocationUnknown, Detail: "nobody could say whether it was revoked (revocation.unknown: hard-fail): " + r.Reason}
	}
	return nil
}

// Verdicts on a revocation status, as the metrics count them.
const (
	verdictGood     = "good"
	verdictRevoked  = "revoked"
	verdictSoftFail = "unknown_soft_fail"
	verdictHardFail = "unknown_hard_fail"
	verdictNoSource = "no_source"
)

// verdict decides what a status means for a use, counts it, and logs a
// soft failure.
func (x *Checker) verdict(r revocation.Result, use string) string {
	v := verdictGood
	switch r.State {
	case revocation.Revoked:
		v = verdictRevoked
	case revocation.NoSource:
		v = verdictNoSource
	case revocation.Unknown:
		v = verdictSoftFail
		if x.o.HardFail {
			v = verdictHardFail
		}
	}
	x.m.Verdicts.WithLabelValues(use, v).Inc()
	if v == verdictSoftFail {
		x.log.Warn("revocation status unknown; the certificate is used (revocation.unknown: soft-fail)", "use", use, "err", r.Reason)
	}
	return v
}

func revokedDetail(r revocation.Result) string {
	s := "revoked"
	if !r.RevokedAt.IsZero() {
		s += " " + r.RevokedAt.UTC().Format("2006-01-02 15:04 MST")
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s + ", says " + strings.ToUpper(r.Method) + " " + r.URL
}

// status is cert's revocation status: the one stored when still fresh
// (another instance or the CLI may have asked), else asked now and stored.
func (x *Checker) status(ctx context.Context, cert, issuer *x509.Certificate) revocation.Result {
	fp := certcache.Fingerprint(cert)
	if s, ok := x.cache.Status(fp); ok && time.Now().Before(s.Until) {
		return fromStatus(s)
	}
	r := x.o.Revocation.Check(ctx, cert, issuer)
	x.keep(fp, r)
	return r
}

// keep stores a status that came from asking, unless the store holds it
// already or cannot be reached (a write would wait on it).
func (x *Checker) keep(fp string, r revocation.Result) {
	if r.State == revocation.NoSource || r.Until.IsZero() || x.cache.Available() != nil {
		return
	}
	if s, ok := x.cache.Status(fp); ok && s.Checked.Equal(r.Checked) {
		return
	}
	if err := x.cache.SetStatus(fp, toStatus(r)); err != nil {
		x.log.Error("the revocation status was not stored", "fingerprint", fp[:16], "err", err)
	}
}

func toStatus(r revocation.Result) certcache.Status {
	return certcache.Status{State: string(r.State), Method: r.Method, URL: r.URL, Reason: r.Reason,
		RevokedAt: r.RevokedAt, Checked: r.Checked, Until: r.Until}
}

func fromStatus(s certcache.Status) revocation.Result {
	return revocation.Result{State: revocation.State(s.State), Method: s.Method, URL: s.URL, Reason: s.Reason,
		RevokedAt: s.RevokedAt, Checked: s.Checked, Until: s.Until}
}

// CheckSignatures asks, for each signature that verified (smime.Open or
// smime.Verify), whether the signer's certificate was revoked, and changes
// in place those that cannot stand: a revoked signer's Status becomes
// smime.StatusRevoked, with a Reason saying when and why (reported as
// smime=fail); under hard-fail, one whose status nobody could tell becomes
// smime.StatusUntrusted. A soft failure keeps the Status and says so in
// the Reason. It returns, for each signature, whether its certificates
// may be harvested: only a valid one whose signer is not revoked. It takes
// at most the revocation timeouts, and nothing once the answers are
// cached.
func (x *Checker) CheckSignatures(ctx context.Context, sigs []*smime.Signature) []bool {
	harvest := make([]bool, len(sigs))
	for i, s := range sigs {
		harvest[i] = s.Status == smime.StatusValid
		if x.o.Revocation == nil || s.Signer == nil || !verified(s.Status) {
			continue
		}
		issuer := x.issuer(s.Signer, s.Certificates, signedAt(s))
		if issuer == nil {
			continue
		}
		r := x.status(ctx, s.Signer, issuer)
		if r.Checked.IsZero() && ctx.Err() != nil {
			harvest[i] = false // the caller went away before an answer
			continue
		}
		switch x.verdict(r, useVerify) {
		case verdictRevoked:
			s.Status, s.Reason, harvest[i] = smime.StatusRevoked, "the signer's certificate was "+revokedDetail(r), false
		case verdictHardFail:
			s.Status, s.Reason, harvest[i] = smime.StatusUntrusted, "revocation status of the signer's certificate unknown", false
		case verdictSoftFail:
			s.Reason += " (revocation status unknown)"
		}
	}
	return harvest
}

// verified reports whether a status means the signature and its chain
// verified, so that the signer's certificate is known and trusted.
func verified(st smime.Status) bool {
	return st == smime.StatusValid || st == smime.StatusWeak || st == smime.StatusAddressMismatch
}

// signedAt is when the signer's chain must be valid: as smime verified it.
func signedAt(s *smime.Signature) time.Time {
	if now := time.Now(); s.SigningTime.IsZero() || s.SigningTime.After(now) {
		return now
	}
	return s.SigningTime
}

// issuer returns cert's issuer on a path to a trusted root through the
// stored intermediates and extra, or nil.
func (x *Checker) issuer(cert *x509.Certificate, extra []*x509.Certificate, at time.Time) *x509.Certificate {
	inter := x.cache.Intermediates()
	for _, c := range extra {
		inter.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: x.cache.Roots(), Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil || len(chains[0]) < 2 {
		return nil
	}
	return chains[0][1]
}

// CheckRecipient says whether cert, found for addr outside the cache (a
// user's own, from the keystore), may be encrypted to under the revocation
// rules Lookup applies to those it finds: nil, or a
// *certcache.NoValidCertError saying why not.
func (x *Checker) CheckRecipient(ctx context.Context, addr string, cert *x509.Certificate) error {
	if x.o.Revocation == nil {
		return nil
	}
	issuer := x.issuer(cert, nil, time.Now())
	if issuer == nil {
		return nil
	}
	cd := certcache.Candidate{Entry: certcache.Entry{Cert: cert, Fingerprint: certcache.Fingerprint(cert)},
		Chain: []*x509.Certificate{cert, issuer}}
	if ie := x.usable(ctx, &cd, useEncrypt); ie != nil {
		return &certcache.NoValidCertError{Addr: mailaddr.Normalize(addr), Rejected: []*certcache.InvalidError{ie}}
	}
	return nil
}

// ErrNotChecked: revocation checks are off, or the certificate has no path
// to a trusted root, so its issuer, who would answer, is not known.
var ErrNotChecked = errors.New("certstatus: not checked")

// CheckNow asks whether cert was revoked now, whatever is cached, and
// stores the answer. extra are intermediates that came with it; at is when
// its chain must be valid (zero: now).
func (x *Checker) CheckNow(ctx context.Context, cert *x509.Certificate, extra []*x509.Certificate, at time.Time) (revocation.Result, error) {
	if x.o.Revocation == nil {
		return revocation.Result{}, fmt.Errorf("%w: revocation checking is off (revocation.ocsp and revocation.crl)", ErrNotChecked)
	}
	if at.IsZero() {
		at = time.Now()
	}
	issuer := x.issuer(cert, extra, at)
	if issuer == nil {
		return revocation.Result{}, fmt.Errorf("%w: no path to a trusted root, so its issuer is not known", ErrNotChecked)
	}
	r := x.o.Revocation.Fresh(ctx, cert, issuer)
	x.keep(certcache.Fingerprint(cert), r)
	return r, nil
}

// Harvest stores a signer's certificates (certcache.Cache.Harvest) unless
// either is known to be revoked. It asks no one: CheckSignatures, which
// comes first, has.
func (x *Checker) Harvest(signer, encryptionCert *x509.Certificate, signingTime time.Time, caps []cms.Capability) error {
	for _, c := range []*x509.Certificate{signer, encryptionCert} {
		if c == nil {
			continue
		}
		if s, ok := x.cache.Status(certcache.Fingerprint(c)); ok && s.State == certcache.StateRevoked {
			return fmt.Errorf("certstatus: %s is revoked: not harvested", c.Subject)
		}
	}
	return x.cache.Harvest(signer, encryptionCert, signingTime, caps)
}

// Roots returns the cache's trust anchors (certcache.Cache.Roots).
func (x *Checker) Roots() *x509.CertPool { return x.cache.Roots() }

// Intermediates returns the cache's intermediates (certcache.Cache.Intermediates).
func (x *Checker) Intermediates() *x509.CertPool { return x.cache.Intermediates() }

// Available is the cache's (certcache.Cache.Available).
func (x *Checker) Available() error { return x.cache.Available() }

// Generation is the cache's (certcache.Cache.Generation): it moves when a
// certificate is found revoked, too.
func (x *Checker) Generation() uint64 { return x.cache.Generation() }
