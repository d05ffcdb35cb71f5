package smtp

import (
	"context"
	"errors"
	"fmt"
	"net"

	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
)

// This file is the one place where an error becomes the SMTP client's reply.
// The upstream's replies pass through verbatim; everything else is mapped
// here to a code and a text that names no path, key id or internal error.
// go-smtp finds replies by type assertion, not errors.As, so every session
// method returns the bare *gosmtp.SMTPError that reply makes.

// Upstream stages, for errors and the upstream_errors metric.
const (
	stageConnect = "connect"
	stageTLS     = "tls"
	stageAuth    = "auth"
	stageCommand = "command"
	stageData    = "data"
)

// upstreamError is a failure to talk to the upstream server, as opposed to
// a reply from it (which is a *gosmtp.SMTPError).
type upstreamError struct {
	stage string
	err   error
}

func (e *upstreamError) Error() string { return "upstream " + e.stage + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// messageError is a message that cannot be read or signed as it is: the
// client must change it, so the reply is permanent.
type messageError struct {
	reason string // for the client: what is wrong, without internals
	err    error
}

func (e *messageError) Error() string { return "message: " + e.reason + ": " + e.err.Error() }
func (e *messageError) Unwrap() error { return e.err }

// clientError is a failure to read the message from the client.
type clientError struct{ err error }

func (e *clientError) Error() string {
	return "reading the message from the client: " + e.err.Error()
}
func (e *clientError) Unwrap() error { return e.err }

// keyError is a key of the sender's that cannot be used now. The client keeps
// the message and tries again, since an administrator can fix it (unlock the
// keystore, import a renewed certificate) without the sender doing anything.
type keyError struct {
	addr    string
	purpose string // "signing" or "encrypting to yourself"
	err     error
}

func (e *keyError) Error() string {
	return fmt.Sprintf("key for %s (%s): %v", e.addr, e.purpose, e.err)
}
func (e *keyError) Unwrap() error { return e.err }

// storeError is a keystore or certificate cache that cannot be reached (a
// database that is down): no new transaction starts until it is back.
type storeError struct{ err error }

func (e *storeError) Error() string { return "store unavailable: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

var (
	// errSMTPUpstreamLost: the upstream connection broke earlier in this
	// session, and without the password the proxy cannot log in again.
	errSMTPUpstreamLost = errors.New("proxy: the upstream connection was lost earlier in this session")
	// errSMTPShuttingDown: the proxy stops and takes no new transaction.
	errSMTPShuttingDown = errors.New("proxy: shutting down")
	// errSMTPNoStartTLS: the upstream does not offer STARTTLS, which the
	// configuration asks for; it is never skipped.
	errSMTPNoStartTLS = errors.New("proxy: the upstream does not offer STARTTLS")
)

// Replies the proxy makes itself.
var (
	replyAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	replyAuthInTxn    = &gosmtp.SMTPError{Code: 503, EnhancedCode: gosmtp.EnhancedCode{5, 5, 1}, Message: "AUTH is not allowed during a mail transaction"}
	replyBadSASL      = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
	replyNoPassword   = &gosmtp.SMTPError{Code: 504, EnhancedCode: gosmtp.EnhancedCode{5, 7, 4}, Message: "The mail server offers no password login"}
	replyNoDSN        = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 5, 4}, Message: "The mail server does not support DSN parameters"}
	replyNoUTF8       = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 5, 4}, Message: "The mail server does not support SMTPUTF8"}
)

// reply turns err into the client's reply. unexpected says the error is
// none of the known conditions: the caller logs it in full.
func reply(err error) (reply *gosmtp.SMTPError, unexpected bool) {
	var (
		se  *gosmtp.SMTPError
		ref *policy.Refusal
		me  *messageError
		ke  *keyError
		ue  *upstreamError
		ce  *clientError
		ste *storeError
	)
	switch {
	// A refusal at connect is no verdict on this message: the client tries again.
	case errors.As(err, &ue) && ue.stage == stageTLS:
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 1}, Message: "Cannot reach the mail server securely; try again later"}, false
	case errors.As(err, &ue) && ue.stage == stageConnect:
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 1}, Message: "Cannot reach the mail server; try again later"}, false
	case errors.As(err, &se):
		return se, false
	case errors.As(err, &ce) && errors.Is(err, gosmtp.ErrTooLongLine):
		return &gosmtp.SMTPError{Code: 500, EnhancedCode: gosmtp.EnhancedCode{5, 4, 0}, Message: "Line too long"}, false
	case errors.As(err, &ce):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "The message did not arrive whole; try again"}, false
	case errors.As(err, &ref):
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Refused by policy: " + ref.Text}, false
	case errors.As(err, &me):
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "The message cannot be signed or encrypted: " + me.reason}, false
	case errors.As(err, &ste):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "The key and certificate store cannot be reached; try again later"}, false
	case errors.As(err, &ke):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 5}, Message: keyText(ke)}, false
	case errors.Is(err, errTooBig):
		return &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4}, Message: "The message is too large to sign and encrypt here; send it in smaller parts"}, false
	case errors.Is(err, errMemory):
		return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Too many large messages at once; try again later"}, false
	case errors.Is(err, errSMTPShuttingDown):
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down; try again later"}, false
	case errors.Is(err, errSMTPUpstreamLost):
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "The connection to the mail server was lost; connect again"}, false
	case isTimeout(err):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "The mail server did not answer in time; try again later"}, false
	case errors.As(err, &ue):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "The connection to the mail server broke; try again later"}, false
	}
	return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Internal error; try again later"}, true
}

// refusal is the reply to a connection the limits turn away, in Postfix's
// words: the client tries again later.
func refusal(name string, remote net.Addr, why error) *gosmtp.SMTPError {
	r := &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: name + " Error: too many connections; try again later"}
	if ta, ok := remote.(*net.TCPAddr); ok && errors.Is(why, proxy.ErrTooManyFromIP) {
		r.Message = name + " Error: too many connections from " + ta.IP.String()
	}
	return r
}

// goodbye is the last reply of a session that ends between commands (see
// conn.bye): why is a timeout, a pre-login limit or errSMTPShuttingDown.
func goodbye(name string, why error) *gosmtp.SMTPError {
	switch {
	case errors.Is(why, errSMTPShuttingDown):
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: name + " Service shutting down; try again later"}
	case errors.Is(why, proxy.ErrPreAuthTime):
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: name + " Error: too long without logging in"}
	}
	return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: name + " Error: timeout exceeded"}
}

// keyText says what is wrong with a key in words an administrator can act
// on, naming the address but no key id or file.
func keyText(e *keyError) string {
	var what string
	switch {
	case errors.Is(e.err, keystore.ErrLocked):
		return "The keystore is locked; try again later"
	case errors.Is(e.err, keystore.ErrNoIdentity):
		what = "there is no key"
	case errors.Is(e.err, keystore.ErrPending):
		what = "the key has no certificate yet"
	case errors.Is(e.err, keystore.ErrExpired):
		what = "the certificate has expired"
	case errors.Is(e.err, keystore.ErrNotYetValid):
		what = "the certificate is not valid yet"
	case errors.Is(e.err, keystore.ErrNoUsableCert):
		what = "no certificate allows it"
	default:
		what = "the key is not available now"
	}
	return fmt.Sprintf("Cannot use the key of <%s> for %s: %s; try again later or ask your administrator", e.addr, e.purpose, what)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
