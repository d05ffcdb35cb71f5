// Package directory looks people's certificates up in an LDAP directory,
// such as an organisation's address book, the way Thunderbird and Outlook
// do when composing: a search under a base DN with a filter holding the
// address, for attributes such as userCertificate;binary (a DER
// certificate) and userSMIMECertificate (a PKCS #7 certs-only bundle). The
// connection is always TLS, verified: ldaps://, or ldap:// with StartTLS.
// Every lookup has a timeout, and answers are cached: what was found, and
// what was not (or a directory that did not answer), each for its own
// lifetime. It returns what the directory holds; whether a certificate may
// be used is the caller's to decide.
package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"smimeproxy/certfile"
	"smimeproxy/internal/mailaddr"
)

// Options configure a Directory; see config.Directory for their meaning.
type Options struct {
	URL        string // ldaps://host[:port] or ldap://host[:port]
	RootCAs    *x509.CertPool
	ServerName string
	Base       string
	BindDN     string // "": an anonymous search
	Password   string
	Filter     string // holds {address}
	Attributes []string

	Timeout     time.Duration
	FoundTTL    time.Duration
	NotFoundTTL time.Duration

	Logger  *slog.Logger // nil: no log
	Metrics *Metrics     // nil: not counted
	Now     func() time.Time
}

// Found is what a directory holds for an address.
type Found struct {
	// Certs are the people's certificates in the entries found.
	Certs []*x509.Certificate
	// Intermediates are CA certificates that came with them (in a PKCS #7
	// bundle), for building paths; never trusted.
	Intermediates []*x509.Certificate
}

// ErrUnavailable wraps every failure to ask the directory: it could not be
// reached, refused the TLS or the login, or answered with an error.
var ErrUnavailable = errors.New("directory: unavailable")

// maxEntries bounds the entries one search returns.
const maxEntries = 20

// Directory is one directory. It is safe for concurrent use.
type Directory struct {
	o       Options
	addr    string // host:port
	tls     *tls.Config
	ldaps   bool
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	mu        sync.Mutex
	cache     map[string]cached // by normalized address
	downUntil time.Time
}

type cached struct {
	found Found
	until time.Time
}

