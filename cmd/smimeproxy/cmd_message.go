package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"smimeproxy/certcache"
	"smimeproxy/certfile"
	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

func messageCommand() *command {
	return &command{
		name:  "message",
		short: "sign, encrypt, decrypt or verify one message, for scripts and debugging",
		help: `Each subcommand reads an RFC 5322 message from FILE, or standard input, and
writes the result to standard output (or --out), exactly as the proxy would.`,
		subs: []*command{messageSignCommand(), messageEncryptCommand(), messageDecryptCommand(), messageVerifyCommand()},
	}
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

var hashes = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

func parseHash(s string) (crypto.Hash, error) {
	h, ok := hashes[strings.ToLower(s)]
	if !ok {
		return 0, usagef("invalid value %q for --hash; options are sha256, sha384, sha512", s)
	}
	return h, nil
}

// encryptCiphers are the content ciphers a person may choose, default first.
var encryptCiphers = []cms.Cipher{cms.AES256CBC, cms.AES192CBC, cms.AES128CBC, cms.AES256GCM, cms.AES128GCM}

func cipherList() string {
	names := make([]string, len(encryptCiphers))
	for i, c := range encryptCiphers {
		names[i] = c.String()
	}
	return strings.Join(names, ", ")
}

func parseCipher(s string) (cms.Cipher, error) {
	for _, c := range encryptCiphers {
		if strings.EqualFold(c.String(), s) {
			return c, nil
		}
	}
	return "", usagef("invalid value %q for --cipher; options are %s", s, cipherList())
}

// readHeader reads a message's header fields.
func readHeader(msg []byte) (*mail.Header, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		return nil, fmt.Errorf("read the message header: %w", err)
	}
	return &mail.Header{Header: message.Header{Header: h}}, nil
}

// fromAddress is the address in a message's From field.
func fromAddress(msg []byte) (string, error) {
	h, err := readHeader(msg)
	if err != nil {
		return "", err
	}
	from, err := h.AddressList("From")
	if err != nil || len(from) == 0 {
		return "", errors.New("the message has no usable From address; name the identity with --identity ADDR")
	}
	return from[0].Address, nil
}

// signerFor returns the identity that signs as addr, from an unlocked keystore.
func signerFor(ks *keystore.Store, addr string) (*smime.Identity, error) {
	s, err := ks.Signer(addr, time.Now())
	if err != nil {
		return nil, err
	}
	return &smime.Identity{Cert: s.Cert, Key: s.Key, Chain: s.Chain, EncryptionCert: s.EncryptionCert}, nil
}

func messageSignCommand() *command {
	var (
		sf                  storeFlags
		identity, hash, out string
		opaque              bool
	)
	return &command{
		name:    "sign",
		maxArgs: 1,
		usage:   "sign [FILE] [--identity ADDR] [--opaque] [--hash sha256|sha384|sha512] [--out FILE]",
		short:   "sign a message",
		help: `Signs the message as the identity named by its From address (or --identity):
multipart/signed by default, which every client shows; --opaque wraps it in
application/pkcs7-mime instead.`,
		examples: `  smimeproxy message sign draft.eml > signed.eml
  smimeproxy message sign --identity sales@example.com --hash sha512 < draft.eml`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&identity, "identity", "", "sign as `ADDR` instead of the From address")
			fs.BoolVar(&opaque, "opaque", false, "make opaque signed-data instead of multipart/signed")
			fs.StringVar(&hash, "hash", "sha256", "the digest `ALGORITHM`: sha256, sha384 or sha512")
			fs.StringVar(&out, "out", "", "write to `FILE` instead of standard output")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			h, err := parseHash(hash)
			if err != nil {
				return err
			}
			msg, err := e.readInput(args)
			if err != nil {
				return err
			}
			_, ks, err := sf.open(e, false, true)
			if err != nil {
				return err
			}
			if identity == "" {
				if identity, err = fromAddress(msg); err != nil {
					return err
				}
			}
			id, err := signerFor(ks, identity)
			if err != nil {
				return err
			}
			signed, err := smime.Sign(msg, id, &smime.SignOptions{Opaque: opaque, Hash: h})
			if err != nil {
				return err
			}
			return e.writeOutput(out, signed, 0o644, true)
		},
	}
}

