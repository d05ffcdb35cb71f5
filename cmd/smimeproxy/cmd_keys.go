package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/certfile"
	"smimeproxy/config"
	"smimeproxy/keystore"
)

func csrCommand() *command {
	var (
		sf                      storeFlags
		email, keyType, name, o string
		force                   bool
	)
	return &command{
		name:  "csr",
		usage: "csr --email ADDR [--key-type TYPE] [--name \"Full Name\"] --out FILE.csr",
		short: "make a key pair and a certificate request (CSR) for your CA",
		help: `Generates a private key for an email address, stores it in the keystore
(encrypted under the keystore passphrase; the keystore is created on first
use) and writes a PKCS #10 certificate request to send to a certificate
authority. The key stays pending until 'smimeproxy import' joins the
certificate the CA issues to it.`,
		examples: `  smimeproxy csr --email alice@example.com --name "Alice Liddell" --out alice.csr
  smimeproxy csr --email alice@example.com --key-type ecdsa-p256 --out alice-ec.csr`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&email, "email", "", "the email `ADDR` the certificate is for (required)")
			fs.StringVar(&keyType, "key-type", string(keystore.DefaultKeyType), "the `TYPE` of key: "+keyTypeList())
			fs.StringVar(&name, "name", "", "a common `NAME` for the subject, usually your full name")
			fs.StringVar(&o, "out", "", "write the request (PEM) to `FILE`; - for standard output (required)")
			fs.BoolVar(&force, "force", false, "overwrite --out if it exists")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if email == "" {
				return usagef("--email is required")
			}
			if o == "" {
				return usagef("--out is required")
			}
			kt, err := keystore.ParseKeyType(keyType)
			if err != nil {
				return usagef("invalid value %q for --key-type; options are %s", keyType, keyTypeList())
			}
			_, ks, err := sf.open(e, true, true)
			if err != nil {
				return err
			}
			der, info, err := ks.NewCSR(keystore.CSRRequest{Email: email, KeyType: kt, CommonName: name})
			if err != nil {
				return err
			}
			if err := e.writeOutput(o, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644, force); err != nil {
				return fmt.Errorf("write the request: %w", err)
			}
			fmt.Fprintf(e.stderr, "Generated the %s key %s for %s (pending).\n", info.KeyType, info.KeyID, info.Email)
			if o != "-" {
				fmt.Fprintf(e.stderr, "Wrote the certificate request %s. Send it to your CA, then run: smimeproxy import CERTIFICATE-FILE\n", o)
			}
			return nil
		},
	}
}

func keyTypeList() string {
	names := make([]string, 0, len(keystore.KeyTypes()))
	for _, k := range keystore.KeyTypes() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

func importCommand() *command {
	var (
		sf       storeFlags
		password string
	)
	return &command{
		name:    "import",
		usage:   "import FILE [--password-file FILE]",
		maxArgs: 1,
		short:   "import what your CA issued: a certificate, a chain, or a .p12",
		help: `Imports a certificate (PEM or DER), a chain (PEM, or PKCS #7 .p7b/.p7c), or a
PKCS #12 file (.p12/.pfx) with its private key. A certificate for a key in
the keystore joins that key and makes it active; intermediate CA certificates
are kept to build paths and are never trusted as roots; a certificate whose
key the keystore does not hold is someone else's and goes to the certificate
cache. Root certificates are reported, not trusted: use 'smimeproxy trust add'.
What was done with each certificate is printed.`,
		examples: `  smimeproxy import alice.crt
  smimeproxy import alice-chain.p7b
  smimeproxy import alice.p12 --password-file p12-password.txt`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&password, "password-file", "", "read the .p12 password from `FILE` (default: ask)")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name one file to import")
			}
			data, err := e.readInput(args)
			if err != nil {
				return err
			}
			c, err := sf.load(e)
			if err != nil {
				return err
			}
			if isPKCS12(args[0], data) {
				return e.importPKCS12(c, data, password)
			}
			certs, err := certfile.Parse(data)
			if err != nil {
				return err
			}
			ks, err := e.openKeystore(c, false)
			if err != nil && !errors.Is(err, keystore.ErrNoKeystore) {
				return err
			}
			var res *keystore.ImportResult
			if ks != nil {
				res, err = ks.ImportCertificates(certs)
				if errors.Is(err, keystore.ErrLocked) {
					// A certificate joins one of our keys, whose file's MAC needs the passphrase.
					if err = e.unlock(c, ks); err == nil {
						res, err = ks.ImportCertificates(certs)
					}
				}
				if err != nil {
					return err
				}
			} else {
				res = sortWithoutKeystore(certs)
			}
			return e.fileImport(c, res)
		},
	}
}

