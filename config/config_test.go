package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smimeproxy/config"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsValid(t *testing.T) {
	if err := config.Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v, want nil", err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every substring must appear in the error
	}{
		{"unknown key names line and key", "keystore:\n  dir: /x\n  passprase_file: /y\n", []string{"line 3", "unknown key passprase_file"}},
		{"wrong type", "trust:\n  system_roots: maybe\n", []string{"line 2", "maybe"}},
		{"missing passphrase file", "keystore:\n  passphrase_file: /nonexistent/pass\n", []string{"keystore.passphrase_file", "/nonexistent/pass"}},
		{"sign format", "policy:\n  sign_format: clear\n", []string{"policy.sign_format", "options are detached, opaque"}},
		{"protect headers", "policy:\n  protect_headers: yes\n  domains:\n    example.org: {protect_headers: off}\n",
			[]string{"policy.protect_headers", "options are encrypted, always, never", "policy.domains.example.org.protect_headers"}},
		{"every problem at once", "log:\n  level: loud\n  format: xml\n", []string{"log.level", "options are debug, info, warn, error", "log.format"}},
		{"database URL with a password", "storage:\n  postgres: {url: \"postgres://u:secret@db/x\"}\n", []string{"storage.postgres.url", "password_file"}},
		{"database URL of another scheme", "storage:\n  postgres: {url: \"mysql://db/x\"}\n", []string{"storage.postgres.url", "postgres://USER@HOST/DATABASE"}},
		{"database URL without a database", "storage:\n  postgres: {url: \"postgres://u@db\"}\n", []string{"storage.postgres.url", "names no database"}},
		{"search bounds", "imap:\n  search: {max_messages: 5001, timeout: 0s}\n", []string{"imap.search.max_messages", "0 (off) to 5000", "imap.search.timeout"}},
		{"database timings", "storage:\n  postgres: {poll_interval: 0s, timeout: 0s}\n", []string{"storage.postgres.poll_interval", "storage.postgres.timeout"}},
		{"directory URL", "directories:\n  - {url: \"http://ldap.example.com\", base: \"dc=x\"}\n", []string{"directories[0].url", "ldaps://HOST"}},
		{"directory without a base", "directories:\n  - {url: \"ldaps://ldap.example.com\"}\n", []string{"directories[0].base", "must be set"}},
		{"directory bind DN without a password", "directories:\n  - {url: \"ldap://ldap.example.com\", base: \"dc=x\", bind_dn: \"cn=p\"}\n", []string{"directories[0]", "bind_dn and password_file go together"}},
		{"directory filter without the address", "directories:\n  - {url: \"ldaps://ldap.example.com\", base: \"dc=x\", filter: \"(mail=*)\"}\n", []string{"directories[0].filter", "{address}"}},
		{"directory key misspelt", "directories:\n  - {url: \"ldaps://ldap.example.com\", base: \"dc=x\", timout: 5s}\n", []string{"line 2", "unknown key timout"}},
		{"revocation choice", "revocation:\n  unknown: maybe\n", []string{"revocation.unknown", "options are soft-fail, hard-fail"}},
		{"OCSP responder URL", "revocation:\n  ocsp_responder: \"ldap://x\"\n", []string{"revocation.ocsp_responder", "http://HOST/PATH"}},
		{"revocation timings", "revocation:\n  timeout: 0s\n", []string{"revocation", "timeout, retry and max_age must be positive"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.yaml)
			_, err := config.Load(p)
			if err == nil {
				t.Fatalf("Load(%s) = nil error, want one mentioning %q", tc.name, tc.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("Load(%s) error %q does not name the file", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(%s) error %q, want it to mention %q", tc.name, err, w)
				}
			}
		})
	}
}

func TestRelativePathsFollowTheFile(t *testing.T) {
	p := writeConfig(t, "keystore:\n  dir: state/keystore\n")
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Dir(p)
	if want := filepath.Join(base, "state", "keystore"); c.Keystore.Dir != want {
		t.Errorf("Keystore.Dir = %q, want %q", c.Keystore.Dir, want)
	}
	if want := filepath.Join(base, "state", "certcache"); c.CertCacheDir() != want {
		t.Errorf("CertCacheDir() = %q, want %q (beside the keystore)", c.CertCacheDir(), want)
	}
}

