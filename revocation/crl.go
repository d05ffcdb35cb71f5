package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// crlEntry is a CRL that verified, reduced to what a check needs.
type crlEntry struct {
	revoked map[string]x509.RevocationListEntry // by serialKey
	until   time.Time
}

// askCRL looks cert up in the CRL at u, downloading it unless a fresh copy
// verified against issuer is held.
func (c *Checker) askCRL(ctx context.Context, u string, cert, issuer *x509.Certificate) (Result, error) {
	key := u + " " + fingerprint(issuer)
	c.mu.Lock()
	e := c.crls[key]
	c.mu.Unlock()
	now := c.now()
	if e == nil || !now.Before(e.until) {
		if c.isDown(u) {
			return Result{}, errDown
		}
		var err error
		if e, err = c.downloadCRL(ctx, u, issuer); err != nil {
			return Result{}, err
		}
		now = c.now()
	}
	r := Result{State: Good, Method: MethodCRL, URL: u, Checked: now, Until: e.until}
	if rev, ok := e.revoked[serialKey(cert.SerialNumber)]; ok {
		r.State, r.RevokedAt, r.Reason = Revoked, rev.RevocationTime, reasonName(rev.ReasonCode)
	}
	return r, nil
}

func (c *Checker) downloadCRL(ctx context.Context, u string, issuer *x509.Certificate) (*crlEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	body, err := c.fetch(ctx, req, maxCRLBytes)
	c.metrics.Seconds.WithLabelValues(MethodCRL).Observe(time.Since(start).Seconds())
	if err != nil {
		c.failed(u)
		c.metrics.Failures.WithLabelValues(MethodCRL, "unreachable").Inc()
		c.log.Warn("CRL download failed", "url", u, "err", err)
		return nil, err
	}
	now := c.now()
	rl, err := VerifyCRL(body, issuer, now)
	if err != nil {
		c.failed(u)
		c.metrics.Failures.WithLabelValues(MethodCRL, "rejected").Inc()
		c.log.Warn("CRL rejected; nothing in it is used", "url", u, "issuer", issuer.Subject.String(), "err", err)
		return nil, err
	}
	e := &crlEntry{revoked: make(map[string]x509.RevocationListEntry, len(rl.RevokedCertificateEntries)), until: c.until(now, rl.NextUpdate)}
	for _, r := range rl.RevokedCertificateEntries {
		e.revoked[serialKey(r.SerialNumber)] = r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.crls) >= maxCRLs {
		c.evictCRL(now)
	}
	c.crls[u+" "+fingerprint(issuer)] = e
	return e, nil
}

// evictCRL drops the stale CRLs, or else the one that goes stale first.
func (c *Checker) evictCRL(now time.Time) {
	first := ""
	for k, e := range c.crls {
		if !now.Before(e.until) {
			delete(c.crls, k)
			continue
		}
		if first == "" || e.until.Before(c.crls[first].until) {
			first = k
		}
	}
	if len(c.crls) >= maxCRLs {
		delete(c.crls, first)
	}
}

var (
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidAuthorityKeyID           = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber                = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidReasonCode               = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidInvalidityDate           = asn1.ObjectIdentifier{2, 5, 29, 24}
)

// VerifyCRL parses a CRL (DER, or PEM) and checks that it can be used to
// tell whether a certificate of issuer was revoked: issued and signed by
// issuer, a complete CRL (not a delta) whose scope covers end-entity
// certificates, with no critical extension it cannot honour, and current
// (thisUpdate not in the future, nextUpdate not past).
func VerifyCRL(data []byte, issuer *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		block, _ := pem.Decode(bytes.TrimSpace(data))
		if block == nil || block.Type != "X509 CRL" {
			return nil, errors.New("the CRL does not parse: PEM without an X509 CRL block")
		}
		data = block.Bytes
	}
	rl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("the CRL does not parse: %w", err)
	}
	if !bytes.Equal(rl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("the CRL is issued by %q, not by the certificate's issuer %q", rl.Issuer.String(), issuer.Subject.String())
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("the CRL's signature does not verify with the issuer's key: %w", err)
	}
	for _, ext := range rl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return nil, errors.New("a delta CRL, which only a complete CRL can be read with")
		case ext.Id.Equal(oidIssuingDistributionPoint):
			if err := checkScope(ext.Value); err != nil {
				return nil, err
			}
		case ext.Critical && !ext.Id.Equal(oidAuthorityKeyID) && !ext.Id.Equal(oidCRLNumber):
			return nil, fmt.Errorf("the CRL has a critical extension %s that is not understood", ext.Id)
		}
	}
	for _, r := range rl.RevokedCertificateEntries {
		for _, ext := range r.Extensions {
			if ext.Critical && !ext.Id.Equal(oidReasonCode) && !ext.Id.Equal(oidInvalidityDate) {
				// Such as certificateIssuer: an indirect CRL's entries are
				// about another issuer's certificates.
				return nil, fmt.Errorf("an entry of the CRL has a critical extension %s that is not understood", ext.Id)
			}
		}
	}
	switch {
	case rl.ThisUpdate.After(now.Add(skew)):
		return nil, fmt.Errorf("the CRL is dated %s, in the future", rl.ThisUpdate.UTC().Format(time.RFC3339))
	case !rl.NextUpdate.IsZero() && rl.NextUpdate.Before(now.Add(-skew)):
		return nil, fmt.Errorf("the CRL is stale: its next update was due %s", rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return rl, nil
}

// checkScope reads an issuingDistributionPoint extension (RFC 5280
// 5.2.5) and refuses a CRL that leaves out end-entity certificates, covers
// only some reasons, or is indirect: it cannot say that a certificate is
// not revoked.
//
//	IssuingDistributionPoint ::= SEQUENCE {
//	     distributionPoint          [0] DistributionPointName OPTIONAL,
//	     onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	     onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	     onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	     indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	     onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
func checkScope(value []byte) error {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("the CRL's issuing distribution point does not parse")
	}
	for !seq.Empty() {
		var (
			field cryptobyte.String
			tag   cbasn1.Tag
		)
		if !seq.ReadAnyASN1(&field, &tag) {
			return errors.New("the CRL's issuing distribution point does not parse")
		}
		switch tag {
		case cbasn1.Tag(0).Constructed().ContextSpecific(), cbasn1.Tag(1).ContextSpecific():
			// Where the CRL is published; only user certificates: both fine.
		case cbasn1.Tag(2).ContextSpecific(), cbasn1.Tag(4).ContextSpecific(), cbasn1.Tag(5).ContextSpecific():
			if len(field) == 1 && field[0] == 0 {
				continue // FALSE spelled out
			}
			return errors.New("the CRL covers only CA or attribute certificates, or is indirect")
		case cbasn1.Tag(3).ContextSpecific():
			return errors.New("the CRL covers only some revocation reasons")
		default:
			return errors.New("the CRL's issuing distribution point does not parse")
		}
	}
	return nil
}

// serialKey is how entries are found: the serial number in decimal.
func serialKey(n *big.Int) string { return n.String() }