// isPKCS12 tells a .p12 from certificate files by name, armour or, for DER,
// by not being a certificate list.
func isPKCS12(name string, data []byte) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".p12", ".pfx":
		return true
	}
	if bytes.Contains(data, []byte("-----BEGIN PKCS12-----")) {
		return true
	}
	_, err := certfile.Parse(data)
	return errors.Is(err, certfile.ErrNoCertificate) && !bytes.Contains(data, []byte("-----BEGIN"))
}

func (e *env) importPKCS12(c *config.Config, data []byte, passwordFile string) error {
	ks, err := e.openKeystore(c, true)
	if err != nil {
		return err
	}
	if err := e.unlock(c, ks); err != nil {
		return err
	}
	pw, err := e.existingSecret(passwordFile, "password of the .p12 file", "password-file")
	if err != nil {
		return err
	}
	res, err := ks.ImportPKCS12(data, string(pw))
	if err != nil {
		return err
	}
	return e.fileImport(c, res)
}

// sortWithoutKeystore sorts certificates the way ImportCertificates does when
// there is no keystore: none of them can be ours.
func sortWithoutKeystore(certs []*x509.Certificate) *keystore.ImportResult {
	res := &keystore.ImportResult{}
	for _, cert := range certs {
		switch {
		case !cert.IsCA:
			res.Others = append(res.Others, cert)
		case isSelfSigned(cert):
			res.Roots = append(res.Roots, cert)
		default:
			res.UnusedCAs = append(res.UnusedCAs, cert)
		}
	}
	return res
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// fileImport sends what the keystore did not keep to the certificate cache
// and says where every certificate went.
func (e *env) fileImport(c *config.Config, res *keystore.ImportResult) error {
	w := e.stdout
	for _, j := range res.Joined {
		verb := "Joined"
		if !j.New {
			verb = "Already had"
		}
		fmt.Fprintf(w, "%s the certificate for %s (%s, valid until %s) with key %s.\n",
			verb, certAddress(j.Cert), j.Cert.Subject.CommonName, j.Cert.NotAfter.Format(time.DateOnly), j.KeyID)
	}
	for _, ca := range res.Intermediates {
		fmt.Fprintf(w, "Stored the intermediate CA %q to complete the chain (never trusted as a root).\n", ca.Subject.CommonName)
	}
	needCache := len(res.Others)+len(res.Intermediates)+len(res.UnusedCAs) > 0
	if needCache {
		cc, err := e.openCertCache(c)
		if err != nil {
			return err
		}
		for _, cert := range res.Others {
			if _, err := cc.Add(cert, nil); err != nil {
				return fmt.Errorf("add the certificate for %s to the certificate cache: %w", certAddress(cert), err)
			}
			fmt.Fprintf(w, "The certificate for %s is not for a key in the keystore: added it to the certificate cache as someone else's.\n", certAddress(cert))
		}
		cas := append(append([]*x509.Certificate{}, res.Intermediates...), res.UnusedCAs...)
		if _, err := cc.AddIntermediates(cas...); err != nil {
			return fmt.Errorf("add intermediates to the certificate cache: %w", err)
		}
		for _, ca := range res.UnusedCAs {
			fmt.Fprintf(w, "Stored the CA %q as an intermediate for other people's certificates (never trusted as a root).\n", ca.Subject.CommonName)
		}
	}
	for _, root := range res.Roots {
		fmt.Fprintf(w, "Did not trust the root CA %q (fingerprint %s); to trust it, run: smimeproxy trust add FILE\n",
			root.Subject.CommonName, certcache.Fingerprint(root))
	}
	for _, warn := range res.Warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", warn)
	}
	if len(res.Joined)+len(res.Others)+len(res.Intermediates)+len(res.UnusedCAs)+len(res.Roots) == 0 {
		return errors.New("nothing imported")
	}
	return nil
}