func messageEncryptCommand() *command {
	var (
		sf                    storeFlags
		identity, cipher, out string
		recipients, certFiles stringList
		noSign, oaep          bool
	)
	return &command{
		name:    "encrypt",
		maxArgs: 1,
		usage:   "encrypt [FILE] [--recipient ADDR]... [--cert FILE]... [--no-sign] [--cipher NAME] [--out FILE]",
		short:   "sign and encrypt a message to its recipients",
		help: `Encrypts the message to every address in its To and Cc fields and every
--recipient, with their certificates from the certificate cache and any
--cert file, and to the sender's own certificate, so that the sender can read
it too. It is signed first, as the From address (or --identity), unless
--no-sign. A recipient without a usable certificate is an error naming them.`,
		examples: `  smimeproxy message encrypt draft.eml > encrypted.eml
  smimeproxy message encrypt --recipient bob@example.org --cert bob.pem --cipher aes-256-gcm < draft.eml`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.Var(&recipients, "recipient", "also encrypt to `ADDR` (repeatable)")
			fs.Var(&certFiles, "cert", "use the certificates in `FILE` besides the certificate cache (repeatable)")
			fs.StringVar(&identity, "identity", "", "sign and encrypt-to-self as `ADDR` instead of the From address")
			fs.BoolVar(&noSign, "no-sign", false, "encrypt without signing")
			fs.StringVar(&cipher, "cipher", cms.AES256CBC.String(), "the content `CIPHER`: "+cipherList())
			fs.BoolVar(&oaep, "oaep", false, "use RSAES-OAEP instead of PKCS #1 v1.5 for RSA recipients")
			fs.StringVar(&out, "out", "", "write to `FILE` instead of standard output")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			ci, err := parseCipher(cipher)
			if err != nil {
				return err
			}
			msg, err := e.readInput(args)
			if err != nil {
				return err
			}
			c, ks, err := sf.open(e, false, false)
			if err != nil && !(noSign && errors.Is(err, keystore.ErrNoKeystore)) {
				return err
			}
			rcpts, err := headerRecipients(msg)
			if err != nil {
				return err
			}
			rcpts = append(rcpts, recipients...)
			if len(rcpts) == 0 {
				return usagef("the message has no To or Cc address; name recipients with --recipient ADDR")
			}
			if identity == "" {
				if identity, err = fromAddress(msg); err != nil {
					return err
				}
			}
			extra, err := readCertFiles(certFiles)
			if err != nil {
				return err
			}
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			certs, err := recipientCerts(ctx, cc, rcpts, extra)
			if err != nil {
				return err
			}
			if !noSign {
				if err := e.unlock(c, ks); err != nil {
					return err
				}
				id, err := signerFor(ks, identity)
				if err != nil {
					return err
				}
				if msg, err = smime.Sign(msg, id, nil); err != nil {
					return err
				}
			}
			if ks != nil {
				if self, err := ks.EncryptionCert(identity, time.Now()); err == nil {
					certs = append(certs, self)
				} else {
					fmt.Fprintf(e.stderr, "warning: not encrypted to yourself (%v); you will not be able to read your copy\n", err)
				}
			}
			enc, err := smime.Encrypt(msg, certs, &smime.EncryptOptions{Cipher: ci, OAEP: oaep})
			if err != nil {
				return err
			}
			return e.writeOutput(out, enc, 0o644, true)
		},
	}
}

