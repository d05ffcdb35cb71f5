package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"smimeproxy/config"
	"smimeproxy/keystore"
)

func healthCommand() *command {
	var (
		addr  string
		ready bool
	)
	return &command{
		name:  "health",
		usage: "health [--addr HOST:PORT] [--ready]",
		short: "ask a running proxy whether it is alive (or ready)",
		help: `Asks the /healthz endpoint of a running smimeproxy (or /readyz with --ready:
the keystore is unlocked, its store can be reached and the upstream servers
answer), for container health checks and scripts. Exits 0 when the answer is
yes.`,
		examples: `  smimeproxy health
  smimeproxy health --addr 127.0.0.1:9464 --ready`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "addr", "127.0.0.1:9464", "the metrics listener's `HOST:PORT` (metrics.listen)")
			fs.BoolVar(&ready, "ready", false, "ask /readyz instead of /healthz")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
			if err != nil {
				return usagef("invalid --addr %q: %v", addr, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("no answer from smimeproxy at %s: %w", addr, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", path, strings.TrimSpace(string(body)))
			}
			fmt.Fprint(e.stdout, string(body))
			return nil
		},
	}
}

func checkConfigCommand() *command {
	var sf storeFlags
	return &command{
		name:  "check-config",
		usage: "check-config [--config FILE] [--passphrase-file FILE]",
		short: "check a configuration file and open the stores, without starting anything",
		help: `Reads the configuration strictly (an unknown key, a wrong type or a missing
file is an error naming the file, line and key), loads the TLS certificate,
opens the keystore and the certificate cache, and unlocks the keystore when a
passphrase is at hand (--passphrase-file, $SMIMEPROXY_PASSPHRASE or the
configured passphrase_file). Unlocked, it opens every key and names each one
that does not open or whose file was changed without the passphrase, and
exits 1 if there is any. Run it before reloading a running proxy.`,
		examples: `  smimeproxy check-config --config /etc/smimeproxy/config.yaml
  smimeproxy check-config --config config.yaml --passphrase-file /etc/smimeproxy/passphrase`,
		flags: sf.register,
		run: func(ctx context.Context, e *env, args []string) error {
			c, err := sf.load(e)
			if err != nil {
				return err
			}
			return checkConfig(e, c)
		},
	}
}

// checkConfig opens everything serve would open, except the listeners and
// the upstream connections, and says what it found.
func checkConfig(e *env, c *config.Config) error {
	w := e.stdout
	if c.Path() != "" {
		fmt.Fprintf(w, "Configuration %s: valid.\n", c.Path())
	} else {
		fmt.Fprintln(w, "No configuration file: the defaults are valid.")
	}
	if c.TLS.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		fmt.Fprintf(w, "TLS certificate: %s, valid until %s.\n", kp.Leaf.Subject.CommonName, kp.Leaf.NotAfter.Format(time.DateOnly))
	}
	for _, s := range []struct {
		name     string
		listen   []config.Listener
		upstream config.Upstream
	}{{"SMTP", c.SMTP.Listen, c.SMTP.Upstream}, {"IMAP", c.IMAP.Listen, c.IMAP.Upstream}} {
		var ls []string
		for _, l := range s.listen {
			ls = append(ls, fmt.Sprintf("%s (%s)", l.Addr, l.TLS))
		}
		fmt.Fprintf(w, "%s: listens on %s; upstream %s (%s).\n", s.name, strings.Join(ls, ", "), s.upstream.Addr, s.upstream.TLS)
	}
	ks, err := e.openKeystore(c, false)
	if err != nil {
		return err
	}
	var broken []*keystore.KeyError
	if pass, err := e.keystorePassphrase(c.Keystore.PassphraseFile); err != nil {
		fmt.Fprintf(w, "Keystore %s: %d key(s); not unlocked, so not checked (%v).\n", ks.Location(), len(ks.Identities()), err)
	} else if err := ks.Unlock(pass); err != nil {
		return fmt.Errorf("keystore %s: %w", ks.Location(), err)
	} else {
		noteUpgrade(e, ks)
		if broken, err = ks.Check(); err != nil {
			return fmt.Errorf("keystore %s: %w", ks.Location(), err)
		}
		n := len(ks.Identities())
		fmt.Fprintf(w, "Keystore %s: %d key(s), unlocked with the passphrase; %d open.\n", ks.Location(), n, n-len(broken))
		for _, ke := range broken {
			fmt.Fprintf(w, "Key %s is refused: %v\n", ke.KeyID, ke)
		}
	}
	cc, err := e.openCertCache(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Certificate cache %s: %d certificate(s), %d trust anchor(s)", cc.Location(), len(cc.List()), len(cc.Anchors()))
	if c.Trust.SystemRoots {
		fmt.Fprint(w, " and the system roots")
	}
	fmt.Fprintln(w, ".")
	if _, err := newCertChecker(c, cc, nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(w, certChecksSummary(c))
	if len(broken) > 0 {
		return fmt.Errorf("%d key(s) in %s do not open or were changed without the passphrase; see above", len(broken), ks.Location())
	}
	return nil
}
