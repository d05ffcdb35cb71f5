package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/certfile"
	"smimeproxy/cms"
)

func certsCommand() *command {
	return &command{
		name:  "certs",
		short: "manage other people's certificates (the certificate cache)",
		help: `The certificate cache holds other people's certificates: harvested from signed
mail they sent you, or imported from files. Outgoing mail is encrypted to them.`,
		subs: []*command{certsListCommand(), certsShowCommand(), certsCheckCommand(), certsImportCommand(), certsRemoveCommand(), certsExportCommand()},
	}
}

// cacheCommand is a certs or trust subcommand: it opens the certificate cache
// and hands it to do.
func cacheCommand(name, usage, short, help, examples string, nargs int,
	do func(e *env, cc *certcache.Cache, args []string) error) *command {
	var sf storeFlags
	return &command{
		name: name, usage: usage, short: short, help: help, examples: examples, maxArgs: nargs,
		flags: sf.register,
		run: func(ctx context.Context, e *env, args []string) error {
			if len(args) != nargs {
				return usagef("want %d argument(s), got %d", nargs, len(args))
			}
			c, err := sf.load(e)
			if err != nil {
				return err
			}
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			return do(e, cc, args)
		},
	}
}

func certsListCommand() *command {
	return cacheCommand("list", "list", "list every stored certificate and whether it is usable",
		`Lists other people's certificates: address, whether mail to them can be
encrypted with it now (and if not, why), source, end of validity and
fingerprint. Needs no passphrase.`,
		"  smimeproxy certs list", 0,
		func(e *env, cc *certcache.Cache, _ []string) error {
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tUSABLE\tSOURCE\tNOT AFTER\tFINGERPRINT")
			for _, ent := range cc.List() {
				for _, addr := range ent.Addresses {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", addr, verdict(cc, addr, ent.Fingerprint),
						ent.Source, ent.Cert.NotAfter.Format(time.DateOnly), ent.Fingerprint[:16])
				}
			}
			return tw.Flush()
		})
}

// verdict says whether the certificate with fingerprint fp is the one chosen
// for addr, usable, or why not.
func verdict(cc *certcache.Cache, addr, fp string) string {
	for _, cand := range cc.ForAddress(addr) {
		if cand.Fingerprint != fp {
			continue
		}
		switch {
		case cand.Best:
			return "yes (chosen)"
		case cand.Err == nil:
			return "yes"
		}
		return "no: " + string(cand.Err.Reason)
	}
	return "no"
}

func certsShowCommand() *command {
	return cacheCommand("show", "show ADDR", "show every certificate stored for an address, and the verdict on each",
		`Shows each certificate stored for an address in detail, the one outgoing mail
would be encrypted to first, with the reason any other cannot be used, and
its revocation status as last checked (good, revoked or unknown, by OCSP or
CRL, and when); 'certs check' checks again now.`,
		"  smimeproxy certs show bob@example.org", 1,
		func(e *env, cc *certcache.Cache, args []string) error {
			cands := cc.ForAddress(args[0])
			if len(cands) == 0 {
				return fmt.Errorf("no certificate stored for %s; ask them to send you a signed message, or import their certificate with 'smimeproxy certs import FILE'", args[0])
			}
			for i, cand := range cands {
				if i > 0 {
					fmt.Fprintln(e.stdout)
				}
				printCandidate(e.stdout, cand, statusLine(cc, cand.Cert, time.Now()))
			}
			return nil
		})
}

func printCandidate(w io.Writer, cand certcache.Candidate, revocation string) {
	c := cand.Cert
	status := "usable"
	if cand.Best {
		status = "usable; outgoing mail is encrypted to this one"
	} else if cand.Err != nil {
		status = "not usable: " + cand.Err.Error()
	}
	fmt.Fprintf(w, "Subject:      %s\n", c.Subject)
	fmt.Fprintf(w, "Addresses:    %s\n", strings.Join(cand.Addresses, ", "))
	fmt.Fprintf(w, "Issuer:       %s\n", c.Issuer)
	fmt.Fprintf(w, "Serial:       %s\n", c.SerialNumber.Text(16))
	fmt.Fprintf(w, "Valid:        %s to %s\n", c.NotBefore.Format(time.DateTime), c.NotAfter.Format(time.DateTime))
	fmt.Fprintf(w, "Key:          %s\n", c.PublicKeyAlgorithm)
	fmt.Fprintf(w, "Fingerprint:  %s (SHA-256)\n", cand.Fingerprint)
	fmt.Fprintf(w, "Source:       %s, added %s\n", cand.Source, cand.Added.Format(time.DateTime))
	if !cand.Harvested.IsZero() {
		fmt.Fprintf(w, "Harvested:    from a message signed %s\n", cand.Harvested.Format(time.DateTime))
	}
	if len(cand.Capabilities) > 0 {
		fmt.Fprintf(w, "Capabilities: %s\n", capabilityNames(cand.Capabilities))
	}
	if cand.EncryptionKeyPreference {
		fmt.Fprintf(w, "Preferred:    the sender named it as their encryption certificate\n")
	}
	fmt.Fprintf(w, "Status:       %s\n", status)
	fmt.Fprintf(w, "Revocation:   %s\n", revocation)
}

