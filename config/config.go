// Package config reads smimeproxy's YAML configuration: strict decoding over
// complete defaults, so that a typo is an error with a line number, and one
// Validate that reports every problem at once.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"smimeproxy/internal/mailaddr"
)

// DefaultPath is where serve and the admin commands look without --config.
const DefaultPath = "/etc/smimeproxy/config.yaml"

// Config is the whole configuration file.
type Config struct {
	// ServerName names this proxy in the SMTP greeting and as the authserv-id
	// of the Authentication-Results fields it adds. Default: the host name.
	ServerName string `yaml:"server_name"`
	// TLS is the certificate the listeners present to mail clients.
	TLS       TLS       `yaml:"tls"`
	SMTP      SMTP      `yaml:"smtp"`
	IMAP      IMAP      `yaml:"imap"`
	Keystore  Keystore  `yaml:"keystore"`
	CertCache CertCache `yaml:"certcache"`
	Storage   Storage   `yaml:"storage"`
	Trust     Trust     `yaml:"trust"`
	Policy    Policy    `yaml:"policy"`
	Metrics   Metrics   `yaml:"metrics"`
	Log       Log       `yaml:"log"`
	// ShutdownTimeout bounds how long SIGTERM waits for messages being
	// submitted to finish before closing every connection. Default 60s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// MemoryBudgetMB bounds the memory, in MiB, that both proxies together
	// may hold messages in while they sign, encrypt or open them; a message
	// that does not fit now gets a temporary failure. Default 512: room for
	// one message of 64 MiB (the most a mail server commonly accepts) being
	// signed and encrypted, or many ordinary ones at once.
	MemoryBudgetMB int `yaml:"memory_budget_mb"`
	// Directories are LDAP directories asked, in order, for the certificate
	// of a recipient the certificate cache holds none usable for. Default
	// none.
	Directories []Directory `yaml:"directories"`
	// Revocation says how certificates are checked for revocation (OCSP,
	// CRLs) before encrypting to them and when verifying signatures.
	Revocation Revocation `yaml:"revocation"`

	// path is the file the configuration was read from; empty for Default.
	path string
}

// TLS names the listeners' certificate and key (PEM). Both are re-read on SIGHUP.
type TLS struct {
	CertFile string `yaml:"cert_file"` // default "": no TLS listener can start
	KeyFile  string `yaml:"key_file"`  // default ""
}

// TLSMode is how a connection is protected.
type TLSMode string

const (
	TLSStartTLS TLSMode = "starttls" // plain connection upgraded with STARTTLS (RFC 3207, RFC 3501)
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (RFC 8314)
	TLSNone     TLSMode = "none"     // no TLS: loopback only, unless insecure_plaintext is set
)

// Listener is one address the proxy accepts mail clients on.
type Listener struct {
	Addr string  `yaml:"addr"` // host:port
	TLS  TLSMode `yaml:"tls"`  // starttls, implicit or none
	// InsecurePlaintext allows tls: none on an address other than loopback,
	// where passwords and mail would cross the network in the clear.
	// Default false.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// ProxyProtocol expects every connection to begin with a PROXY protocol
	// v2 header (HAProxy's send-proxy-v2), whose client address the logs
	// and limits then use; a connection without one is closed. Only for a
	// listener that the load balancer alone can reach. Default false.
	ProxyProtocol bool `yaml:"proxy_protocol"`
}

// Upstream is the real server the proxy relays to.
type Upstream struct {
	Addr string  `yaml:"addr"` // host:port
	TLS  TLSMode `yaml:"tls"`  // starttls, implicit or none; a missing STARTTLS is an error, never a downgrade
	// CAFile verifies the upstream's certificate against these roots instead
	// of the system roots. Default "".
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the upstream's certificate. Default:
	// the host part of addr.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any upstream certificate. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// InsecurePlaintext allows tls: none to an address other than loopback.
	// Default false.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
}

// Timeouts bound every wait on a peer.
type Timeouts struct {
	Connect Duration `yaml:"connect"` // dialing and greeting the upstream; default 30s
	Command Duration `yaml:"command"` // one command and its reply; default 5m
	Data    Duration `yaml:"data"`    // a whole message body; default 12m
}