// TestDirectoryDefaults: an entry of directories takes the defaults for
// what it leaves out, and its files are relative to the configuration.
func TestDirectoryDefaults(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ldap-password"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.yaml")
	text := "directories:\n  - url: ldaps://ldap.example.com\n    base: ou=people,dc=example,dc=com\n    bind_dn: cn=proxy,dc=example,dc=com\n    password_file: ldap-password\n"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Directories[0]
	if d.Filter != "(mail={address})" || len(d.Attributes) != 2 || d.Timeout.D() != 5*time.Second ||
		d.FoundTTL.D() != time.Hour || d.NotFoundTTL.D() != 10*time.Minute || d.PasswordFile != filepath.Join(dir, "ldap-password") {
		t.Errorf("directories[0] = %+v, want the defaults and the password file beside the configuration", d)
	}
	if r := c.Revocation; !r.OCSP || !r.CRL || r.Unknown != "soft-fail" || r.Timeout.D() != 5*time.Second {
		t.Errorf("revocation = %+v, want OCSP and CRLs on, soft-fail, 5s", r)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	c, err := config.Load(writeConfig(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Keystore.Dir != config.Default().Keystore.Dir || !c.Trust.SystemRoots {
		t.Errorf("Load(empty) = %+v, want the defaults", c)
	}
}

// TestExample loads config.example.yaml as a person would, with the files it
// names made to exist.
func TestExample(t *testing.T) {
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(config.example.yaml): %v", err)
	}
	dir := t.TempDir()
	if len(c.Directories) != 1 || c.Directories[0].Timeout.D() != 5*time.Second || c.Revocation.Unknown != "soft-fail" {
		t.Fatalf("config.example.yaml read as %+v and %+v, want one directory and the revocation defaults", c.Directories, c.Revocation)
	}
	for _, p := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile, &c.Directories[0].PasswordFile} {
		*p = filepath.Join(dir, filepath.Base(*p))
		if err := os.WriteFile(*p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config.example.yaml does not validate: %v", err)
	}
	if len(c.SMTP.Listen) != 2 || c.Policy.Domains["partner.example"].Encrypt != "required" || c.Policy.Users["bob"].Sign != "never" {
		t.Errorf("config.example.yaml read as %+v, want its listeners and rules", c)
	}
}

func TestPolicyErrors(t *testing.T) {
	p := writeConfig(t, "policy:\n  sign: sometimes\n  cipher: rc4\n  domains:\n    x.example: {encrypt: maybe}\n  users:\n    bob: {addresses: [bob]}\n")
	_, err := config.Load(p)
	for _, want := range []string{"policy.sign", "policy.cipher", "policy.domains.x.example.encrypt", `"bob" is not an email address`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load = %v, want an error mentioning %q", err, want)
		}
	}
}

// TestPolicySameName: two keys that name the same user, sender or domain
// once normalized leave which rule wins to chance, so they are an error.
func TestPolicySameName(t *testing.T) {
	p := writeConfig(t, "policy:\n  domains:\n    Example.org: {encrypt: required}\n    example.org.: {encrypt: never}\n"+
		"  senders:\n    a@b.example: {sign: never}\n    A@B.EXAMPLE: {sign: always}\n")
	_, err := config.Load(p)
	for _, want := range []string{`policy.domains: "Example.org" and "example.org." name the same`, `policy.senders: "A@B.EXAMPLE" and "a@b.example" name the same`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load = %v, want an error mentioning %q", err, want)
		}
	}
}

// TestIsLoopback: a name is loopback only when it resolves, and only to
// loopback addresses; "localhost" is whatever the resolver says.
func TestIsLoopback(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.53", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"localhost", true}, // resolves to 127.0.0.1 (and ::1) on every test machine
		{"192.0.2.1", false},
		{"::", false},
		{"", false},
		{"no-such-host.invalid", false},
	}
	for _, tc := range tests {
		if got := config.IsLoopback(tc.host); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestListenerSafety(t *testing.T) {
	p := writeConfig(t, "smtp:\n  listen:\n    - {addr: \"0.0.0.0:587\", tls: none}\n  upstream: {addr: \"mail.example.com:25\", tls: none}\n")
	_, err := config.Load(p)
	for _, want := range []string{"smtp.listen[0]", "smtp.upstream", "insecure_plaintext"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load = %v, want an error mentioning %q", err, want)
		}
	}
	p = writeConfig(t, "smtp:\n  listen:\n    - {addr: \"0.0.0.0:587\", tls: none, insecure_plaintext: true}\n")
	if _, err := config.Load(p); err != nil {
		t.Errorf("Load with insecure_plaintext: true = %v, want nil", err)
	}
}

// FuzzParse: no configuration file, however broken, makes Parse or Validate
// panic.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("smtp:\n  listen:\n    - {addr: \"0.0.0.0:25\", tls: none}\n"))
	f.Add([]byte("policy: {users: {bob: {addresses: [x]}}}\nshutdown_timeout: -1s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := config.Parse(data); err == nil {
			_ = c.Validate()
		}
	})
}
