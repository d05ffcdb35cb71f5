package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// upstream is one connection to the upstream submission server. Every
// wait on it is bounded: the connect timeout covers the greeting, STARTTLS
// and EHLO, the command timeout each command, the data timeout the message
// and the final reply. Any failure other than a reply leaves it broken.
type upstream struct {
	c        *gosmtp.Client
	conn     net.Conn  // under c: closing it ends every wait at once
	plain    *lineConn // what c reads and writes its plaintext through: conn, or TLS over it
	chunking bool      // the upstream offers CHUNKING (BDAT)
	timeouts config.Timeouts
	stop     func() bool // undoes closing conn when the session's context ends
	broken   bool
	open     bool // a transaction is open: MAIL was accepted, the final DATA reply not yet read
	metrics  *proxy.Metrics
}

// dialSMTPUpstream connects, greets, upgrades with STARTTLS when configured
// (failing, never downgrading, when the server does not offer it) and says
// EHLO. The connection is closed when ctx ends.
func dialSMTPUpstream(ctx context.Context, g *gen) (*upstream, error) {
	start := time.Now()
	conn, err := g.up.Dial(ctx)
	if err != nil {
		g.metrics.UpstreamErrors.WithLabelValues("smtp", stageConnect).Inc()
		return nil, &upstreamError{stage: stageConnect, err: err}
	}
	// go-smtp sets deadlines of its own during the greeting, replacing any
	// set here: a timer that closes the connection bounds the whole setup.
	setup, cancel := context.WithTimeout(ctx, g.timeouts.Connect.D())
	defer cancel()
	stopSetup := context.AfterFunc(setup, func() { conn.Close() })
	c, plain, stage, err := handshake(setup, conn, g)
	if !stopSetup() { // the timer closed the connection, maybe just as the handshake ended
		if err == nil {
			err, stage = setup.Err(), stageConnect
		} else {
			err = fmt.Errorf("%w (%v)", setup.Err(), err)
		}
	}
	if err != nil {
		conn.Close()
		g.metrics.UpstreamErrors.WithLabelValues("smtp", stage).Inc()
		return nil, &upstreamError{stage: stage, err: fmt.Errorf("upstream %s: %w", g.up.Addr, err)}
	}
	g.metrics.UpstreamSeconds.WithLabelValues("smtp", "connect").Observe(time.Since(start).Seconds())
	c.CommandTimeout = g.timeouts.Command.D()
	c.SubmissionTimeout = g.timeouts.Data.D()
	chunking, _ := c.Extension("CHUNKING")
	u := &upstream{c: c, conn: conn, plain: plain, chunking: chunking, timeouts: g.timeouts, metrics: g.metrics}
	u.stop = context.AfterFunc(ctx, func() { abort(conn) })
	return u, nil
}

// handshake reads the greeting and says EHLO, with STARTTLS between
// them when the upstream is configured for it. It returns the client and
// the plaintext side of its connection (see writeBody and lineConn), or
// the stage that failed, for the metric.
func handshake(ctx context.Context, conn net.Conn, g *gen) (*gosmtp.Client, *lineConn, string, error) {
	var plain net.Conn = conn
	if g.up.Mode == config.TLSStartTLS {
		tc, stage, err := startTLS(ctx, conn, g.up.TLS, g.name)
		if err != nil {
			return nil, nil, stage, err
		}
		plain = newGreeted(tc)
	}
	lc := newLineConn(plain)
	c := gosmtp.NewClient(lc)
	if err := c.Hello(g.name); err != nil {
		var se *gosmtp.SMTPError
		if g.up.Mode == config.TLSStartTLS && !errors.As(err, &se) {
			return nil, nil, stageTLS, err
		}
		return nil, nil, stageConnect, err
	}
	return c, lc, "", nil
}

// fail records err: a reply from the upstream is returned as it is; any
// other failure aborts the connection (see abort), so that no half-written
// message can ever be completed, and is returned as an *upstreamError.
func (u *upstream) fail(stage string, err error) error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		if se.Code == 421 {
			u.close()
		}
		return se
	}
	u.broken, u.open = true, false
	abort(u.conn)
	u.metrics.UpstreamErrors.WithLabelValues("smtp", stage).Inc()
	return &upstreamError{stage: stage, err: err}
}

func (u *upstream) close() {
	u.broken = true
	u.open = false
	u.conn.Close()
}

// abort resets the TCP connection under conn (TLS or not) instead of
// closing it: the kernel drops what it has not sent yet and the server
// gets a reset. Once the end of a message is written, a close would still
// deliver it, and the server would accept a message whose acceptance the
// client never hears of and then sends again; a reset keeps back whatever
// has not left yet. What the server has already read, it may still accept:
// see the README on the one window SMTP cannot close.
func abort(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn() // no close_notify: that would be a clean end
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	conn.Close()
}

func (u *upstream) auth(c sasl.Client) error {
	start := time.Now()
	defer func() { u.metrics.UpstreamSeconds.WithLabelValues("smtp", "auth").Observe(time.Since(start).Seconds()) }()
	if err := u.c.Auth(c); err != nil {
		return u.fail(stageAuth, err)
	}
	return nil
}

// supports reports whether the upstream offered an extension after EHLO.
func (u *upstream) supports(ext string) bool {
	ok, _ := u.c.Extension(ext)
	return ok
}

func (u *upstream) mail(from string, opts *gosmtp.MailOptions) error {
	if err := u.c.Mail(from, opts); err != nil {
		return u.fail(stageCommand, err)
	}
	u.open = true
	return nil
}

func (u *upstream) rcpt(to string, opts *gosmtp.RcptOptions) error {
	if err := u.c.Rcpt(to, opts); err != nil {
		return u.fail(stageCommand, err)
	}
	return nil
}

// reset aborts the open transaction.
func (u *upstream) reset() error {
	if err := u.c.Reset(); err != nil {
		return u.fail(stageCommand, err)
	}
	u.open = false
	return nil
}

// data sends msg and returns the upstream's final reply: a 250 as a
// *smtp.SMTPError with Code 250, which go-smtp writes to the client as it
// is, or the upstream's refusal as an error. It goes as one BDAT chunk
// when the upstream takes them and that stores the same bytes as DATA
// (see crlfLines), else as DATA.
func (u *upstream) data(msg []byte) (*gosmtp.SMTPError, error) {
	start := time.Now()
	defer func() { u.metrics.UpstreamSeconds.WithLabelValues("smtp", "data").Observe(time.Since(start).Seconds()) }()
	if u.chunking && crlfLines(msg) {
		return u.bdat(msg)
	}
	w, err := u.c.Data()
	if err != nil {
		return nil, u.fail(stageData, err)
	}
	// go-smtp sets no deadline while the body is written.
	if err := u.conn.SetDeadline(time.Now().Add(u.timeouts.Data.D())); err != nil {
		return nil, u.fail(stageData, err)
	}
	if err := writeBody(u.plain, w, msg); err != nil {
		return nil, u.fail(stageData, err)
	}
	resp, err := w.CloseWithResponse()
	u.open = false // accepted or refused, the transaction is over
	if err != nil {
		return nil, u.fail(stageData, err)
	}
	return parseOK(resp.StatusText), nil
}

// bdat sends msg as one BDAT LAST chunk, in as few writes as it can, and
// reads the reply itself: go-smtp's client has no BDAT. Its deadlines are
// those go-smtp's client sets for DATA: the data timeout for the message,
// again for the reply, none after it.
func (u *upstream) bdat(msg []byte) (*gosmtp.SMTPError, error) {
	if err := u.conn.SetDeadline(time.Now().Add(u.timeouts.Data.D())); err != nil {
		return nil, u.fail(stageData, err)
	}
	if err := writeChunk(u.plain, msg); err != nil {
		return nil, u.fail(stageData, err)
	}
	if err := u.conn.SetDeadline(time.Now().Add(u.timeouts.Data.D())); err != nil {
		return nil, u.fail(stageData, err)
	}
	text, err := u.plain.readReply(250)
	u.open = false                      // accepted or refused, the transaction is over
	_ = u.conn.SetDeadline(time.Time{}) // as go-smtp does after a reply
	if err != nil {
		return nil, u.fail(stageData, err)
	}
	return parseOK(text), nil
}

// quit ends the session politely, if the connection still works, and closes it.
func (u *upstream) quit() {
	if !u.broken {
		_ = u.c.Quit()
	}
	u.stop()
	u.close()
}

// parseOK makes the reply go-smtp writes to the client from the text of the
// upstream's 250 reply ("2.0.0 Ok: queued as X"), keeping its enhanced code.
func parseOK(text string) *gosmtp.SMTPError {
	r := &gosmtp.SMTPError{Code: 250, Message: text}
	code, msg, ok := enhancedCode(text)
	if !ok || !strings.HasPrefix(text, "2.") {
		return r
	}
	for _, n := range code {
		if n < 0 || n > 999 {
			return r
		}
	}
	r.EnhancedCode, r.Message = code, msg
	return r
}

// upstreamCaps is what the upstream offers, as the probe at start found it.
type upstreamCaps struct {
	known bool  // the probe succeeded; otherwise the rest is a conservative guess
	size  int64 // SIZE limit; 0: none given
	utf8  bool
	dsn   bool
	auth  []string // AUTH mechanisms, upper case
}

// probeSMTP connects as a session would and reads what the upstream offers
// after EHLO (after STARTTLS, since servers offer AUTH only then).
func probeSMTP(ctx context.Context, g *gen) (upstreamCaps, error) {
	u, err := dialSMTPUpstream(ctx, g)
	if err != nil {
		return upstreamCaps{}, err
	}
	defer u.quit()
	caps := upstreamCaps{known: true, utf8: u.supports("SMTPUTF8"), dsn: u.supports("DSN")}
	if n, ok := u.c.MaxMessageSize(); ok {
		caps.size = int64(n)
	}
	if _, mechs := u.c.Extension("AUTH"); mechs != "" {
		caps.auth = strings.Fields(strings.ToUpper(mechs))
	}
	return caps, nil
}
