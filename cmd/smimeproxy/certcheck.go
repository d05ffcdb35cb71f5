package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"smimeproxy/certcache"
	"smimeproxy/certfile"
	"smimeproxy/certstatus"
	"smimeproxy/config"
	"smimeproxy/directory"
	"smimeproxy/keystore"
	"smimeproxy/revocation"
)

// certMetrics are the metrics of directory lookups and revocation checks,
// made once per process and kept across reloads.
type certMetrics struct {
	dir *directory.Metrics
	rev *revocation.Metrics
	cs  *certstatus.Metrics
}

func newCertMetrics(reg prometheus.Registerer) *certMetrics {
	return &certMetrics{dir: directory.NewMetrics(reg), rev: revocation.NewMetrics(reg), cs: certstatus.NewMetrics(reg)}
}

// newCertChecker is the certificate lookup the proxies use: the cache, with
// the configured directories and revocation checks. m may be nil.
func newCertChecker(c *config.Config, cc *certcache.Cache, log *slog.Logger, m *certMetrics) (*certstatus.Checker, error) {
	if m == nil {
		m = newCertMetrics(nil)
	}
	o := certstatus.Options{HardFail: c.Revocation.Unknown == config.HardFail, Logger: log, Metrics: m.cs}
	for i, d := range c.Directories {
		key := fmt.Sprintf("directories[%d]", i)
		do := directory.Options{URL: d.URL, ServerName: d.ServerName, Base: d.Base, BindDN: d.BindDN, Filter: d.Filter,
			Attributes: d.Attributes, Timeout: d.Timeout.D(), FoundTTL: d.FoundTTL.D(), NotFoundTTL: d.NotFoundTTL.D(),
			Logger: log, Metrics: m.dir}
		if d.CAFile != "" {
			pool, err := certPool(d.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%s.ca_file: %w", key, err)
			}
			do.RootCAs = pool
		}
		if d.PasswordFile != "" {
			pw, err := readSecretFile(d.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("%s.password_file: %w", key, err)
			}
			do.Password = string(pw)
		}
		dir, err := directory.New(do)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		o.Directories = append(o.Directories, dir)
	}
	if r := c.Revocation; r.Checks() {
		o.Revocation = revocation.New(revocation.Options{OCSP: r.OCSP, OCSPResponder: r.OCSPResponder, CRL: r.CRL,
			Timeout: r.Timeout.D(), Retry: r.Retry.D(), MaxAge: r.MaxAge.D(), Logger: log, Metrics: m.rev})
	}
	return certstatus.New(cc, o), nil
}

// certChecksSummary says, in a line, where recipients' certificates are
// looked up and how revocation is checked.
func certChecksSummary(c *config.Config) string {
	var dirs []string
	for _, d := range c.Directories {
		dirs = append(dirs, d.URL)
	}
	s := "Directories: none"
	if len(dirs) > 0 {
		s = "Directories: " + strings.Join(dirs, ", ")
	}
	r := c.Revocation
	var how []string
	if r.OCSP {
		how = append(how, "OCSP")
	}
	if r.CRL {
		how = append(how, "CRLs")
	}
	if len(how) == 0 {
		return s + ". Revocation: not checked."
	}
	return fmt.Sprintf("%s. Revocation: by %s, %s when unknown, timeout %s.", s, strings.Join(how, " then "), r.Unknown, r.Timeout.D())
}

// certPool reads the CA certificates in a file.
func certPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := certfile.Parse(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// checkIdentities asks whether our users' current certificates were
// revoked, storing the answers (for `smimeproxy identities`), and logs an
// error for each that was: recipients will call its signatures revoked
// until the user has a new one.
func checkIdentities(ctx context.Context, x *certstatus.Checker, ks *keystore.Store, log *slog.Logger) {
	for _, id := range ks.Identities() {
		if len(id.Certs) == 0 || id.Status == keystore.StatusBroken {
			continue
		}
		r, err := x.CheckNow(ctx, id.Certs[0], id.Chain, time.Time{})
		if err != nil {
			log.Debug("revocation of our own certificate not checked", "email", id.Email, "key_id", id.KeyID, "err", err)
			continue
		}
		if r.State == revocation.Revoked {
			log.Error("our own certificate is revoked: recipients will call its signatures revoked; get a new one", "email", id.Email,
				"key_id", id.KeyID, "reason", r.Reason, "revoked_at", r.RevokedAt)
		}
	}
}

// statusLine says what is known of a certificate's revocation, for people.
func statusLine(cc *certcache.Cache, cert *x509.Certificate, now time.Time) string {
	s, ok := cc.Status(certcache.Fingerprint(cert))
	if !ok {
		if len(cert.OCSPServer)+len(cert.CRLDistributionPoints) == 0 {
			return "not checked (the certificate names no OCSP responder or CRL)"
		}
		return "not checked yet"
	}
	line := s.State
	switch s.State {
	case string(revocation.Revoked):
		line += " " + s.RevokedAt.Local().Format(time.DateTime)
		if s.Reason != "" {
			line += " (" + s.Reason + ")"
		}
	case string(revocation.Unknown):
		line += ": " + s.Reason
	}
	if s.Method != "" {
		line += fmt.Sprintf(", by %s %s", map[string]string{revocation.MethodOCSP: "OCSP", revocation.MethodCRL: "CRL"}[s.Method], s.URL)
	}
	line += ", checked " + s.Checked.Local().Format(time.DateTime)
	if !now.Before(s.Until) {
		line += " (stale: checked again when next used)"
	}
	return line
}