// Limits bound the connections a proxy accepts, and how long a connection
// may stay before it logs in. Each protocol has its own; see Default.
type Limits struct {
	// MaxConnections caps the connections open at once; a new one beyond it
	// is refused. 0: no cap. Default 100 for SMTP (Postfix's process limit),
	// 1000 for IMAP (Dovecot's client limit), where clients stay connected.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP caps the connections open at once from one client
	// address. 0: no cap. Default 50 for SMTP (Postfix's
	// smtpd_client_connection_count_limit), 100 for IMAP (ten users behind
	// one address with ten connections each, Dovecot's per-user limit).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// PreAuthIdle is how long a connection that has not logged in may send
	// nothing. 0: no limit. Default 1m: a client greets, starts TLS and logs
	// in within a second.
	PreAuthIdle Duration `yaml:"preauth_idle"`
	// PreAuthTime is how long a connection may stay without logging in,
	// however busy it keeps (NOOP, a byte at a time). 0: no limit. Default
	// 3m, as Dovecot gives a login.
	PreAuthTime Duration `yaml:"preauth_time"`
}

// SMTP is the submission proxy.
type SMTP struct {
	Listen   []Listener `yaml:"listen"`
	Upstream Upstream   `yaml:"upstream"`
	// Limits on connections; with require_auth: false, a session counts as
	// logged in from its first accepted MAIL FROM.
	Limits Limits `yaml:"limits"`
	// RequireAuth refuses MAIL FROM before AUTH, so the proxy is never an
	// open relay. Default true.
	RequireAuth bool     `yaml:"require_auth"`
	Timeouts    Timeouts `yaml:"timeouts"`
	// TrustTokenNames takes the user name an OAUTHBEARER or XOAUTH2 client
	// states (a= or user=) as who they are, for signing with their key. Set
	// it only when the upstream checks that name against the token, as
	// Gmail does. Default false: after a token login mail is relayed, but no
	// key is used, so a message policy would sign is refused.
	TrustTokenNames bool `yaml:"trust_token_names"`
}

// IMAP is the IMAP proxy.
type IMAP struct {
	Listen   []Listener `yaml:"listen"`
	Upstream Upstream   `yaml:"upstream"`
	Limits   Limits     `yaml:"limits"`
	Timeouts Timeouts   `yaml:"timeouts"`
	// CacheMB bounds the memory that keeps decrypted messages between a
	// client's FETCH commands, in MiB; 0 turns the cache off. Default 256.
	CacheMB int `yaml:"cache_mb"`
	// MaxMessageMB is the largest S/MIME message the proxy opens, in MiB; a
	// larger one is served as it is, with a verdict field saying why.
	// Default 64.
	MaxMessageMB int `yaml:"max_message_mb"`
	// TrustTokenNames says the upstream checks that an OAUTHBEARER or
	// XOAUTH2 token belongs to the user name the client gives with it.
	// Without it such a login is relayed but opens nothing with anyone's
	// keys: the name is only the client's word. Default false.
	TrustTokenNames bool `yaml:"trust_token_names"`
	// Verdict shows a person what the proxy found where every client shows
	// it: before the Subject, and optionally at the top of the message.
	Verdict Verdict `yaml:"verdict"`
	// Sent keeps the copy a client stores of what it sent as protected as
	// what was sent: signed and encrypted to the user as the SMTP policy
	// would have sent it.
	Sent Copies `yaml:"sent"`
	// Drafts keeps drafts encrypted to the user.
	Drafts Copies `yaml:"drafts"`
	// Search bounds the work of a SEARCH or SORT inside S/MIME messages.
	Search Search `yaml:"search"`
}

// Copies are the mailboxes where the IMAP proxy protects what a client
// stores (APPEND) in plain text.
type Copies struct {
	// Protect turns it on. Default true.
	Protect bool `yaml:"protect"`
	// Mailboxes are names to protect besides the one the upstream marks
	// \Sent or \Drafts (RFC 6154), as the client names them. Default none.
	Mailboxes []string `yaml:"mailboxes"`
}

// Search bounds how far the IMAP proxy looks inside S/MIME messages for a
// client's SEARCH or SORT with text keys (BODY, TEXT, SUBJECT, FROM, ...);
// messages past a bound keep the upstream's answer, and the client is told.
type Search struct {
	// MaxMessages is how many S/MIME messages one search opens or takes
	// from the cache, newest first; 0 turns searching inside off. At most
	// 5000 (the UIDs of their answers go upstream on one line). Default
	// 1000.
	MaxMessages int `yaml:"max_messages"`
	// Timeout is how long one search may spend looking inside messages.
	// Default 20s.
	Timeout Duration `yaml:"timeout"`
}

// MaxSearchMessages is the largest imap.search.max_messages.
const MaxSearchMessages = 5000

// Verdict is what the IMAP proxy adds to the messages a person must look
// at twice. Each word is put before the Subject of messages in that state;
// an empty word adds nothing for it.
type Verdict struct {
	// Invalid: a signature that does not verify (the content or signature
	// was altered, or it cannot be read), or one by a revoked certificate.
	// Default "[Invalid signature] ".
	Invalid string `yaml:"invalid"`
	// Mismatch: a valid signature by a certificate that does not name the
	// From address. Default "[Signer is not the sender] ".
	Mismatch string `yaml:"mismatch"`
	// Untrusted: a signature whose certificate does not lead to a trust
	// anchor, has expired, or is SHA-1. Default "[Unverified signer] ".
	Untrusted string `yaml:"untrusted"`
	// Undecryptable: encrypted, and this user has no key that opens it.
	// Default "[Not decrypted] ".
	Undecryptable string `yaml:"undecryptable"`
	// Valid: a valid signature by a trusted signer. Default "".
	Valid string `yaml:"valid"`
	// Banner also puts a short text part at the top of such a message,
	// saying the same with the reason, for clients that show it. Default
	// false.
	Banner bool `yaml:"banner"`
}

// Policy says what to do with outgoing mail. Rules for users, senders and
// recipient domains override the defaults above them; the most specific wins.
type Policy struct {
	Sign    string `yaml:"sign"`    // always or never; default always
	Encrypt string `yaml:"encrypt"` // opportunistic, required or never; default opportunistic
	// ForeignFrom is what to do when the From address is not one of the
	// logged-in user's: refuse (default) or unsigned (send without signing).
	ForeignFrom string `yaml:"foreign_from"`
	// Overrides honours the subject tags [encrypt], [sign], [nosign], [plain]
	// and the X-SMIME-Policy header. Default true.
	Overrides bool `yaml:"overrides"`
	// EncryptToSelf adds the sender's own certificate to every encrypted
	// message, so that their Sent copy stays readable. Default true.
	EncryptToSelf bool `yaml:"encrypt_to_self"`
	// Cipher is the content cipher: auto (AES-256-GCM when every recipient
	// advertised it, else AES-256-CBC, which every client reads), or one of
	// aes-256-cbc, aes-128-cbc, aes-256-gcm, aes-128-gcm. Default auto.
	Cipher string `yaml:"cipher"`
	// SignFormat is detached (multipart/signed, which clients without S/MIME
	// still show) or opaque (application/pkcs7-mime signed-data, which only
	// S/MIME clients can show, but which no relay can alter unnoticed).
	// Default detached.
	SignFormat string `yaml:"sign_format"`
	// ProtectHeaders is header protection (RFC 9788): encrypted (the header
	// fields go inside the encryption, the outer Subject becomes "[...]"),
	// always (signed-only mail also carries them inside its signature) or
	// never. Default encrypted.
	ProtectHeaders string `yaml:"protect_headers"`
	// Users are per login name: more addresses they may send as and read
	// for (the login name itself, when it is an address, always counts), and
	// their own rules.
	Users map[string]UserRules `yaml:"users"`
	// Senders are rules per From address.
	Senders map[string]Rules `yaml:"senders"`
	// Domains are rules per recipient domain, such as encrypt: required for
	// a partner.
	Domains map[string]Rules `yaml:"domains"`
}

// Rules override sign, encrypt and protect_headers; empty fields inherit.
type Rules struct {
	Sign           string `yaml:"sign"`
	Encrypt        string `yaml:"encrypt"`
	ProtectHeaders string `yaml:"protect_headers"`
}

// UserRules are a user's addresses and rules.
type UserRules struct {
	Addresses []string `yaml:"addresses"`
	Rules     `yaml:",inline"`
}

// Metrics is the HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen is host:port; "" turns the listener off. Default 127.0.0.1:9464.
	Listen string `yaml:"listen"`
	// Pprof serves Go's profiler under /debug/pprof/ on the same listener,
	// for finding where the proxy spends its time. Default false: profiles
	// show function names and timings to whoever reaches the listener.
	Pprof bool `yaml:"pprof"`
}

// Keystore says where our users' keys live and how to unlock them.
type Keystore struct {
	// Dir holds the keystore. Default /var/lib/smimeproxy/keystore.
	Dir string `yaml:"dir"`
	// PassphraseFile holds the keystore passphrase, such as a systemd
	// credential. Default "": $SMIMEPROXY_PASSPHRASE, then
	// $CREDENTIALS_DIRECTORY/passphrase.
	PassphraseFile string `yaml:"passphrase_file"`
}

// CertCache says where other people's certificates are kept.
type CertCache struct {
	// Dir holds the certificate cache and the trust anchors. Default "": a
	// directory named certcache beside the keystore.
	Dir string `yaml:"dir"`
}

// Trust says which roots signatures and recipients' certificates must chain to.
type Trust struct {
	// SystemRoots adds the operating system's roots to the trust anchors added
	// with `smimeproxy trust add`. Default true.
	SystemRoots bool `yaml:"system_roots"`
	// AllowSHA1 reports SHA-1 signatures as valid instead of weak. Default false.
	AllowSHA1 bool `yaml:"allow_sha1"`
}

// Log sets the log output.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as "30s" or "5m" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads a duration such as "30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: invalid duration %q; use a positive number with a unit, such as 30s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as "30s".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default returns the complete default configuration.
func Default() *Config {
	timeouts := Timeouts{
		Connect: Duration(30 * time.Second),
		Command: Duration(5 * time.Minute),
		Data:    Duration(12 * time.Minute),
	}
	preAuthIdle, preAuthTime := Duration(time.Minute), Duration(3*time.Minute)
	return &Config{
		SMTP: SMTP{
			Listen:      []Listener{{Addr: "127.0.0.1:1587", TLS: TLSNone}},
			Upstream:    Upstream{Addr: "localhost:587", TLS: TLSStartTLS},
			Limits:      Limits{MaxConnections: 100, MaxConnectionsPerIP: 50, PreAuthIdle: preAuthIdle, PreAuthTime: preAuthTime},
			RequireAuth: true,
			Timeouts:    timeouts,
		},
		IMAP: IMAP{
			Listen:       []Listener{{Addr: "127.0.0.1:1143", TLS: TLSNone}},
			Upstream:     Upstream{Addr: "localhost:143", TLS: TLSStartTLS},
			Limits:       Limits{MaxConnections: 1000, MaxConnectionsPerIP: 100, PreAuthIdle: preAuthIdle, PreAuthTime: preAuthTime},
			Timeouts:     timeouts,
			CacheMB:      256,
			MaxMessageMB: 64,
			Sent:         Copies{Protect: true},
			Drafts:       Copies{Protect: true},
			Verdict: Verdict{
				Invalid:       "[Invalid signature] ",
				Mismatch:      "[Signer is not the sender] ",
				Untrusted:     "[Unverified signer] ",
				Undecryptable: "[Not decrypted] ",
			},
			Search: Search{MaxMessages: 1000, Timeout: Duration(20 * time.Second)},
		},
		Policy: Policy{
			Sign:           "always",
			Encrypt:        "opportunistic",
			ForeignFrom:    "refuse",
			Overrides:      true,
			EncryptToSelf:  true,
			Cipher:         "auto",
			SignFormat:     "detached",
			ProtectHeaders: "encrypted",
		},
		Metrics:         Metrics{Listen: "127.0.0.1:9464"},
		ShutdownTimeout: Duration(60 * time.Second),
		MemoryBudgetMB:  512,
		Keystore:        Keystore{Dir: "/var/lib/smimeproxy/keystore"},
		Storage:         defaultStorage(),
		Trust:           Trust{SystemRoots: true},
		Revocation:      defaultRevocation(),
		Log:             Log{Level: "info", Format: "text"},
	}
}

