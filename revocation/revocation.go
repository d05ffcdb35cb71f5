// Package revocation asks whether a certificate was revoked: by OCSP (RFC
// 6960), from the responder the certificate names or a configured one, then
// by the CRLs it names (RFC 5280). Every question has a timeout, and
// answers, CRLs and failures are cached, so that a responder that is down
// or slow costs one timeout per retry period, never a hang. An answer is
// believed only when the certificate's issuer, or a responder it delegated,
// signed it.
package revocation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// State is what a check found.
type State string

const (
	Good    State = "good"
	Revoked State = "revoked"
	// Unknown: asked, and no trustworthy answer came (the responder is down,
	// slow, does not know the certificate, or its answer was refused).
	Unknown State = "unknown"
	// NoSource: nothing to ask; the certificate names no OCSP responder and
	// no CRL over HTTP, and no responder is configured.
	NoSource State = "no-source"
)

// Methods: what gave an answer.
const (
	MethodOCSP = "ocsp"
	MethodCRL  = "crl"
)

// Result is the outcome of one check.
type Result struct {
	State State
	// Method and URL say what answered (ocsp or crl); for Unknown, the last
	// one asked.
	Method string
	URL    string
	// Reason is the revocation reason (keyCompromise, ...) of a revoked
	// certificate, or why the state is unknown.
	Reason    string
	RevokedAt time.Time
	Checked   time.Time
	// Until is when the answer goes stale and the certificate is asked
	// about again.
	Until time.Time
}

// Options configure a Checker; zero fields take the defaults below.
type Options struct {
	OCSP bool // ask OCSP responders
	// OCSPResponder is asked instead of the responders certificates name.
	OCSPResponder string
	CRL           bool // download CRLs when OCSP gave no answer
	// Timeout bounds one OCSP request or one CRL download; default 5s.
	Timeout time.Duration
	// Retry is how long an unknown state, or a responder that failed,
	// stays so before asking again; default 5m.
	Retry time.Duration
	// MaxAge bounds how long an answer is used, whatever its nextUpdate
	// says; default 1h.
	MaxAge  time.Duration
	Client  *http.Client // nil: a client of its own
	Logger  *slog.Logger // nil: no log
	Metrics *Metrics     // nil: not counted
	Now     func() time.Time
}

// Limits on what a responder may send.
const (
	maxOCSPBytes = 1 << 20
	maxCRLBytes  = 32 << 20
	// maxCRLs bounds the CRLs held in memory.
	maxCRLs = 64
	// maxResults bounds the answers held in memory before stale ones are
	// dropped.
	maxResults = 100000
	// skew is the clock difference tolerated between us and a responder.
	skew = 5 * time.Minute
)

// Checker checks certificates. It is safe for concurrent use.
type Checker struct {
	opts    Options
	client  *http.Client
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	mu      sync.Mutex
	results map[string]Result    // by certificate fingerprint
	crls    map[string]*crlEntry // by URL and issuer
	down    map[string]time.Time // URLs that failed, until when
	flights flights
}

// New returns a Checker.
func New(o Options) *Checker {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 5 * time.Minute
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Hour
	}
	c := &Checker{opts: o, client: o.Client, log: o.Logger, metrics: o.Metrics, now: o.Now,
		results: map[string]Result{}, crls: map[string]*crlEntry{}, down: map[string]time.Time{}}
	if c.client == nil {
		c.client = &http.Client{CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		}}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.metrics == nil {
		c.metrics = NewMetrics(nil)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// sources returns the OCSP responders and CRLs a check of cert would ask,
// in order.
func (c *Checker) sources(cert *x509.Certificate) (ocspURLs, crlURLs []string) {
	if c.opts.OCSP {
		if c.opts.OCSPResponder != "" {
			ocspURLs = []string{c.opts.OCSPResponder}
		} else {
			ocspURLs = httpURLs(cert.OCSPServer)
		}
	}
	if c.opts.CRL {
		crlURLs = httpURLs(cert.CRLDistributionPoints)
	}
	return ocspURLs, crlURLs
}

func httpURLs(urls []string) []string {
	var out []string
	for _, u := range urls {
		if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
			out = append(out, u)
		}
	}
	return out
}

// cached returns the answer held for cert, when it is still fresh.
func (c *Checker) cached(cert *x509.Certificate) (Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.results[fingerprint(cert)]
	if !ok || !c.now().Before(r.Until) {
		return Result{}, false
	}
	return r, true
}

// Check asks whether cert, issued by issuer, was revoked: first the
// cache, then OCSP, then the CRLs. It takes at most Timeout for each
// responder and CRL asked; a source that failed within Retry is not asked
// again. It never returns Good or Revoked on an answer it could not
// verify.
func (c *Checker) Check(ctx context.Context, cert, issuer *x509.Certificate) Result {
	if r, ok := c.cached(cert); ok {
		c.metrics.Checks.WithLabelValues("cache", string(r.State)).Inc()
		return r
	}
	return c.Fresh(ctx, cert, issuer)
}