// certAddress is the first email address a certificate names.
func certAddress(c *x509.Certificate) string {
	if len(c.EmailAddresses) > 0 {
		return c.EmailAddresses[0]
	}
	for _, n := range c.Subject.Names {
		if n.Type.Equal([]int{1, 2, 840, 113549, 1, 9, 1}) {
			if s, ok := n.Value.(string); ok {
				return s
			}
		}
	}
	return c.Subject.CommonName
}

func backupCommand() *command {
	var (
		sf                   storeFlags
		email, out, password string
		legacy, force        bool
		iterations           int
	)
	return &command{
		name:  "backup",
		usage: "backup --email ADDR --out FILE.p12 [--password-file FILE] [--legacy] [--iterations N]",
		short: "back up a key and its certificates to a password-protected .p12",
		help: `Writes the key that signs for an address, its certificates and chain to a
PKCS #12 file protected by a backup password (asked twice without echo
unless --password-file is given). The file uses AES-256 and PBKDF2-SHA-256
with 600,000 iterations and a SHA-256 MAC with as many, as Thunderbird and
Firefox (NSS) write; OpenSSL 1.1.1+, NSS, and current Windows and macOS
import it. --legacy uses 3DES and SHA-1 with 2,048 iterations for older
systems (Windows 7, old macOS and Android). A machine too small for 600,000
iterations may ask for fewer with --iterations (at least 2,048): each one
less makes the password cheaper to guess. Keep the file and its password
apart.`,
		examples: `  smimeproxy backup --email alice@example.com --out alice.p12
  smimeproxy backup --email alice@example.com --out alice-legacy.p12 --legacy --password-file pw.txt`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&email, "email", "", "the `ADDR` whose key to back up (required)")
			fs.StringVar(&out, "out", "", "write the .p12 to `FILE` (required)")
			fs.StringVar(&password, "password-file", "", "read the backup password from `FILE` (default: ask twice)")
			fs.BoolVar(&legacy, "legacy", false, "use 3DES and SHA-1 for old clients instead of AES-256")
			fs.IntVar(&iterations, "iterations", 0, fmt.Sprintf("derive the keys with `N` iterations, at least %d (default %d, %d with --legacy)",
				keystore.MinBackupIterations, keystore.DefaultBackupIterations, keystore.LegacyBackupIterations))
			fs.BoolVar(&force, "force", false, "overwrite --out if it exists")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if email == "" || out == "" {
				return usagef("--email and --out are required")
			}
			if iterations != 0 && iterations < keystore.MinBackupIterations {
				return usagef("invalid value %d for --iterations; use at least %d", iterations, keystore.MinBackupIterations)
			}
			_, ks, err := sf.open(e, false, true)
			if err != nil {
				return err
			}
			pw, err := e.newSecret(password, "backup password", "password-file")
			if err != nil {
				return err
			}
			if iterations != 0 && iterations < keystore.DefaultBackupIterations {
				fmt.Fprintf(e.stderr, "warning: %d iterations make the backup password cheaper to guess than the %d Thunderbird uses; "+
					"choose a long random password\n", iterations, keystore.DefaultBackupIterations)
			}
			p12, err := ks.Backup(email, string(pw), &keystore.BackupOptions{Legacy: legacy, Iterations: iterations})
			if err != nil {
				return err
			}
			if err := e.writeOutput(out, p12, 0o600, force); err != nil {
				return fmt.Errorf("write the backup: %w", err)
			}
			fmt.Fprintf(e.stdout, "Wrote %s (mode 0600): the key, certificates and chain for %s.\n", out, email)
			return nil
		},
	}
}

