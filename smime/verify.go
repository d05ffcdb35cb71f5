package smime

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"strings"
	"time"

	"smimeproxy/cms"
)

// VerifyOptions say whom to trust and when.
type VerifyOptions struct {
	Roots         *x509.CertPool // nil: the system roots
	Intermediates *x509.CertPool // besides the certificates the message carries
	// Certificates are known certificates, for signers that embed none (KMail
	// does that).
	Certificates []*x509.Certificate
	// Time is when certificates must be valid; zero: the signing time when
	// present and not in the future, else now.
	Time time.Time
	// AllowSHA1 accepts SHA-1 signatures; otherwise they are StatusWeak, as
	// MD5 ones always are.
	AllowSHA1 bool
}

// Status is the outcome of checking one signature.
type Status int

const (
	StatusValid           Status = iota
	StatusInvalid                // the content or the signature was altered
	StatusUntrusted              // no path to a trusted root
	StatusExpired                // the signer or the chain was not valid at the time
	StatusAddressMismatch        // the certificate does not name the From address
	StatusWeak                   // SHA-1 (or weaker) signature
	StatusUnknownSigner          // the signer's certificate was not found
	StatusError                  // malformed or unsupported
	// StatusRevoked: the signer's certificate was revoked. Verification
	// never sets it (smime does no network I/O): a revocation check by the
	// caller does.
	StatusRevoked
)

var statusNames = [...]string{"valid", "invalid", "untrusted", "expired", "address-mismatch", "weak", "unknown-signer", "error", "revoked"}

func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return "unknown"
	}
	return statusNames[s]
}

// Signature is the result for one signer of one signature layer.
type Signature struct {
	Status Status
	Reason string // short human text, no secrets
	// Signer is the signer's certificate; nil when unknown.
	Signer *x509.Certificate
	// Certificates are all the certificates the signature carries, for harvesting.
	Certificates []*x509.Certificate
	// EncryptionCert is the certificate the signer prefers for encryption
	// (SMIMEEncryptionKeyPreference), when carried.
	EncryptionCert *x509.Certificate
	Capabilities   []cms.Capability
	SigningTime    time.Time
	Hash           crypto.Hash

	// fromChecked: the signer was checked against the From address, which
	// header protection may change.
	fromChecked bool
}

const (
	reasonVerified        = "signature verified"
	reasonAddressMismatch = "certificate does not name the From address"
)

// verifier checks the signatures of one message.
type verifier struct {
	opts *VerifyOptions
	from []string // the From addresses, lower case
	now  time.Time
}

// check checks one signer over content (nil: the encapsulated content).
// addressCheck is false for a signature that a trusted outer signature
// encloses: From names the outer signer then.
func (v *verifier) check(sd *cms.SignedData, s *cms.Signer, content []byte, addressCheck bool) *Signature {
	sig := &Signature{
		Certificates: sd.Certificates,
		Capabilities: s.Capabilities,
		SigningTime:  s.SigningTime,
		Hash:         s.Hash,
	}
	cert := sd.FindCertificate(s, v.opts.Certificates)
	if cert == nil {
		sig.Status, sig.Reason = StatusUnknownSigner, "signer certificate not found"
		return sig
	}
	sig.Signer = cert
	if p := s.EncryptionKeyPreference; p != nil {
		sig.EncryptionCert = findCert(*p, sd.Certificates, v.opts.Certificates)
	}

	if err := sd.Verify(s, cert, content); err != nil {
		sig.Status, sig.Reason = cryptoStatus(err)
		return sig
	}

	at := v.opts.Time
	if at.IsZero() {
		at = v.now
		if !s.SigningTime.IsZero() && !s.SigningTime.After(v.now) {
			at = s.SigningTime
		}
	}
	if st, reason := v.chain(cert, sd.Certificates, at); st != StatusValid {
		sig.Status, sig.Reason = st, reason
		return sig
	}
	if s.Hash == crypto.MD5 || s.Hash == crypto.SHA1 && !v.opts.AllowSHA1 {
		sig.Status, sig.Reason = StatusWeak, strings.ToUpper(s.Hash.String())+" signature"
		return sig
	}
	sig.fromChecked = addressCheck
	if addressCheck && len(v.from) > 0 && !namesAll(cert, v.from) {
		sig.Status, sig.Reason = StatusAddressMismatch, reasonAddressMismatch
		return sig
	}
	sig.Status, sig.Reason = StatusValid, reasonVerified
	return sig
}

func cryptoStatus(err error) (Status, string) {
	var unsup *cms.UnsupportedError
	switch {
	case errors.Is(err, cms.ErrSignature):
		return StatusInvalid, "signature does not match the content"
	case errors.As(err, &unsup):
		return StatusError, "unsupported " + unsup.What
	default:
		return StatusError, "malformed signature"
	}
}

// chain validates cert for email protection at time at.
func (v *verifier) chain(cert *x509.Certificate, carried []*x509.Certificate, at time.Time) (Status, string) {
	inter := x509.NewCertPool()
	if v.opts.Intermediates != nil {
		inter = v.opts.Intermediates.Clone()
	}
	for _, c := range carried {
		inter.AddCert(c)
	}
	for _, c := range v.opts.Certificates {
		inter.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.opts.Roots,
		Intermediates: inter,
		CurrentTime:   at,
		// A certificate without EKU passes (RFC 8550 4.4.4); one whose EKU
		// lists neither emailProtection nor anyExtendedKeyUsage does not.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err == nil {
		return StatusValid, ""
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			return StatusExpired, "certificate not valid at " + at.UTC().Format(time.RFC3339)
		case x509.IncompatibleUsage:
			return StatusUntrusted, "certificate not valid for email protection"
		case x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage:
			return StatusUntrusted, "certificate outside its issuer's constraints"
		}
		return StatusUntrusted, "invalid certificate chain"
	}
	return StatusUntrusted, "no path to a trusted root"
}

// findCert returns the certificate id names among the lists.
func findCert(id cms.CertID, lists ...[]*x509.Certificate) *x509.Certificate {
	for _, l := range lists {
		for _, c := range l {
			if id.Matches(c) {
				return c
			}
		}
	}
	return nil
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// certAddresses returns the addresses cert names in subjectAltName rfc822Name
// and in the subject's emailAddress, lower case.
func certAddresses(cert *x509.Certificate) []string {
	var out []string
	for _, a := range cert.EmailAddresses {
		out = append(out, strings.ToLower(a))
	}
	for _, n := range cert.Subject.Names {
		if s, ok := n.Value.(string); ok && n.Type.Equal(oidEmailAddress) {
			out = append(out, strings.ToLower(s))
		}
	}
	return out
}

// namesAll reports whether cert names every address.
func namesAll(cert *x509.Certificate, addrs []string) bool {
	have := certAddresses(cert)
	for _, a := range addrs {
		found := false
		for _, h := range have {
			found = found || h == a
		}
		if !found {
			return false
		}
	}
	return true
}
