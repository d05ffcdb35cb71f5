package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"golang.org/x/crypto/ocsp"
)

// askOCSP asks the responder at u about cert. An error means no answer
// that counts: the responder failed, does not know the certificate, or
// sent an answer that does not verify.
func (c *Checker) askOCSP(ctx context.Context, u string, cert, issuer *x509.Certificate) (Result, error) {
	if c.isDown(u) {
		return Result{}, errDown
	}
	req, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		return Result{}, fmt.Errorf("make the request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(req))
	if err != nil {
		return Result{}, err
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	hreq.Header.Set("Accept", "application/ocsp-response")
	start := time.Now()
	body, err := c.fetch(ctx, hreq, maxOCSPBytes)
	c.metrics.Seconds.WithLabelValues(MethodOCSP).Observe(time.Since(start).Seconds())
	if err != nil {
		c.failed(u)
		c.metrics.Failures.WithLabelValues(MethodOCSP, "unreachable").Inc()
		c.log.Warn("OCSP responder did not answer", "url", u, "serial", serialHex(cert), "err", err)
		return Result{}, err
	}
	now := c.now()
	resp, err := VerifyOCSP(body, cert, issuer, now, c.opts.MaxAge)
	if err != nil {
		c.failed(u)
		c.metrics.Failures.WithLabelValues(MethodOCSP, "rejected").Inc()
		c.log.Warn("OCSP response rejected; nothing in it is used", "url", u, "serial", serialHex(cert), "err", err)
		return Result{}, err
	}
	r := Result{Method: MethodOCSP, URL: u, Checked: now, Until: c.until(now, resp.NextUpdate)}
	switch resp.Status {
	case ocsp.Good:
		r.State = Good
	case ocsp.Revoked:
		r.State, r.RevokedAt, r.Reason = Revoked, resp.RevokedAt, reasonName(resp.RevocationReason)
	default:
		return Result{}, errors.New("the responder does not know the certificate")
	}
	return r, nil
}

// VerifyOCSP parses an OCSP response about cert and checks that it can be
// believed: signed by issuer, or by a responder certificate that issuer
// issued for OCSP signing (RFC 6960 4.2.2.2) and that is valid now; about
// cert's serial number; and current (thisUpdate not in the future,
// nextUpdate not past, or without one, thisUpdate within maxAge).
func VerifyOCSP(der []byte, cert, issuer *x509.Certificate, now time.Time, maxAge time.Duration) (*ocsp.Response, error) {
	resp, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("the responder answered %q", re.Status.String())
		}
		return nil, fmt.Errorf("not a valid signed answer from the issuer: %w", err)
	}
	// ParseResponseForCert checks that the issuer signed an embedded
	// responder certificate, but not that it was issued for OCSP: without
	// that, any certificate of the same CA could vouch for any other.
	if rc := resp.Certificate; rc != nil && !rc.Equal(issuer) {
		if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return nil, fmt.Errorf("signed by %q, which the issuer did not authorize for OCSP signing", rc.Subject.String())
		}
		if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
			return nil, fmt.Errorf("the responder certificate %q is not valid now", rc.Subject.String())
		}
	}
	switch {
	case resp.ThisUpdate.After(now.Add(skew)):
		return nil, fmt.Errorf("produced for %s, in the future", resp.ThisUpdate.UTC().Format(time.RFC3339))
	case !resp.NextUpdate.IsZero() && resp.NextUpdate.Before(now.Add(-skew)):
		return nil, fmt.Errorf("stale: its next update was due %s", resp.NextUpdate.UTC().Format(time.RFC3339))
	case resp.NextUpdate.IsZero() && resp.ThisUpdate.Before(now.Add(-maxAge)):
		return nil, fmt.Errorf("stale: produced %s", resp.ThisUpdate.UTC().Format(time.RFC3339))
	}
	return resp, nil
}

// reasonNames are RFC 5280's CRLReason values.
var reasonNames = map[int]string{
	ocsp.Unspecified: "unspecified", ocsp.KeyCompromise: "keyCompromise", ocsp.CACompromise: "cACompromise",
	ocsp.AffiliationChanged: "affiliationChanged", ocsp.Superseded: "superseded",
	ocsp.CessationOfOperation: "cessationOfOperation", ocsp.CertificateHold: "certificateHold",
	ocsp.RemoveFromCRL: "removeFromCRL", ocsp.PrivilegeWithdrawn: "privilegeWithdrawn", ocsp.AACompromise: "aACompromise",
}

func reasonName(r int) string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason %d", r)
}

// readLimited reads all of r, or fails when it holds more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("the answer is larger than %d bytes", limit)
	}
	return b, nil
}
