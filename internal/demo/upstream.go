// Package demo is what `smimeproxy demo` runs besides the proxies: a mail
// server in process (SMTP submission delivering into IMAP mailboxes in
// memory) and a demo certificate authority with an identity per user.
package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Upstream is a mail server for the demo: SMTP with AUTH PLAIN that delivers
// to its users' INBOX, and IMAP over the same mailboxes. Both listen on
// loopback without TLS.
type Upstream struct {
	SMTPAddr, IMAPAddr string

	users map[string]*user
	smtp  *smtp.Server
	imap  *imapserver.Server
	wg    sync.WaitGroup
}

type user struct {
	password string
	mem      *imapmemserver.User
}

// StartUpstream starts the mail server for the given users (address to
// password) on free loopback ports.
func StartUpstream(users map[string]string, log *slog.Logger) (*Upstream, error) {
	u := &Upstream{users: map[string]*user{}}
	mem := imapmemserver.New()
	for addr, pw := range users {
		mu := imapmemserver.NewUser(addr, pw)
		if err := mu.Create("INBOX", nil); err != nil {
			return nil, fmt.Errorf("demo: create INBOX: %w", err)
		}
		if err := mu.Create("Sent", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrSent}}); err != nil {
			return nil, fmt.Errorf("demo: create Sent: %w", err)
		}
		mem.AddUser(mu)
		u.users[strings.ToLower(addr)] = &user{password: pw, mem: mu}
	}

	smtpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: listen: %w", err)
	}
	imapLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		smtpLn.Close()
		return nil, fmt.Errorf("demo: listen: %w", err)
	}
	u.SMTPAddr, u.IMAPAddr = smtpLn.Addr().String(), imapLn.Addr().String()

	u.smtp = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{up: u}, nil
	}))
	u.smtp.Domain = "upstream.demo.test"
	u.smtp.AllowInsecureAuth = true
	u.smtp.MaxMessageBytes = 50 << 20
	u.smtp.ReadTimeout = time.Minute
	u.smtp.WriteTimeout = time.Minute
	u.smtp.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)

	u.imap = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
		Logger:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})

	u.wg.Add(2)
	go func() { defer u.wg.Done(); u.smtp.Serve(smtpLn) }()
	go func() { defer u.wg.Done(); u.imap.Serve(imapLn) }()
	return u, nil
}

// Close stops both servers.
func (u *Upstream) Close() error {
	err := errors.Join(u.smtp.Close(), u.imap.Close())
	u.wg.Wait()
	return err
}

// smtpSession is one submission session: AUTH PLAIN as a user, then mail to
// users of this server only.
type smtpSession struct {
	up    *Upstream
	login string
	from  string
	rcpts []*user
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		u, ok := s.up.users[strings.ToLower(username)]
		if !ok || u.password != password || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		s.login = strings.ToLower(username)
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.login == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	u, ok := s.up.users[strings.ToLower(to)]
	if !ok {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here: the demo delivers only to its own users"}
	}
	s.rcpts = append(s.rcpts, u)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	for _, u := range s.rcpts {
		if _, err := u.mem.Append("INBOX", literal{bytes.NewReader(msg)}, &imap.AppendOptions{Time: time.Now()}); err != nil {
			return fmt.Errorf("deliver: %w", err)
		}
	}
	return nil
}

func (s *smtpSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *smtpSession) Logout() error { return nil }

// literal is a message as IMAP's APPEND takes it.
type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }
