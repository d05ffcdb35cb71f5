// Package proxy is the network side of smimeproxy: what the SMTP submission
// proxy (package proxy/smtp) and the IMAP proxy share: their options and
// dependencies, metrics, listeners and TLS, and the way to the upstream
// servers. Authentication belongs to the upstream servers: a session exists
// only when the upstream accepted the same credentials.
package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/smime"
)

// Keys is what the proxies need of our users' keystore.
type Keys interface {
	Signer(email string, now time.Time) (*keystore.Signer, error)
	EncryptionCert(email string, now time.Time) (*x509.Certificate, error)
	DecryptionKeys(email string) ([]keystore.KeyPair, error)
	Locked() bool
}

var _ Keys = (*keystore.Store)(nil)

// Certs is what the proxies need of the certificate cache.
type Certs interface {
	Lookup(ctx context.Context, addr string) (*certcache.Entry, error)
	Roots() *x509.CertPool
	Intermediates() *x509.CertPool
	Harvest(signer, encryptionCert *x509.Certificate, signingTime time.Time, caps []cms.Capability) error
}

var _ Certs = (*certcache.Cache)(nil)

// SignatureChecker is what Options.Certs may offer besides Certs (find it
// by type assertion): after smime.Open verified a message, CheckSignatures
// asks whether each signer's certificate was revoked, turns a revoked
// signer's Status into smime.StatusRevoked (smime=fail, with the reason) in
// place, and says for each signature whether its certificates may be
// harvested. certstatus.Checker implements it, bounded by the revocation
// timeouts.
type SignatureChecker interface {
	CheckSignatures(ctx context.Context, sigs []*smime.Signature) (harvest []bool)
}

// RecipientChecker is what Options.Certs may offer besides Certs (find it
// by type assertion): whether a certificate found elsewhere (a user's own,
// in the keystore) may be encrypted to, under the revocation rules Lookup
// applies. It returns nil, or a *certcache.NoValidCertError saying why not.
// certstatus.Checker implements it.
type RecipientChecker interface {
	CheckRecipient(ctx context.Context, addr string, cert *x509.Certificate) error
}

// Available is what a store offers whose content lives elsewhere (a
// keystore or certificate cache in a database): nil while it can be
// reached, or why not.
type Available interface {
	Available() error
}

// Generational is what a store offers whose content may change under a
// running proxy: a number that moves whenever it does (another instance's
// harvest, a certificate removed with the CLI, the keystore unlocked).
type Generational interface {
	Generation() uint64
}

var (
	_ Available    = (*keystore.Store)(nil)
	_ Available    = (*certcache.Cache)(nil)
	_ Generational = (*keystore.Store)(nil)
	_ Generational = (*certcache.Cache)(nil)
)

// Options are what a proxy is built from. Reload takes the same, for new
// sessions; open sessions keep what they started with.
type Options struct {
	Config *config.Config
	Policy *policy.Policy
	Keys   Keys
	Certs  Certs
	// Cert is the listeners' TLS certificate; nil when no listener uses TLS.
	Cert    *Certificate
	Logger  *slog.Logger
	Metrics *Metrics
	// Budget is the memory budget both proxies share; nil: one of
	// Config.MemoryBudgetMB for this proxy alone.
	Budget *Budget
	// Now is the clock for certificate validity; nil: time.Now.
	Now func() time.Time
}

func (o *Options) Time() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// StoresAvailable says why the keystore or the certificate cache cannot be
// reached now, if so. A proxy then takes no new work (SMTP: 4xx on MAIL;
// IMAP: NO [UNAVAILABLE] on login): what it holds of them may be stale, and
// harvesting would fail. Work under way goes on with what it holds.
func (o *Options) StoresAvailable() error {
	var errs []error
	for _, s := range []any{o.Keys, o.Certs} {
		if a, ok := s.(Available); ok {
			errs = append(errs, a.Available())
		}
	}
	return errors.Join(errs...)
}

// StoresGeneration moves whenever what the keystore or the certificate
// cache serve changes, by this instance, another or the CLI. A cache of
// messages opened with them (decrypted with the keys, verified against the
// anchors) keys its entries by it, or drops them when it moves, so that a
// key or anchor removed elsewhere stops counting within the stores' recheck
// interval. It looks for changes first, as lookups do.
func (o *Options) StoresGeneration() uint64 {
	var g uint64
	for _, s := range []any{o.Keys, o.Certs} {
		if v, ok := s.(Generational); ok {
			g += v.Generation()
		}
	}
	return g
}
