package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"

	"github.com/emersion/go-imap/v2"
)

// This file is the one place where an error becomes the IMAP client's
// answer. The upstream's NO and BAD pass through as the upstream worded
// them; a condition the proxy knows becomes an *imap.Error of its own; any
// other error becomes NO [SERVERBUG]. No path, key ID or error text of ours
// ever reaches the client: the session logs those.

// errUpstreamLost marks a failure because the upstream connection closed.
var errUpstreamLost = errors.New("imap: upstream connection lost")

// errNotSupported is a command the upstream cannot serve (it lacks the
// extension) and the proxy does not emulate.
type errNotSupported struct{ what string }

func (e *errNotSupported) Error() string { return "imap: upstream does not support " + e.what }

// dialError is a failure to connect to the upstream, by stage.
type dialError struct {
	stage string // connect, tls, greeting, starttls, capability
	err   error
}

func (e *dialError) Error() string { return "imap: upstream " + e.stage + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// clientError is what the client sees for err. The result is an *imap.Error
// as imapserver expects.
func clientError(err error) *imap.Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*imap.Error](err); ok {
		// The upstream's own answer, or one of ours already made.
		return e
	}
	if e, ok := errors.AsType[*errNotSupported](err); ok {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "The mail server does not support " + e.what}
	}
	if e, ok := errors.AsType[*dialError](err); ok {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: dialReason(e)}
	}
	if isTimeout(err) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "The mail server did not answer in time"}
	}
	if errors.Is(err, errUpstreamLost) || isConnClosed(err) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "The connection to the mail server was lost"}
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
		Text: "Internal error; the proxy's log has the details"}
}

// dialReason says in a few words why the upstream could not be used.
func dialReason(e *dialError) string {
	switch {
	case isTimeout(e.err):
		return "The mail server did not answer in time"
	case e.stage == "connect":
		return "Cannot reach the mail server"
	case e.stage == "starttls":
		return "The mail server does not offer STARTTLS"
	case e.stage == "tls" || isTLSError(e.err):
		return "Secure connection to the mail server failed"
	case e.stage == "login":
		return "The mail server offers no login method the proxy can use"
	}
	return "The mail server is unavailable"
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func isConnClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe)
}

func isTLSError(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	_, ok := errors.AsType[tls.AlertError](err)
	return ok
}

// commandResult is the metrics label for a command's outcome.
func commandResult(err error) string {
	if err == nil {
		return "ok"
	}
	if e := clientError(err); e.Type == imap.StatusResponseTypeBad {
		return "bad"
	}
	return "no"
}
