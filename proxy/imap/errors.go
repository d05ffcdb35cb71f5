package imap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
)

// This file is the one place where one of the proxy's own failures becomes
// the client's answer. The upstream's answers pass through as it worded
// them; a client's mistake is BAD with the reason; a condition the proxy
// knows is NO with a response code; only the proxy's own failure is
// NO [SERVERBUG]. No path, key ID or error text of ours ever reaches the
// client: the session logs those.

// dialAnswer is the client's answer to a login that could not reach the
// upstream.
func dialAnswer(err error) string {
	e, ok := errors.AsType[*dialError](err)
	switch {
	case isTimeout(err):
		return "NO [UNAVAILABLE] The mail server did not answer in time"
	case !ok:
		return "NO [UNAVAILABLE] The mail server is unavailable"
	case e.stage == "connect":
		return "NO [UNAVAILABLE] Cannot reach the mail server"
	case e.stage == "starttls":
		return "NO [UNAVAILABLE] The mail server does not offer STARTTLS"
	case e.stage == "tls" || isTLSError(e.err):
		return "NO [UNAVAILABLE] Secure connection to the mail server failed"
	case e.stage == "login":
		return "NO [UNAVAILABLE] The mail server offers no login method the proxy can use"
	}
	return "NO [UNAVAILABLE] The mail server is unavailable"
}

// syntaxAnswer is the client's answer to a command the relay could not read.
func syntaxAnswer(err error) string {
	switch {
	case errors.Is(err, errLineTooLong):
		return "BAD [TOOBIG] Command line too long"
	case errors.Is(err, errLiteralTooLong):
		return "BAD [TOOBIG] Literal too large"
	}
	return "BAD Error in IMAP command: syntax error"
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// isConnClosed reports an error that only says a connection went away.
func isConnClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

func isTLSError(err error) bool {
	var (
		rec  tls.RecordHeaderError
		alrt tls.AlertError
		cert *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		hn   x509.HostnameError
		inv  x509.CertificateInvalidError
	)
	return errors.As(err, &rec) || errors.As(err, &alrt) || errors.As(err, &cert) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &inv)
}
