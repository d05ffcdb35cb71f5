package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Directory is an LDAP directory that holds recipients' certificates, such
// as an organisation's address book. The proxy asks it for a recipient the
// certificate cache holds no usable certificate for.
type Directory struct {
	// URL is ldaps://host[:port] (TLS from the first byte) or
	// ldap://host[:port] (upgraded with StartTLS, which must succeed).
	// Required.
	URL string `yaml:"url"`
	// CAFile verifies the directory's certificate against these roots
	// instead of the system roots. Default "".
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the directory's certificate.
	// Default: the host of url.
	ServerName string `yaml:"server_name"`
	// Base is the DN searched under, such as ou=people,dc=example,dc=com.
	// Required.
	Base string `yaml:"base"`
	// BindDN is the account the proxy logs in as. Default "": an anonymous
	// search.
	BindDN string `yaml:"bind_dn"`
	// PasswordFile holds BindDN's password. Required with bind_dn.
	PasswordFile string `yaml:"password_file"`
	// Filter is the search filter; {address} stands for the recipient's
	// address, escaped (RFC 4515). Default (mail={address}).
	Filter string `yaml:"filter"`
	// Attributes hold the certificates: DER certificates
	// (userCertificate;binary) or PKCS #7 certs-only bundles
	// (userSMIMECertificate). Default both of those.
	Attributes []string `yaml:"attributes"`
	// Timeout bounds one lookup: connecting, TLS, binding and searching.
	// Default 5s.
	Timeout Duration `yaml:"timeout"`
	// FoundTTL is how long what the directory returned for an address is
	// used before asking again. Default 1h.
	FoundTTL Duration `yaml:"found_ttl"`
	// NotFoundTTL is how long an address the directory has no certificate
	// for, or a directory that did not answer, is not asked again. Default
	// 10m.
	NotFoundTTL Duration `yaml:"not_found_ttl"`
}

// Directory defaults, for the fields an entry leaves out.
const (
	DefaultDirectoryFilter      = "(mail={address})"
	DefaultDirectoryTimeout     = 5 * time.Second
	DefaultDirectoryFoundTTL    = time.Hour
	DefaultDirectoryNotFoundTTL = 10 * time.Minute
)

// DefaultDirectoryAttributes are the attributes asked for by default.
var DefaultDirectoryAttributes = []string{"userCertificate;binary", "userSMIMECertificate"}

// withDefaults fills in the fields an entry of the directories list left
// out: a list's entries cannot take their defaults from Default.
func (d *Directory) withDefaults() {
	if d.Filter == "" {
		d.Filter = DefaultDirectoryFilter
	}
	if len(d.Attributes) == 0 {
		d.Attributes = append([]string(nil), DefaultDirectoryAttributes...)
	}
	if d.Timeout == 0 {
		d.Timeout = Duration(DefaultDirectoryTimeout)
	}
	if d.FoundTTL == 0 {
		d.FoundTTL = Duration(DefaultDirectoryFoundTTL)
	}
	if d.NotFoundTTL == 0 {
		d.NotFoundTTL = Duration(DefaultDirectoryNotFoundTTL)
	}
}

// Revocation says how the proxy asks whether a certificate was revoked:
// before encrypting to it, and for the signer of a message it verifies.
type Revocation struct {
	// OCSP asks the responder the certificate names (authorityInfoAccess),
	// or OCSPResponder when set. Default true.
	OCSP bool `yaml:"ocsp"`
	// OCSPResponder is the URL of an OCSP responder to ask instead of the
	// one each certificate names. Its answers must still be signed by the
	// certificate's issuer or a responder the issuer delegated. Default "".
	OCSPResponder string `yaml:"ocsp_responder"`
	// CRL downloads the CRLs a certificate names (cRLDistributionPoints,
	// http and https) when OCSP gave no answer. Default true.
	CRL bool `yaml:"crl"`
	// Unknown is what a certificate whose status nobody could tell counts
	// as: soft-fail (not revoked, logged and counted) or hard-fail (not
	// usable: no encryption to it, its signatures untrusted). Default
	// soft-fail.
	Unknown string `yaml:"unknown"`
	// Timeout bounds one question: an OCSP request, or a CRL download.
	// Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Retry is how long a status nobody could tell stays unknown before the
	// proxy asks again. Default 5m.
	Retry Duration `yaml:"retry"`
	// MaxAge is the longest an answer is used, even when it says it is good
	// for longer (its nextUpdate). Default 1h.
	MaxAge Duration `yaml:"max_age"`
}

// Values of Revocation.Unknown.
const (
	SoftFail = "soft-fail"
	HardFail = "hard-fail"
)

func defaultRevocation() Revocation {
	return Revocation{OCSP: true, CRL: true, Unknown: SoftFail,
		Timeout: Duration(5 * time.Second), Retry: Duration(5 * time.Minute), MaxAge: Duration(time.Hour)}
}

// Checks reports whether any revocation check is on.
func (r Revocation) Checks() bool { return r.OCSP || r.CRL }

func (c *Config) validateCerts(bad func(key, format string, args ...any)) {
	for i, d := range c.Directories {
		key := fmt.Sprintf("directories[%d]", i)
		u, err := url.Parse(d.URL)
		switch {
		case d.URL == "":
			bad(key+".url", "must be set, such as ldaps://ldap.example.com")
		case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
			bad(key+".url", "invalid URL %q; use ldaps://HOST[:PORT] or ldap://HOST[:PORT] (with StartTLS)", d.URL)
		case u.User != nil:
			bad(key+".url", "holds a user name; use bind_dn and password_file")
		case strings.Trim(u.Path, "/") != "" || u.RawQuery != "":
			bad(key+".url", "holds a DN or a query; put the DN in base and the filter in filter")
		}
		if d.Base == "" {
			bad(key+".base", "must be set, such as ou=people,dc=example,dc=com")
		}
		if (d.BindDN == "") != (d.PasswordFile == "") {
			bad(key, "bind_dn and password_file go together (neither: an anonymous search)")
		}
		for _, f := range []struct{ key, path string }{{".ca_file", d.CAFile}, {".password_file", d.PasswordFile}} {
			if f.path == "" {
				continue
			}
			if _, err := os.Stat(f.path); err != nil {
				bad(key+f.key, "%v", err)
			}
		}
		if !strings.Contains(d.Filter, "{address}") || !strings.HasPrefix(d.Filter, "(") || !strings.HasSuffix(d.Filter, ")") {
			bad(key+".filter", "invalid filter %q; it must be in parentheses and hold {address}, such as %s", d.Filter, DefaultDirectoryFilter)
		}
		for _, a := range d.Attributes {
			if a == "" || strings.ContainsAny(a, " ,()*") {
				bad(key+".attributes", "invalid attribute %q", a)
			}
		}
		if d.Timeout <= 0 || d.FoundTTL <= 0 || d.NotFoundTTL <= 0 {
			bad(key, "timeout, found_ttl and not_found_ttl must be positive")
		}
	}
	r := c.Revocation
	if r.OCSPResponder != "" {
		if u, err := url.Parse(r.OCSPResponder); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("revocation.ocsp_responder", "invalid URL %q; use http://HOST/PATH", r.OCSPResponder)
		}
	}
	if r.Unknown != SoftFail && r.Unknown != HardFail {
		bad("revocation.unknown", "invalid value %q; options are %s, %s", r.Unknown, SoftFail, HardFail)
	}
	if r.Timeout <= 0 || r.Retry <= 0 || r.MaxAge <= 0 {
		bad("revocation", "timeout, retry and max_age must be positive")
	}
}