// Load reads the configuration file at path over the defaults and validates it.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	c.path = path
	c.resolvePaths(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults, rejecting unknown keys and wrong
// types. Relative paths stay as written; Load resolves them.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, friendlyYAMLError(err)
	}
	for i := range c.Directories {
		c.Directories[i].withDefaults()
	}
	return c, nil
}

// Path returns the file the configuration was loaded from, if any.
func (c *Config) Path() string { return c.path }

// CertCacheDir returns the certificate cache directory, beside the keystore
// unless configured.
func (c *Config) CertCacheDir() string {
	if c.CertCache.Dir != "" {
		return c.CertCache.Dir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(c.Keystore.Dir)), "certcache")
}

// resolvePaths makes relative paths relative to the configuration file's
// directory, as a person reading the file would expect.
func (c *Config) resolvePaths(base string) {
	for _, p := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile, &c.SMTP.Upstream.CAFile, &c.IMAP.Upstream.CAFile,
		&c.Keystore.Dir, &c.Keystore.PassphraseFile, &c.CertCache.Dir, &c.Storage.Postgres.PasswordFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for i := range c.Directories {
		for _, p := range []*string{&c.Directories[i].CAFile, &c.Directories[i].PasswordFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(base, *p)
			}
		}
	}
}

// Validate reports every problem in c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	needTLS := false
	for name, lns := range map[string][]Listener{"smtp": c.SMTP.Listen, "imap": c.IMAP.Listen} {
		for i, l := range lns {
			key := fmt.Sprintf("%s.listen[%d]", name, i)
			if err := checkAddr(l.Addr, l.TLS, l.InsecurePlaintext); err != nil {
				bad(key, "%v", err)
			}
			needTLS = needTLS || l.TLS != TLSNone
		}
	}
	if needTLS && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file must be set for listeners with tls: starttls or implicit")
	}
	for _, f := range []struct{ key, path string }{
		{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile},
		{"smtp.upstream.ca_file", c.SMTP.Upstream.CAFile}, {"imap.upstream.ca_file", c.IMAP.Upstream.CAFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.key, "%v", err)
		}
	}
	for name, up := range map[string]Upstream{"smtp.upstream": c.SMTP.Upstream, "imap.upstream": c.IMAP.Upstream} {
		if err := checkAddr(up.Addr, up.TLS, up.InsecurePlaintext); err != nil {
			bad(name, "%v", err)
		}
	}
	for name, t := range map[string]Timeouts{"smtp.timeouts": c.SMTP.Timeouts, "imap.timeouts": c.IMAP.Timeouts} {
		if t.Connect <= 0 || t.Command <= 0 || t.Data <= 0 {
			bad(name, "connect, command and data must all be positive")
		}
	}
	for name, l := range map[string]Limits{"smtp.limits": c.SMTP.Limits, "imap.limits": c.IMAP.Limits} {
		if l.MaxConnections < 0 || l.MaxConnectionsPerIP < 0 {
			bad(name, "max_connections and max_connections_per_ip must not be negative (0: no cap)")
		}
	}
	if c.Keystore.Dir == "" {
		bad("keystore.dir", "must be set")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	if c.MemoryBudgetMB <= 0 {
		bad("memory_budget_mb", "must be positive")
	}
	if c.IMAP.MaxMessageMB <= 0 {
		bad("imap.max_message_mb", "must be positive")
	}
	for key, w := range map[string]string{"invalid": c.IMAP.Verdict.Invalid, "mismatch": c.IMAP.Verdict.Mismatch,
		"untrusted": c.IMAP.Verdict.Untrusted, "undecryptable": c.IMAP.Verdict.Undecryptable, "valid": c.IMAP.Verdict.Valid} {
		if strings.ContainsFunc(w, func(r rune) bool { return r < ' ' || r == 0x7f }) || !utf8.ValidString(w) {
			bad("imap.verdict."+key, "must be text on one line, without control characters")
		}
	}
	if c.IMAP.CacheMB < 0 {
		bad("imap.cache_mb", "must not be negative")
	}
	if n := c.IMAP.Search.MaxMessages; n < 0 || n > MaxSearchMessages {
		bad("imap.search.max_messages", "%d is out of range; use 0 (off) to %d", n, MaxSearchMessages)
	}
	if c.IMAP.Search.Timeout <= 0 {
		bad("imap.search.timeout", "must be positive")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "invalid address %q; use host:port, such as 127.0.0.1:9464", c.Metrics.Listen)
		}
	}
	c.Policy.validate(bad)
	c.Storage.validate(bad)
	c.validateCerts(bad)
	if f := c.Keystore.PassphraseFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			bad("keystore.passphrase_file", "%v", err)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "invalid value %q; options are debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "invalid value %q; options are text, json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// validate checks every rule's values.