func identitiesCommand() *command {
	var sf storeFlags
	return &command{
		name:  "identities",
		usage: "identities",
		short: "list the keys in the keystore with their status and expiry",
		help: `Lists every key in the keystore: its address, status (pending, active,
expiring within 30 days, expired, not-yet-valid, broken), key type, id,
the end of its latest certificate, and that certificate's revocation status
(good, revoked, unknown) with when it was last checked: serve checks at
start and daily, 'certs check' now; "-" when never checked. Needs no
passphrase; when one is at hand (--passphrase-file, $SMIMEPROXY_PASSPHRASE or
the configured passphrase_file; it never asks) it also checks that each key
opens and that no one changed its file: a key that fails is listed as broken,
with the reason on standard error.`,
		examples: `  smimeproxy identities
  smimeproxy identities --keystore /var/lib/smimeproxy/keystore`,
		flags: sf.register,
		run: func(ctx context.Context, e *env, args []string) error {
			c, ks, err := sf.open(e, false, false)
			if err != nil {
				return err
			}
			pass, ok, err := e.passphraseAtHand(c.Keystore.PassphraseFile)
			if err != nil {
				return err
			}
			if ok {
				if err := ks.Unlock(pass); err != nil {
					return err
				}
				noteUpgrade(e, ks)
			}
			ids := ks.Identities()
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			printIdentities(e.stdout, ids, cc, time.Now())
			for _, id := range ids {
				if id.Status == keystore.StatusBroken {
					fmt.Fprintf(e.stderr, "broken: %s\n", id.Problem)
				}
			}
			if !ok {
				fmt.Fprintf(e.stderr, "Keys not checked: with the keystore passphrase (--passphrase-file or $%s) this also checks that each key opens.\n", passphraseEnv)
			}
			return nil
		},
	}
}

// printIdentities lists the keys, with the revocation status of each
// one's newest certificate as last checked (by serve, or certs check).
func printIdentities(w io.Writer, ids []keystore.IdentityInfo, cc *certcache.Cache, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSTATUS\tKEY\tKEY ID\tNOT AFTER\tDAYS LEFT\tREVOCATION\tCHECKED")
	for _, id := range ids {
		notAfter, days, revoc, checked := "-", "-", "-", "-"
		if !id.NotAfter.IsZero() {
			notAfter = id.NotAfter.Format(time.DateOnly)
			days = fmt.Sprint(int(id.NotAfter.Sub(now).Hours() / 24))
		}
		if len(id.Certs) > 0 {
			if s, ok := cc.Status(certcache.Fingerprint(id.Certs[0])); ok {
				revoc, checked = s.State, s.Checked.Local().Format("2006-01-02 15:04")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(id.Emails, ","), id.Status, id.KeyType, id.KeyID, notAfter, days, revoc, checked)
	}
	tw.Flush()
}

func passphraseCommand() *command {
	var sf storeFlags
	var newFile string
	return &command{
		name:  "passphrase",
		usage: "passphrase [--new-passphrase-file FILE]",
		short: "change the keystore passphrase",
		help: `Changes the passphrase that protects the private keys. The current one comes
from --passphrase-file, $SMIMEPROXY_PASSPHRASE or a prompt; the new one from
--new-passphrase-file or a prompt (asked twice). Only the keystore's key file
is rewritten, atomically: a crash leaves the old or the new passphrase
working. Update the service's credential afterwards.`,
		examples: `  smimeproxy passphrase
  smimeproxy passphrase --passphrase-file old.txt --new-passphrase-file new.txt`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&newFile, "new-passphrase-file", "", "read the new passphrase from `FILE` (default: ask twice)")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			c, ks, err := sf.open(e, false, false)
			if err != nil {
				return err
			}
			old, err := e.keystorePassphrase(c.Keystore.PassphraseFile)
			if err != nil {
				return err
			}
			if err := ks.Unlock(old); err != nil {
				return err
			}
			nw, err := e.newSecret(newFile, "keystore passphrase", "new-passphrase-file")
			if err != nil {
				return err
			}
			if err := ks.ChangePassphrase(old, nw); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Changed the passphrase of %s.\n", ks.Location())
			return nil
		},
	}
}