// New checks o and returns the Directory. It does not connect.
func New(o Options) (*Directory, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		return nil, fmt.Errorf("directory: invalid URL %q; use ldaps://HOST[:PORT] or ldap://HOST[:PORT]", o.URL)
	}
	if !strings.Contains(o.Filter, "{address}") {
		return nil, fmt.Errorf("directory: the filter %q does not hold {address}", o.Filter)
	}
	if _, err := ldap.CompileFilter(filterFor(o.Filter, "probe@example.org")); err != nil {
		return nil, fmt.Errorf("directory: the filter %q does not parse: %w", o.Filter, err)
	}
	if len(o.Attributes) == 0 {
		return nil, errors.New("directory: no attributes to read certificates from")
	}
	d := &Directory{o: o, ldaps: u.Scheme == "ldaps", log: o.Logger, metrics: o.Metrics, now: o.Now, cache: map[string]cached{}}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "636", false: "389"}[d.ldaps]
	}
	d.addr = net.JoinHostPort(u.Hostname(), port)
	name := o.ServerName
	if name == "" {
		name = u.Hostname()
	}
	d.tls = &tls.Config{RootCAs: o.RootCAs, ServerName: name, MinVersion: tls.VersionTLS12}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("directory", o.URL)
	if d.metrics == nil {
		d.metrics = NewMetrics(nil)
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// String names the directory: its URL.
func (d *Directory) String() string { return d.o.URL }

// Lookup returns the certificates the directory holds for addr: from the
// cache while the last answer is fresh, else by a search bounded by the
// timeout. An error wraps ErrUnavailable; a value that is not a certificate
// is logged and left out.
func (d *Directory) Lookup(ctx context.Context, addr string) (Found, error) {
	addr = mailaddr.Normalize(addr)
	now := d.now()
	d.mu.Lock()
	c, ok := d.cache[addr]
	down := now.Before(d.downUntil)
	d.mu.Unlock()
	if ok && now.Before(c.until) {
		d.metrics.Lookups.WithLabelValues("cached").Inc()
		return c.found, nil
	}
	if down {
		d.metrics.Lookups.WithLabelValues("cached").Inc()
		return Found{}, fmt.Errorf("%w: it did not answer a moment ago; asking again after %s", ErrUnavailable, d.downUntil.Format(time.TimeOnly))
	}
	start := time.Now()
	found, err := d.search(ctx, addr)
	d.metrics.Seconds.Observe(time.Since(start).Seconds())
	now = d.now()
	c = cached{found: found, until: now.Add(d.o.FoundTTL)}
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller went away: no verdict on the directory.
		return Found{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case err != nil:
		d.metrics.Lookups.WithLabelValues("error").Inc()
		d.log.Warn("directory lookup failed; not asking it again for a while", "err", err, "retry_after", d.o.NotFoundTTL)
		d.mu.Lock()
		d.downUntil = now.Add(d.o.NotFoundTTL)
		d.mu.Unlock()
		return Found{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case len(found.Certs) == 0:
		d.metrics.Lookups.WithLabelValues("not_found").Inc()
		c.until = now.Add(d.o.NotFoundTTL)
	default:
		d.metrics.Lookups.WithLabelValues("found").Inc()
	}
	d.mu.Lock()
	d.cache[addr] = c
	if len(d.cache) > maxCached {
		d.prune(now)
	}
	d.mu.Unlock()
	return found, nil
}

// maxCached bounds the addresses cached before stale ones are dropped.
const maxCached = 10000

// prune drops stale entries, or all of them if none is stale; d.mu is held.
func (d *Directory) prune(now time.Time) {
	n := len(d.cache)
	for k, c := range d.cache {
		if !now.Before(c.until) {
			delete(d.cache, k)
		}
	}
	if len(d.cache) == n {
		clear(d.cache)
	}
}

// search asks the directory, within the timeout.
func (d *Directory) search(ctx context.Context, addr string) (Found, error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	conn, err := d.connect(ctx)
	if err != nil {
		return Found{}, err
	}
	defer conn.Close()
	req := ldap.NewSearchRequest(d.o.Base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, maxEntries,
		max(1, int(d.o.Timeout/time.Second)), false, filterFor(d.o.Filter, addr), d.o.Attributes, nil)
	res, err := conn.Search(req)
	switch {
	case err != nil && expired(ctx):
		return Found{}, fmt.Errorf("search: no answer within %s", d.o.Timeout)
	case err != nil && (res == nil || !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded)):
		return Found{}, fmt.Errorf("search: %w", err)
	}
	var found Found
	for _, e := range res.Entries {
		for _, a := range e.Attributes {
			if !d.wanted(a.Name) {
				continue
			}
			for _, v := range a.ByteValues {
				certs, inters, err := ParseValue(v)
				if err != nil {
					d.metrics.Rejected.Inc()
					d.log.Warn("a certificate in the directory does not parse; it is left out", "dn", e.DN, "attribute", a.Name, "err", err)
					continue
				}
				found.Certs = appendNew(found.Certs, certs...)
				found.Intermediates = appendNew(found.Intermediates, inters...)
			}
		}
	}
	return found, nil
}

// wanted reports whether an attribute the server returned is one asked
// for: the server may add or drop the ;binary option.
func (d *Directory) wanted(name string) bool {
	base, _, _ := strings.Cut(name, ";")
	for _, a := range d.o.Attributes {
		ab, _, _ := strings.Cut(a, ";")
		if strings.EqualFold(ab, base) {
			return true
		}
	}
	return false
}

// connect dials, secures and binds, all within ctx.
func (d *Directory) connect(ctx context.Context) (*ldap.Conn, error) {
	var dialer net.Dialer
	raw, err := dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// Every read and write, StartTLS and the search included, ends by the
	// deadline, or when ctx is cancelled.
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	var conn *ldap.Conn
	if d.ldaps {
		tc := tls.Client(raw, d.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			stop()
			raw.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		conn = ldap.NewConn(tc, true)
	} else {
		conn = ldap.NewConn(raw, false)
	}
	conn.Start()
	conn.SetTimeout(d.o.Timeout)
	fail := func(what string, err error) (*ldap.Conn, error) {
		stop()
		conn.Close()
		if expired(ctx) {
			return nil, fmt.Errorf("%s: no answer within %s", what, d.o.Timeout)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !d.ldaps {
		if err := conn.StartTLS(d.tls); err != nil {
			return fail("StartTLS", err)
		}
	}
	if d.o.BindDN != "" {
		if err := conn.Bind(d.o.BindDN, d.o.Password); err != nil {
			return fail("bind as "+d.o.BindDN, err)
		}
	}
	return conn, nil
}

// expired reports whether ctx ended or its deadline passed: go-ldap's own
// timeout and the connection's deadline may say so first.
func expired(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(dl)
}

// filterFor puts the address, escaped (RFC 4515), into the filter.
func filterFor(tmpl, addr string) string {
	return strings.ReplaceAll(tmpl, "{address}", ldap.EscapeFilter(addr))
}

// ParseValue reads one attribute value: a DER certificate (as
// userCertificate;binary holds), a PKCS #7 certs-only bundle (as
// userSMIMECertificate holds), or PEM. It returns the people's
// certificates, and the CA certificates that came with them apart;
// self-signed roots are dropped, since only the configured anchors are
// trusted.
func ParseValue(v []byte) (people, cas []*x509.Certificate, err error) {
	certs, err := certfile.Parse(v)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range certs {
		switch {
		case c.BasicConstraintsValid && c.IsCA && c.CheckSignatureFrom(c) == nil:
		case c.BasicConstraintsValid && c.IsCA:
			cas = append(cas, c)
		default:
			people = append(people, c)
		}
	}
	if len(people) == 0 {
		return nil, nil, errors.New("it holds no certificate of a person")
	}
	return people, cas, nil
}

func appendNew(list []*x509.Certificate, certs ...*x509.Certificate) []*x509.Certificate {
	for _, c := range certs {
		dup := false
		for _, o := range list {
			dup = dup || o.Equal(c)
		}
		if !dup {
			list = append(list, c)
		}
	}
	return list
}
