package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/certstatus"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	imapproxy "smimeproxy/proxy/imap"
	smtpproxy "smimeproxy/proxy/smtp"
)

func serveCommand() *command {
	var sf storeFlags
	return &command{
		name:  "serve",
		usage: "serve [--config FILE]",
		short: "run the SMTP and IMAP proxies",
		help: `Runs the SMTP submission proxy, the IMAP proxy and the HTTP listener for
/metrics, /healthz and /readyz, as the configuration says. The keystore
passphrase comes from keystore.passphrase_file, $SMIMEPROXY_PASSPHRASE, the
systemd credential "passphrase", or a prompt when run in a terminal.

SIGHUP reloads the configuration, the TLS certificate, the trust anchors and
the policy without dropping open sessions; a configuration that does not
validate is refused with the reason in the log, and the old one keeps
running. Listener addresses change only on restart. SIGTERM or SIGINT stop
accepting, let messages being submitted finish (up to shutdown_timeout),
close IMAP sessions with BYE, and exit 0.`,
		examples: `  smimeproxy serve --config /etc/smimeproxy/config.yaml
  smimeproxy serve --config config.yaml --passphrase-file passphrase.txt
  systemctl reload smimeproxy        # SIGHUP: reload the configuration`,
		flags: sf.register,
		run: func(ctx context.Context, e *env, args []string) error {
			c, ks, err := sf.open(e, false, true)
			if err != nil {
				return err
			}
			log := newLogger(c.Log, e.stderr)
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			s, err := start(ctx, c, ks, cc, log)
			if err != nil {
				return err
			}
			hup := e.hup
			if hup == nil {
				ch := make(chan os.Signal, 1)
				signal.Notify(ch, syscall.SIGHUP)
				defer signal.Stop(ch)
				hup = ch
			}
			daily := time.NewTicker(24 * time.Hour)
			defer daily.Stop()
			for {
				select {
				case <-hup:
					s.reload(sf, e)
				case <-daily.C:
					s.expiry.warn(log)
					s.checkKeys()
					go checkIdentities(ctx, s.certChecker(), ks, log)
				case <-ctx.Done():
					return s.shutdown()
				}
			}
		},
	}
}

