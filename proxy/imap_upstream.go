package proxy

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"smimeproxy/config"
)

// imapUpstream is one connection to the upstream IMAP server: imapclient on
// the TCP connection underneath, which is what deadlines and Close act on
// (imapclient keeps the plain connection even after STARTTLS).
type imapUpstream struct {
	client *imapclient.Client
	conn   net.Conn
	caps   imap.CapSet
}

// dialIMAP connects to the upstream, with TLS as configured, and reads its
// greeting and capabilities. STARTTLS that the upstream refuses is an error,
// never a reason to go on in the clear. Everything up to the capabilities is
// bounded by the upstream's connect timeout.
func dialIMAP(ctx context.Context, u *Upstream, handler *imapclient.UnilateralDataHandler) (*imapUpstream, error) {
	conn, err := u.Dial(ctx)
	if err != nil {
		stage := "tls"
		if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "dial" {
			stage = "connect"
		}
		if isTimeout(err) {
			stage = "connect"
		}
		return nil, &dialError{stage: stage, err: err}
	}
	// imapclient moves the connection's read deadline itself, so a timer
	// that closes the connection is what bounds the greeting.
	timer := time.AfterFunc(u.timeout, func() { conn.Close() })
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	up, err := greetIMAP(conn, u, handler)
	expired := !timer.Stop()
	stop()
	if err != nil {
		conn.Close()
		if expired || ctx.Err() != nil {
			err = &dialError{stage: "greeting", err: errors.Join(context.DeadlineExceeded, err)}
		}
		return nil, err
	}
	return up, nil
}

func greetIMAP(conn net.Conn, u *Upstream, handler *imapclient.UnilateralDataHandler) (*imapUpstream, error) {
	opts := &imapclient.Options{UnilateralDataHandler: handler}
	var c *imapclient.Client
	if u.Mode == config.TLSStartTLS {
		opts.TLSConfig = u.TLS
		var err error
		if c, err = imapclient.NewStartTLS(conn, opts); err != nil {
			stage := "tls"
			if _, ok := errors.AsType[*imap.Error](err); ok {
				stage = "starttls"
			}
			return nil, &dialError{stage: stage, err: err}
		}
	} else {
		c = imapclient.New(conn, opts)
	}
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, &dialError{stage: "greeting", err: err}
	}
	caps := c.Caps()
	if caps == nil {
		c.Close()
		return nil, &dialError{stage: "capability", err: errors.New("no CAPABILITY answer")}
	}
	if !caps.Has(imap.CapIMAP4rev1) && !caps.Has(imap.CapIMAP4rev2) {
		c.Close()
		return nil, &dialError{stage: "capability", err: errors.New("not an IMAP4rev1 server")}
	}
	if !canLogin(caps) {
		c.Close()
		return nil, &dialError{stage: "login", err: errors.New("neither LOGIN nor AUTH=PLAIN is offered")}
	}
	return &imapUpstream{client: c, conn: conn, caps: caps}, nil
}

// canLogin reports whether the proxy can pass a user's credentials on.
func canLogin(caps imap.CapSet) bool {
	return !caps.Has(imap.CapLoginDisabled) || caps.Has(imap.Cap("AUTH=PLAIN"))
}

// login passes the user's credentials on: LOGIN, or AUTHENTICATE PLAIN where
// the upstream disables LOGIN. The upstream's refusal is returned as it
// worded it.
func (up *imapUpstream) login(username, password string) error {
	if up.caps.Has(imap.CapLoginDisabled) {
		return up.client.Authenticate(sasl.NewPlainClient("", username, password))
	}
	return up.client.Login(username, password).Wait()
}

// logout ends the connection politely when the upstream still listens, and
// closes it in any case.
func (up *imapUpstream) logout(timeout time.Duration) {
	timer := time.AfterFunc(timeout, func() { up.conn.Close() })
	up.client.Logout().Wait()
	timer.Stop()
	up.client.Close()
}

// probeIMAP checks that the upstream answers as configured: connect, TLS,
// greeting, capabilities, LOGOUT.
func probeIMAP(ctx context.Context, u *Upstream) (imap.CapSet, error) {
	up, err := dialIMAP(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	up.logout(u.timeout)
	return up.caps, nil
}