// headerRecipients lists the addresses in To and Cc.
func headerRecipients(msg []byte) ([]string, error) {
	mh, err := readHeader(msg)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, field := range []string{"To", "Cc"} {
		list, err := mh.AddressList(field)
		if err != nil {
			return nil, fmt.Errorf("read the %s field: %w", field, err)
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

func readCertFiles(paths []string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		cs, err := certfile.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		certs = append(certs, cs...)
	}
	return certs, nil
}

// recipientCerts finds a certificate for every recipient: among extra when
// one names them, else in the cache. Every recipient without one is named in
// the error, with the reason.
func recipientCerts(ctx context.Context, cc *certcache.Cache, rcpts []string, extra []*x509.Certificate) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	var missing []string
	for _, r := range rcpts {
		if c := certNaming(extra, r); c != nil {
			certs = append(certs, c)
			continue
		}
		ent, err := cc.Lookup(ctx, r)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", r, err))
			continue
		}
		certs = append(certs, ent.Cert)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no usable certificate for %s; import one with 'smimeproxy certs import FILE' or pass --cert FILE", strings.Join(missing, "; "))
	}
	return certs, nil
}

func certNaming(certs []*x509.Certificate, addr string) *x509.Certificate {
	for _, c := range certs {
		for _, a := range c.EmailAddresses {
			if strings.EqualFold(a, addr) {
				return c
			}
		}
	}
	return nil
}

// verifyOptions trusts what the certificate cache trusts.
func verifyOptions(c *config.Config, cc *certcache.Cache) smime.VerifyOptions {
	return smime.VerifyOptions{Roots: cc.Roots(), Intermediates: cc.Intermediates(), AllowSHA1: c.Trust.AllowSHA1}
}

func messageDecryptCommand() *command {
	var (
		sf            storeFlags
		identity, out string
	)
	return &command{
		name:    "decrypt",
		maxArgs: 1,
		usage:   "decrypt [FILE] [--identity ADDR] [--out FILE]",
		short:   "decrypt a message and verify the signatures inside",
		help: `Decrypts the message with the keys of --identity, or of every identity in the
keystore, verifies any signature inside, and writes the message as the IMAP
proxy would serve it, with an Authentication-Results field. What was found is
printed on standard error. Exits 1 when the message could not be decrypted.`,
		examples: `  smimeproxy message decrypt encrypted.eml
  smimeproxy message decrypt --identity bob@example.org --out plain.eml < encrypted.eml`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.StringVar(&identity, "identity", "", "decrypt with the keys of `ADDR` only")
			fs.StringVar(&out, "out", "", "write to `FILE` instead of standard output")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			msg, err := e.readInput(args)
			if err != nil {
				return err
			}
			c, ks, err := sf.open(e, false, true)
			if err != nil {
				return err
			}
			addrs := ks.Emails()
			if identity != "" {
				addrs = []string{identity}
			}
			var keys []smime.KeyPair
			for _, a := range addrs {
				kps, err := ks.DecryptionKeys(a)
				if err != nil && identity != "" {
					return err
				}
				for _, kp := range kps {
					keys = append(keys, smime.KeyPair{Cert: kp.Cert, Key: kp.Key})
				}
			}
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			o, err := smime.Open(msg, &smime.OpenOptions{Keys: keys, Verify: verifyOptions(c, cc)})
			if err != nil {
				return err
			}
			if err := checkRevocation(ctx, e, c, cc, o.Signatures); err != nil {
				return err
			}
			report(e, o)
			if !o.Encrypted {
				return errors.New("the message is not encrypted")
			}
			if !o.Decrypted {
				return fmt.Errorf("could not decrypt: %v", o.DecryptErr)
			}
			return e.writeOutput(out, withAuthResults(o), 0o644, true)
		},
	}
}