func (p *Policy) validate(bad func(key, format string, args ...any)) {
	oneOf := func(key, v string, empty bool, options ...string) {
		if (v == "" && empty) || slices.Contains(options, v) {
			return
		}
		bad(key, "invalid value %q; options are %s", v, strings.Join(options, ", "))
	}
	rules := func(key string, r Rules, empty bool) {
		oneOf(key+".sign", r.Sign, empty, "always", "never")
		oneOf(key+".encrypt", r.Encrypt, empty, "opportunistic", "required", "never")
		oneOf(key+".protect_headers", r.ProtectHeaders, empty, "encrypted", "always", "never")
	}
	rules("policy", Rules{Sign: p.Sign, Encrypt: p.Encrypt, ProtectHeaders: p.ProtectHeaders}, false)
	oneOf("policy.foreign_from", p.ForeignFrom, false, "refuse", "unsigned")
	oneOf("policy.cipher", p.Cipher, false, "auto", "aes-256-cbc", "aes-128-cbc", "aes-256-gcm", "aes-128-gcm")
	oneOf("policy.sign_format", p.SignFormat, false, "detached", "opaque")
	for name, u := range p.Users {
		rules("policy.users."+name, u.Rules, true)
		for _, a := range u.Addresses {
			if !strings.Contains(a, "@") {
				bad("policy.users."+name+".addresses", "%q is not an email address", a)
			}
		}
	}
	for name, r := range p.Senders {
		rules("policy.senders."+name, r, true)
	}
	for name, r := range p.Domains {
		rules("policy.domains."+name, r, true)
	}
	sameName("policy.users", slices.Collect(maps.Keys(p.Users)), mailaddr.Normalize, bad)
	sameName("policy.senders", slices.Collect(maps.Keys(p.Senders)), mailaddr.Normalize, bad)
	sameName("policy.domains", slices.Collect(maps.Keys(p.Domains)), mailaddr.Domain, bad)
}

// sameName reports keys that name the same thing once normalized, as
// Example.org and example.org. do: which rule wins would be left to chance.
func sameName(key string, names []string, norm func(string) string, bad func(key, format string, args ...any)) {
	slices.Sort(names)
	seen := map[string]string{}
	for _, n := range names {
		if first, ok := seen[norm(n)]; ok {
			bad(key, "%q and %q name the same; keep one", first, n)
			continue
		}
		seen[norm(n)] = n
	}
}

// checkAddr checks a host:port and its TLS mode: plaintext is for loopback
// unless insecure says otherwise in so many words.
func checkAddr(addr string, mode TLSMode, insecure bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("invalid address %q; use host:port, such as 127.0.0.1:1587", addr)
	}
	switch mode {
	case TLSStartTLS, TLSImplicit:
		return nil
	case TLSNone:
		if !insecure && !IsLoopback(host) {
			return fmt.Errorf("tls: none on %s sends passwords and mail in the clear; use starttls or implicit, or set insecure_plaintext: true", addr)
		}
		return nil
	}
	return fmt.Errorf("invalid tls %q; options are starttls, implicit, none", mode)
}

// resolveTimeout bounds the name lookup of IsLoopback.
const resolveTimeout = 5 * time.Second

// IsLoopback reports whether host names this machine only: a loopback
// address, or a name that resolves, now, to loopback addresses and nothing
// else. A name that does not resolve is not loopback: "localhost" is only
// what the resolver says it is.
func IsLoopback(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().IsLoopback()
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return false
		}
	}
	return true
}

// friendlyYAMLError turns yaml.v3's "field x not found in type config.T" into
// words about the file rather than about Go types.
func friendlyYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if i := strings.Index(m, " not found in type "); i >= 0 {
			m = strings.Replace(m[:i], "field ", "unknown key ", 1)
		}
		msgs[i] = m
	}
	return errors.New(strings.Join(msgs, "; "))
}
