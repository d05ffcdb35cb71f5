package smime

import (
	"errors"
	"fmt"
	"strings"

	"smimeproxy/cms"
)

// AuthenticationResults returns the value of an Authentication-Results field
// (RFC 8601) that reports o with the smime method (RFC 7281): one result per
// signature, outermost first, or smime=none when there is none (with why,
// when a limit kept Open from looking). The value is one line; the caller
// folds it when writing the field.
func (o *Opened) AuthenticationResults(authservID string) string {
	var b strings.Builder
	b.WriteString(arValue(authservID))
	if len(o.Signatures) == 0 {
		b.WriteString("; smime=none")
		switch {
		case o.Encrypted && !o.Decrypted:
			b.WriteString(" reason=" + quote(decryptReason(o.DecryptErr)))
		case o.Limit != nil:
			b.WriteString(" reason=" + quote("not opened: "+o.Limit.Reason()))
		}
		return b.String()
	}
	for _, s := range o.Signatures {
		fmt.Fprintf(&b, "; smime=%s reason=%s", arResult(s.Status), quote(s.Status.String()+": "+s.Reason))
		if s.Signer == nil {
			continue
		}
		if addrs := certAddresses(s.Signer); len(addrs) > 0 {
			b.WriteString(" body.smime-identifier=" + arValue(addrs[0]))
		}
		// RFC 7281 3.2.3: serial and issuer go together.
		fmt.Fprintf(&b, " body.smime-serial=%X body.smime-issuer=%s", s.Signer.SerialNumber, quote(s.Signer.Issuer.String()))
	}
	return b.String()
}

// arResult maps a Status to an RFC 7281 result: policy for a good signature
// that our policy refuses, neutral when the signer cannot be told.
func arResult(s Status) string {
	switch s {
	case StatusValid:
		return "pass"
	case StatusInvalid, StatusExpired, StatusRevoked:
		return "fail"
	case StatusWeak, StatusAddressMismatch:
		return "policy"
	case StatusUntrusted, StatusUnknownSigner:
		return "neutral"
	default:
		return "permerror"
	}
}

func decryptReason(err error) string {
	var unsup *cms.UnsupportedError
	switch {
	case err == nil:
		return "not decrypted"
	case errors.Is(err, cms.ErrNoRecipient):
		return "not decrypted: no matching key"
	case errors.Is(err, cms.ErrDecrypt):
		return "not decrypted: decryption failed"
	case errors.As(err, &unsup) && unsup.Name != "":
		return "not decrypted: unsupported " + unsup.What + " " + unsup.Name
	case errors.As(err, &unsup):
		return "not decrypted: unsupported " + unsup.What
	default:
		return "not decrypted: malformed"
	}
}

// arValue writes v as a token or an addr-spec when it is one, else quoted.
func arValue(v string) string {
	if v == "" || strings.IndexFunc(v, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>,;:\"[]?=`, r)
	}) >= 0 {
		return quote(v)
	}
	return v
}

// quote makes an RFC 5322 quoted-string of v, dropping control characters.
func quote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