// Fresh is Check without the answers cached for cert: it asks again (a
// CRL still fresh is read from memory).
func (c *Checker) Fresh(ctx context.Context, cert, issuer *x509.Certificate) Result {
	ocspURLs, crlURLs := c.sources(cert)
	now := c.now()
	if len(ocspURLs)+len(crlURLs) == 0 {
		c.metrics.Checks.WithLabelValues("none", string(NoSource)).Inc()
		return Result{State: NoSource, Reason: "the certificate names no OCSP responder and no CRL", Checked: now, Until: now.Add(c.opts.MaxAge)}
	}
	fp := fingerprint(cert)
	r := c.flights.do(ctx, "check "+fp+" "+fingerprint(issuer), func() Result {
		// Detached from the caller, so that the answer reaches the cache
		// even if the caller stops waiting; bounded by the timeouts.
		ctx := context.WithoutCancel(ctx)
		return c.check(ctx, cert, issuer, ocspURLs, crlURLs)
	})
	return r
}

func (c *Checker) check(ctx context.Context, cert, issuer *x509.Certificate, ocspURLs, crlURLs []string) Result {
	var why []string
	last := Result{}
	for _, u := range ocspURLs {
		r, err := c.askOCSP(ctx, u, cert, issuer)
		if err == nil {
			return c.keep(cert, r)
		}
		why = append(why, "OCSP "+u+": "+err.Error())
		last.Method, last.URL = MethodOCSP, u
	}
	for _, u := range crlURLs {
		r, err := c.askCRL(ctx, u, cert, issuer)
		if err == nil {
			return c.keep(cert, r)
		}
		why = append(why, "CRL "+u+": "+err.Error())
		last.Method, last.URL = MethodCRL, u
	}
	now := c.now()
	last.State, last.Reason, last.Checked, last.Until = Unknown, strings.Join(why, "; "), now, now.Add(c.opts.Retry)
	c.log.Warn("revocation status unknown", "serial", serialHex(cert), "issuer", cert.Issuer.String(), "fingerprint", fp16(cert), "err", last.Reason)
	c.metrics.Checks.WithLabelValues(last.Method, string(Unknown)).Inc()
	return c.store(cert, last)
}

// keep counts an answer and caches it.
func (c *Checker) keep(cert *x509.Certificate, r Result) Result {
	c.metrics.Checks.WithLabelValues(r.Method, string(r.State)).Inc()
	if r.State == Revoked {
		c.log.Warn("certificate revoked", "serial", serialHex(cert), "issuer", cert.Issuer.String(), "fingerprint", fp16(cert),
			"method", r.Method, "url", r.URL, "reason", r.Reason, "revoked_at", r.RevokedAt)
	}
	return c.store(cert, r)
}

func (c *Checker) store(cert *x509.Certificate, r Result) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.results) >= maxResults {
		now := c.now()
		for k, v := range c.results {
			if !now.Before(v.Until) {
				delete(c.results, k)
			}
		}
	}
	if len(c.results) < maxResults {
		c.results[fingerprint(cert)] = r
	}
	return r
}

// until is when an answer valid until next goes stale: next, but no later
// than MaxAge from now.
func (c *Checker) until(now, next time.Time) time.Time {
	limit := now.Add(c.opts.MaxAge)
	if next.IsZero() || next.After(limit) {
		return limit
	}
	return next
}

// errDown: the source failed recently and is not asked again yet.
var errDown = errors.New("failed recently; not asked again yet")

// isDown reports whether u failed within Retry.
func (c *Checker) isDown(u string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.down[u]
	return ok && c.now().Before(t)
}

// failed marks u as down for Retry.
func (c *Checker) failed(u string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[u] = c.now().Add(c.opts.Retry)
}

// fetch GETs or POSTs to u within Timeout and returns at most limit bytes
// of a 200 answer.
func (c *Checker) fetch(ctx context.Context, req *http.Request, limit int64) ([]byte, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("no answer within %s", c.opts.Timeout)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	body, err := readLimited(resp.Body, limit)
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return nil, fmt.Errorf("no whole answer within %s", c.opts.Timeout)
	}
	return body, err
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func fp16(c *x509.Certificate) string { return fingerprint(c)[:16] }

func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// flights runs one fetch per key at a time; callers of the same key wait
// for its result, or until their context ends.
type flights struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{}
	r    Result
}

func (f *flights) do(ctx context.Context, key string, fn func() Result) Result {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*flight{}
	}
	fl, ok := f.calls[key]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		f.calls[key] = fl
		go func() {
			fl.r = fn()
			f.mu.Lock()
			delete(f.calls, key)
			f.mu.Unlock()
			close(fl.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-fl.done:
		return fl.r
	case <-ctx.Done():
		return Result{State: Unknown, Reason: "the check was abandoned: " + ctx.Err().Error()}
	}
}