// newLogger makes the process's logger from the log section.
func newLogger(l config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// server is everything serve and demo run.
type server struct {
	cfg    *config.Config
	ks     *keystore.Store
	cc     *certcache.Cache
	cert   *proxy.Certificate
	smtp   *smtpproxy.Proxy
	imap   *imapproxy.Proxy
	ops    *opsServer
	expiry *expiry
	log    *slog.Logger
	opts   proxy.Options
	// certMetrics count directory lookups and revocation checks across
	// reloads.
	certMetrics *certMetrics
}

// start builds both proxies from c and starts them, with the HTTP listener
// when c has one.
func start(ctx context.Context, c *config.Config, ks *keystore.Store, cc *certcache.Cache, log *slog.Logger) (*server, error) {
	s := &server{cfg: c, ks: ks, cc: cc, log: log}
	if c.TLS.CertFile != "" {
		cert, err := proxy.LoadCertificate(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, err
		}
		s.cert = cert
	}
	reg := newRegistry()
	s.certMetrics = newCertMetrics(reg)
	certs, err := newCertChecker(c, cc, log, s.certMetrics)
	if err != nil {
		return nil, err
	}
	s.opts = proxy.Options{
		Config:  withServerName(c),
		Policy:  policy.FromConfig(c.Policy),
		Keys:    ks,
		Certs:   certs,
		Cert:    s.cert,
		Logger:  log,
		Metrics: proxy.NewMetrics(reg),
	}
	s.opts.Budget = proxy.NewBudget(budgetBytes(c), s.opts.Metrics)
	setMemoryLimit(c, log)
	if s.smtp, err = smtpproxy.New(s.opts); err != nil {
		return nil, err
	}
	if s.imap, err = imapproxy.New(s.opts); err != nil {
		return nil, err
	}
	if err := s.smtp.Start(ctx); err != nil {
		return nil, err
	}
	if err := s.imap.Start(ctx); err != nil {
		s.smtp.Shutdown(ctx)
		return nil, err
	}
	s.expiry = &expiry{ks: ks, cc: cc, now: time.Now}
	ready := &readiness{check: s.ready, maxAge: 5 * time.Second}
	reg.MustRegister(s.expiry, ready)
	if c.Metrics.Listen != "" {
		if s.ops, err = startOps(c.Metrics.Listen, reg, ready, c.Metrics.Pprof, log); err != nil {
			s.shutdown()
			return nil, err
		}
	}
	s.expiry.warn(log)
	s.checkKeys()
	go checkIdentities(ctx, certs, ks, log)
	log.Info("smimeproxy started", "smtp", addrList(s.smtp.Addrs()), "imap", addrList(s.imap.Addrs()), "metrics", c.Metrics.Listen,
		"identities", len(ks.Emails()))
	return s, nil
}

// withServerName fills in the host name when the configuration names none.
func withServerName(c *config.Config) *config.Config {
	if c.ServerName != "" {
		return c
	}
	cp := *c
	cp.ServerName = hostname()
	return &cp
}

func addrList(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// ready says whether mail can flow: keys unlocked, the store reachable,
// both upstreams answering.
func (s *server) ready(ctx context.Context) error {
	if s.ks.Locked() {
		return keystore.ErrLocked
	}
	if err := errors.Join(s.ks.Available(), s.cc.Available()); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := s.smtp.Check(ctx); err != nil {
		return fmt.Errorf("smtp upstream: %w", err)
	}
	if err := s.imap.Check(ctx); err != nil {
		return fmt.Errorf("imap upstream: %w", err)
	}
	return nil
}

// certChecker is the certificate lookup the proxies use now.
func (s *server) certChecker() *certstatus.Checker { return s.opts.Certs.(*certstatus.Checker) }

// checkKeys logs an error for every key the keystore refuses: one that
// does not open, or whose file was changed without the passphrase. Mail
// for its address is then served as if there were no key.
func (s *server) checkKeys() {
	broken, err := s.ks.Check()
	if err != nil {
		s.log.Error("keystore not checked", "err", err)
	}
	for _, ke := range broken {
		s.log.Error("key refused: it does not open, or its file was changed without the passphrase; "+
			"put back a good copy or import it again from a backup", "key_id", ke.KeyID, "file", ke.Path, "err", ke.Reason)
	}
}

// reload reads the configuration again and applies it to new sessions; on
// any error the running configuration stays as it is. A keystore
// passphrase that the new configuration gives without a prompt must unlock
// the keystore, so that the next start does not fail on it.
func (s *server) reload(sf storeFlags, e *env) {
	s.log.Info("reloading on SIGHUP")
	c, err := sf.load(e)
	if err == nil && (c.Keystore.Dir != s.cfg.Keystore.Dir || c.CertCacheDir() != s.cfg.CertCacheDir() || c.Storage != s.cfg.Storage) {
		err = errors.New("keystore.dir, certcache.dir and storage change only on restart")
	}
	if err == nil {
		err = s.checkPassphrase(c, e)
	}
	if err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return
	}
	opts := s.opts
	opts.Config = withServerName(c)
	opts.Policy = policy.FromConfig(c.Policy)
	if opts.Certs, err = newCertChecker(c, s.cc, s.log, s.certMetrics); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return
	}
	if c.TLS.CertFile != s.cfg.TLS.CertFile || c.TLS.KeyFile != s.cfg.TLS.KeyFile || s.cert == nil {
		if c.TLS.CertFile != "" {
			cert, err := proxy.LoadCertificate(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				s.log.Error("reload refused; the running configuration stays", "err", err)
				return
			}
			opts.Cert = cert
		}
	} else if err := s.cert.Reload(); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return
	}
	if err := errors.Join(s.ks.Reload(), s.cc.Reload()); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return
	}
	if err := errors.Join(s.smtp.Reload(opts), s.imap.Reload(opts)); err != nil {
		s.log.Error("reload refused; the running configuration stays", "err", err)
		return
	}
	s.cfg, s.opts, s.cert = c, opts, opts.Cert
	s.opts.Budget.SetTotal(budgetBytes(c))
	setMemoryLimit(c, s.log)
	s.expiry.warn(s.log)
	s.checkKeys()
	s.log.Info("reloaded", "config", c.Path())
}

// checkPassphrase unlocks the keystore with the passphrase c gives (its
// file, $SMIMEPROXY_PASSPHRASE or the systemd credential). One that was
// typed at start cannot be asked again, and the keys stay unlocked.
func (s *server) checkPassphrase(c *config.Config, e *env) error {
	pass, ok, err := e.passphraseAtHand(c.Keystore.PassphraseFile)
	if err != nil || !ok {
		return err
	}
	if err := s.ks.Unlock(pass); err != nil {
		return fmt.Errorf("the keystore passphrase of the new configuration does not unlock %s: %w", s.ks.Location(), err)
	}
	return nil
}

// shutdown stops accepting, lets messages in flight finish up to the
// configured bound, and closes everything.
func (s *server) shutdown() error {
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.D())
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.D())
	defer cancel()
	var errs []error
	if s.ops != nil {
		errs = append(errs, s.ops.shutdown(ctx))
	}
	errs = append(errs, s.smtp.Shutdown(ctx), s.imap.Shutdown(ctx))
	s.ks.Lock()
	if err := errors.Join(errs...); err != nil {
		s.log.Error("shutdown", "err", err)
		return err
	}
	s.log.Info("stopped")
	return nil
}
