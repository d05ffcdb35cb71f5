// Package proxy is the network side of smimeproxy: what the SMTP submission
// proxy (package proxy/smtp) and the IMAP proxy share: their options and
// dependencies, metrics, listeners and TLS, and the way to the upstream
// servers. Authentication belongs to the upstream servers: a session exists
// only when the upstream accepted the same credentials.
package proxy

import (
	"context"
	"crypto/x509"
	"log/slog"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/policy"
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