// withAuthResults prepends the Authentication-Results field to the opened message.
func withAuthResults(o *smime.Opened) []byte {
	field := "Authentication-Results: " + o.AuthenticationResults(hostname()) + "\r\n"
	return append([]byte(field), o.Message...)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// report prints what Open found on standard error.
func report(e *env, o *smime.Opened) {
	if o.Limit != nil {
		fmt.Fprintf(e.stderr, "not opened past a limit: %s\n", o.Limit.Reason())
	}
	if o.Encrypted {
		state := "decrypted"
		if !o.Decrypted {
			state = "not decrypted: " + o.DecryptErr.Error()
		}
		cipher := o.Cipher.String()
		switch {
		case cipher == "":
			cipher = "cipher unknown" // the envelope did not parse
		case !o.Cipher.Supported():
			cipher += ", not supported"
		}
		fmt.Fprintf(e.stderr, "encrypted (%s, %d recipient(s)): %s\n", cipher, len(o.Recipients), state)
	}
	for _, s := range o.Signatures {
		signer := "unknown signer"
		if s.Signer != nil {
			signer = fmt.Sprintf("%s (%s)", certAddress(s.Signer), s.Signer.Subject)
		}
		fmt.Fprintf(e.stderr, "signature: %s, by %s", s.Status, signer)
		if !s.SigningTime.IsZero() {
			fmt.Fprintf(e.stderr, ", signed %s", s.SigningTime.Format(time.DateTime))
		}
		if s.Reason != "" {
			fmt.Fprintf(e.stderr, ": %s", s.Reason)
		}
		fmt.Fprintln(e.stderr)
	}
}

func messageVerifyCommand() *command {
	var (
		sf      storeFlags
		harvest bool
	)
	return &command{
		name:    "verify",
		maxArgs: 1,
		usage:   "verify [FILE] [--harvest]",
		short:   "verify a signed message",
		help: `Verifies every signature in the message against the trust anchors and system
roots, asks whether each signer's certificate was revoked (as configured in
revocation), and prints the result for each. Exits 0 only when the message is
signed and every signature is valid. --harvest adds the signers' certificates
of valid signatures to the certificate cache, as the IMAP proxy does, so that
mail to them can be encrypted.`,
		examples: `  smimeproxy message verify signed.eml
  smimeproxy message verify --harvest < signed.eml`,
		flags: func(fs *flag.FlagSet) {
			sf.register(fs)
			fs.BoolVar(&harvest, "harvest", false, "add the certificates of valid signers to the certificate cache")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			msg, err := e.readInput(args)
			if err != nil {
				return err
			}
			c, err := sf.load(e)
			if err != nil {
				return err
			}
			cc, err := e.openCertCache(c)
			if err != nil {
				return err
			}
			opts := verifyOptions(c, cc)
			sigs, err := smime.Verify(msg, &opts)
			if err != nil {
				return err
			}
			if err := checkRevocation(ctx, e, c, cc, sigs); err != nil {
				return err
			}
			report(e, &smime.Opened{Signatures: sigs})
			if len(sigs) == 0 {
				return errors.New("the message is not signed")
			}
			bad := 0
			for _, s := range sigs {
				if s.Status != smime.StatusValid {
					bad++
					continue
				}
				if harvest {
					if err := harvestSignature(e, cc, s); err != nil {
						return err
					}
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d signature(s) not valid", bad, len(sigs))
			}
			fmt.Fprintln(e.stdout, "valid")
			return nil
		},
	}
}

// checkRevocation asks whether the signers of valid signatures were
// revoked, as the IMAP proxy does, and marks those that were.
func checkRevocation(ctx context.Context, e *env, c *config.Config, cc *certcache.Cache, sigs []*smime.Signature) error {
	x, err := newCertChecker(c, cc, newLogger(c.Log, e.stderr), nil)
	if err != nil {
		return err
	}
	x.CheckSignatures(ctx, sigs)
	return nil
}

// harvestSignature stores the certificates of a valid signature's signer.
func harvestSignature(e *env, cc *certcache.Cache, s *smime.Signature) error {
	if err := cc.Harvest(s.Signer, s.EncryptionCert, s.SigningTime, s.Capabilities); err != nil {
		return fmt.Errorf("harvest the certificate of %s: %w", certAddress(s.Signer), err)
	}
	fmt.Fprintf(e.stdout, "Harvested the certificate of %s.\n", certAddress(s.Signer))
	return nil
}
