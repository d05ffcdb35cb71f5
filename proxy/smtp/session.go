package smtp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/internal/mailaddr"
)

// session is one client's session, from EHLO to the end of the
// connection (STARTTLS starts a new one, as RFC 3207 asks). It owns one
// upstream connection, made at AUTH, and a context that ends with it.
//
// MAIL and RCPT go upstream at once, and the client gets the upstream's
// refusals verbatim. When the upstream accepts, go-smtp writes its own text
// after the same 250 code ("250 2.0.0 Roger, accepting mail from <a>"); the
// DATA reply, which matters, is the upstream's own text.
type session struct {
	gen    *gen
	conn   *gosmtp.Conn
	cc     *conn
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	// mu is held by each command: go-smtp runs Data on a goroutine of its
	// own for BDAT, while Reset and Logout come from the connection's.
	mu    sync.Mutex
	login string // the name the upstream accepted; empty before AUTH
	// verified says login is who the user is, for policy and keys: true
	// after a password login; after a token login, only when configured.
	verified bool
	up       *upstream
	lost     bool         // the upstream connection broke: the session can only end
	txn      *transaction // the client's envelope, relayed as it came
}

// transaction is the envelope of the client's current transaction.
type transaction struct {
	from  string
	opts  *gosmtp.MailOptions
	rcpts []rcpt
}

type rcpt struct {
	addr string
	opts *gosmtp.RcptOptions
}

var _ gosmtp.AuthSession = (*session)(nil)

// NewSession starts a session at the client's EHLO (go-smtp's Backend).
func (g *gen) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	cc := connOf(c.Conn())
	if cc == nil {
		return nil, errors.New("proxy: SMTP connection of an unknown kind")
	}
	cc.setSMTP(c)
	ctx, cancel := context.WithCancel(g.srv.base)
	return &session{
		gen: g, conn: c, cc: cc, ctx: ctx, cancel: cancel,
		log: g.log.With("session", cc.id, "remote", cc.RemoteAddr().String()),
	}, nil
}

// reply turns err into the client's reply (see reply.go), logs what was not
// expected, and hangs up after a 421, which says the connection closes.
func (s *session) reply(err error) *gosmtp.SMTPError {
	r, unexpected := reply(err)
	if unexpected {
		s.log.Error("unexpected failure", "err", err)
	}
	if r.Code == 421 {
		s.cc.hangup()
	}
	return r
}

// ready says why no transaction can start now, if so.
func (s *session) ready() error {
	s.cc.mu.Lock()
	draining := s.cc.state == connDraining
	s.cc.mu.Unlock()
	switch {
	case draining:
		return errSMTPShuttingDown
	case s.lost || s.up != nil && s.up.broken:
		s.lost = true
		return errSMTPUpstreamLost
	}
	return nil
}

// connect makes the session's upstream connection.
func (s *session) connect() error {
	if s.up != nil {
		return nil
	}
	u, err := dialSMTPUpstream(s.ctx, s.gen)
	if err != nil {
		s.lost = true
		s.log.Warn("cannot connect to the upstream", "err", err)
		return err
	}
	s.up = u
	return nil
}

// Mail relays MAIL FROM. Unless the configuration says otherwise, the client
// must have logged in: the proxy is never an open relay.
func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return s.reply(err)
	}
	if s.login == "" && s.gen.cfg.RequireAuth {
		return replyAuthRequired
	}
	if err := s.gen.opts.StoresAvailable(); err != nil {
		s.log.Warn("the store cannot be reached; refusing the transaction for now", "err", err)
		return s.reply(&storeError{err: err})
	}
	if err := s.connect(); err != nil {
		return s.reply(err)
	}
	// go-smtp's client drops what the upstream does not support without a
	// word; a client must hear it instead.
	if opts != nil && (opts.Return != "" || opts.EnvelopeID != "") && !s.up.supports("DSN") {
		return replyNoDSN
	}
	if opts != nil && opts.UTF8 && !s.up.supports("SMTPUTF8") {
		return replyNoUTF8
	}
	if err := s.up.mail(from, opts); err != nil {
		return s.reply(err)
	}
	s.txn = &transaction{from: from, opts: opts}
	// Without require_auth, a session that got this far counts as logged in
	// for the connection limits: the upstream took its MAIL FROM.
	s.cc.guard.Authenticated()
	return nil
}

// Rcpt relays RCPT TO; the upstream's refusal reaches the client verbatim.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return s.reply(err)
	}
	if s.txn == nil || s.up == nil {
		return &gosmtp.SMTPError{Code: 503, EnhancedCode: gosmtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if opts != nil && (len(opts.Notify) > 0 || opts.OriginalRecipient != "") && !s.up.supports("DSN") {
		return replyNoDSN
	}
	if err := s.up.rcpt(to, opts); err != nil {
		return s.reply(err)
	}
	s.txn.rcpts = append(s.txn.rcpts, rcpt{addr: to, opts: opts})
	return nil
}

// Data reads the message, has policy decide, signs and encrypts it, sends
// it upstream and answers with the upstream's final reply. Until the
// upstream accepts, the client is told nothing but a failure.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// With BDAT, go-smtp reads the chunks and hands them over a pipe.
	_, chunked := r.(*io.PipeReader)
	s.cc.setBusy(true, !chunked)
	defer s.cc.setBusy(false, false)
	start := time.Now()
	if s.lost || s.up == nil || s.up.broken || s.txn == nil {
		s.lost = true
		return s.reply(errSMTPUpstreamLost)
	}
	_ = s.conn.Conn().SetReadDeadline(start.Add(s.gen.timeouts.Data.D()))
	var declared int64
	if s.txn.opts != nil {
		declared = s.txn.opts.Size
	}
	raw, held, err := readMessage(r, s.gen.budget, readCost(s.gen.policy.Opaque), declared)
	if err != nil {
		// Nothing went upstream but MAIL and RCPT; Reset or Logout abort them.
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) && !errors.Is(err, errMemory) { // too large is go-smtp's own reply
			// What follows on the connection is the rest of a message, not
			// commands: the session ends with the reply.
			err = &clientError{err: err}
			s.cc.hangup()
		}
		reply := s.reply(err)
		s.log.Info("message", "from", s.txn.from, "action", "", "rcpts", len(s.txn.rcpts),
			"dur_ms", time.Since(start).Milliseconds(), "reply", replyText(reply), "err", err.Error())
		return reply
	}
	return s.deliver(raw, held, start)
}

// Reset aborts the transaction, upstream too if it is still open there.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txn = nil
	if s.up != nil && s.up.open && !s.up.broken {
		if err := s.up.reset(); err != nil {
			s.log.Info("upstream RSET failed", "err", err)
		}
	}
}

// Logout ends the session: the upstream gets QUIT, and the session's
// context ends. A Data still running (BDAT after the client went away) is
// cut short first.
func (s *session) Logout() error {
	if !s.mu.TryLock() {
		s.cancel()
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.up != nil {
		s.up.quit()
		s.up = nil
	}
	s.cancel()
	return nil
}

// setLogin records the login, normalized, for the log and, when verified,
// for policy and keys.
func (s *session) setLogin(name string, verified bool) {
	s.login, s.verified = mailaddr.Normalize(name), verified
	s.log = s.log.With("user", s.login)
}
