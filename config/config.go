// Package config reads smimeproxy's YAML configuration: strict decoding over
// complete defaults, so that a typo is an error with a line number, and one
// Validate that reports every problem at once.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where serve and the admin commands look without --config.
const DefaultPath = "/etc/smimeproxy/config.yaml"

// Config is the whole configuration file.
type Config struct {
	// TLS is the certificate the listeners present to mail clients.
	TLS       TLS       `yaml:"tls"`
	SMTP      SMTP      `yaml:"smtp"`
	IMAP      IMAP      `yaml:"imap"`
	Keystore  Keystore  `yaml:"keystore"`
	CertCache CertCache `yaml:"certcache"`
	Trust     Trust     `yaml:"trust"`
	Log       Log       `yaml:"log"`

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

// SMTP is the submission proxy.
type SMTP struct {
	Listen   []Listener `yaml:"listen"`
	Upstream Upstream   `yaml:"upstream"`
	// RequireAuth refuses MAIL FROM before AUTH, so the proxy is never an
	// open relay. Default true.
	RequireAuth bool     `yaml:"require_auth"`
	Timeouts    Timeouts `yaml:"timeouts"`
}

// IMAP is the IMAP proxy.
type IMAP struct {
	Listen   []Listener `yaml:"listen"`
	Upstream Upstream   `yaml:"upstream"`
	Timeouts Timeouts   `yaml:"timeouts"`
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
	return &Config{
		SMTP: SMTP{
			Listen:      []Listener{{Addr: "127.0.0.1:1587", TLS: TLSNone}},
			Upstream:    Upstream{Addr: "localhost:587", TLS: TLSStartTLS},
			RequireAuth: true,
			Timeouts:    timeouts,
		},
		IMAP: IMAP{
			Listen:   []Listener{{Addr: "127.0.0.1:1143", TLS: TLSNone}},
			Upstream: Upstream{Addr: "localhost:143", TLS: TLSStartTLS},
			Timeouts: timeouts,
		},
		Keystore: Keystore{Dir: "/var/lib/smimeproxy/keystore"},
		Trust:    Trust{SystemRoots: true},
		Log:      Log{Level: "info", Format: "text"},
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
		&c.Keystore.Dir, &c.Keystore.PassphraseFile, &c.CertCache.Dir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
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
	if c.Keystore.Dir == "" {
		bad("keystore.dir", "must be set")
	}
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

// IsLoopback reports whether host names this machine only.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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