func certsCheckCommand() *command {
	var sf storeFlags
	return &command{
		name:  "check",
		usage: "check [ADDR]",
		short: "check now whether certificates were revoked",
		help: `Asks now, with the configured revocation checks (OCSP, then CRLs), whether
certificates were revoked, and stores the answers, which running proxies
sharing the store use from then on. With ADDR: each certificate stored for
that address, then what outgoing mail to it would be encrypted to, asking
the configured directories too. Without: every stored certificate, and the
newest certificate of each key in the keystore. Needs no passphrase.`,
		examples: "  smimeproxy certs check bob@example.org\n  smimeproxy certs check --config /etc/smimeproxy/config.yaml",
		maxArgs:  1,
		flags:    sf.register,
		run: func(ctx context.Context, e *env, args []string) error {
			c, err := sf.load(e)
			if err != nil {
				return err
			}
			if !c.Revocation.Checks() {
				return errors.New("revocation checking is off in the configuration (revocation.ocsp and revocation.crl)")
			}
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			x, err := newCertChecker(c, cc, newLogger(c.Log, e.stderr), nil)
			if err != nil {
				return err
			}
			type item struct {
				label string
				cert  *x509.Certificate
				extra []*x509.Certificate
			}
			var items []item
			if len(args) == 1 {
				for _, cand := range cc.ForAddress(args[0]) {
					items = append(items, item{args[0], cand.Cert, nil})
				}
			} else {
				for _, ent := range cc.List() {
					items = append(items, item{ent.Addresses[0], ent.Cert, nil})
				}
				if ks, err := e.openKeystore(c, false); err == nil {
					for _, id := range ks.Identities() {
						if len(id.Certs) > 0 {
							items = append(items, item{id.Email + " (yours)", id.Certs[0], id.Chain})
						}
					}
				}
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tFINGERPRINT\tREVOCATION")
			for _, it := range items {
				status := ""
				if _, err := x.CheckNow(ctx, it.cert, it.extra, time.Time{}); err != nil {
					status = strings.TrimPrefix(err.Error(), "certstatus: ")
				} else {
					status = statusLine(cc, it.cert, time.Now())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", it.label, certcache.Fingerprint(it.cert)[:16], status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(args) == 1 {
				ent, err := x.Lookup(ctx, args[0])
				if err != nil {
					fmt.Fprintf(e.stdout, "Outgoing mail to %s cannot be encrypted: %v\n", args[0], strings.TrimPrefix(err.Error(), "certcache: "))
				} else {
					fmt.Fprintf(e.stdout, "Outgoing mail to %s is encrypted to %s (%s).\n", args[0], ent.Fingerprint[:16], ent.Source)
				}
			}
			return nil
		},
	}
}

func capabilityNames(caps []cms.Capability) string {
	var names []string
	for _, c := range caps {
		if ci, ok := c.Cipher(); ok {
			names = append(names, ci.String())
		} else {
			names = append(names, c.Algorithm.String())
		}
	}
	return strings.Join(names, ", ")
}

func certsImportCommand() *command {
	return cacheCommand("import", "import FILE", "add someone's certificate from a file",
		`Adds other people's certificates from a file (PEM, DER, or a PKCS #7 chain).
CA certificates in it are kept as intermediates to build paths, never trusted
as roots; a root is reported with the command that would trust it.`,
		"  smimeproxy certs import bob.pem\n  smimeproxy certs import partner-chain.p7b", 1,
		func(e *env, cc *certcache.Cache, args []string) error {
			data, err := e.readInput(args)
			if err != nil {
				return err
			}
			certs, err := certfile.Parse(data)
			if err != nil {
				return err
			}
			var cas []*x509.Certificate
			n := 0
			for _, cert := range certs {
				switch {
				case cert.IsCA && isSelfSigned(cert):
					fmt.Fprintf(e.stdout, "Did not trust the root CA %q; to trust it, run: smimeproxy trust add FILE\n", cert.Subject.CommonName)
				case cert.IsCA:
					cas = append(cas, cert)
				default:
					ent, err := cc.Add(cert, nil)
					if err != nil {
						return fmt.Errorf("add the certificate for %s: %w", certAddress(cert), err)
					}
					n++
					fmt.Fprintf(e.stdout, "Added the certificate for %s (%s).\n", strings.Join(ent.Addresses, ", "), verdict(cc, ent.Addresses[0], ent.Fingerprint))
				}
			}
			if len(cas) > 0 {
				if _, err := cc.AddIntermediates(cas...); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Stored %d intermediate CA certificate(s) for building paths (never trusted as roots).\n", len(cas))
			}
			if n == 0 && len(cas) == 0 {
				return errors.New("no certificate of a person in the file")
			}
			return nil
		})
}

func certsRemoveCommand() *command {
	return cacheCommand("remove", "remove ADDR|FINGERPRINT", "remove the certificates of an address, or one by fingerprint",
		`Removes every certificate stored for an address, or the one with a SHA-256
fingerprint. Mail to that address is no longer encrypted until a new
certificate arrives.`,
		"  smimeproxy certs remove bob@example.org\n  smimeproxy certs remove 3f2a...e9", 1,
		func(e *env, cc *certcache.Cache, args []string) error {
			n, err := cc.Remove(args[0])
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("nothing stored for %s", args[0])
			}
			fmt.Fprintf(e.stdout, "Removed %d certificate(s) for %s.\n", n, args[0])
			return nil
		})
}

func certsExportCommand() *command {
	var out string
	cmd := cacheCommand("export", "export ADDR [--out FILE]", "write the certificates stored for an address as PEM",
		`Writes every certificate stored for an address, newest first, as PEM.`,
		"  smimeproxy certs export bob@example.org > bob.pem", 1,
		func(e *env, cc *certcache.Cache, args []string) error {
			certs, err := cc.Export(args[0])
			if err != nil {
				return err
			}
			return e.writeOutput(out, certPEM(certs...), 0o644, false)
		})
	register := cmd.flags
	cmd.flags = func(fs *flag.FlagSet) {
		register(fs)
		fs.StringVar(&out, "out", "", "write to `FILE` instead of standard output")
	}
	return cmd
}

func trustCommand() *command {
	return &command{
		name:  "trust",
		short: "manage the root CAs you trust, as in a mail client's Authorities list",
		help: `Trust anchors are the root CAs whose certificates you accept for signatures and
encryption, beside the system's roots (unless trust.system_roots is false).`,
		subs: []*command{
			cacheCommand("add", "add FILE", "trust the root CA certificate in a file",
				`Makes each self-signed root certificate in the file a trust anchor. Check its
fingerprint with the CA first.`,
				"  smimeproxy trust add company-root.pem", 1,
				func(e *env, cc *certcache.Cache, args []string) error {
					data, err := e.readInput(args)
					if err != nil {
						return err
					}
					certs, err := certfile.Parse(data)
					if err != nil {
						return err
					}
					for _, cert := range certs {
						if err := cc.Trust(cert); err != nil {
							return fmt.Errorf("trust %q: %w", cert.Subject.CommonName, err)
						}
						fmt.Fprintf(e.stdout, "Trusted %q, fingerprint %s.\n", cert.Subject.CommonName, certcache.Fingerprint(cert))
					}
					return nil
				}),
			cacheCommand("list", "list", "list the trust anchors", "Lists the root CAs added with 'trust add'.",
				"  smimeproxy trust list", 0,
				func(e *env, cc *certcache.Cache, _ []string) error {
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "SUBJECT\tNOT AFTER\tFINGERPRINT")
					for _, a := range cc.Anchors() {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Subject, a.NotAfter.Format(time.DateOnly), certcache.Fingerprint(a))
					}
					return tw.Flush()
				}),
			cacheCommand("remove", "remove FINGERPRINT", "stop trusting a root CA",
				"Removes a trust anchor by its SHA-256 fingerprint, as 'trust list' shows it.",
				"  smimeproxy trust remove 87d1dfcc...782b89", 1,
				func(e *env, cc *certcache.Cache, args []string) error {
					if err := cc.Untrust(args[0]); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "No longer trusting %s.\n", args[0])
					return nil
				}),
		},
	}
}
