package imap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// Before login the proxy speaks for itself: greeting, CAPABILITY, NOOP,
// LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE. A login exists only when the
// upstream accepted the same credentials on a connection of the session's
// own; from then on the session is a relay (relay.go).

const (
	// maxPreauthLine bounds a command line before login, and maxPreauthLiteral
	// a literal in one (a user name or password).
	maxPreauthLine    = 8 << 10
	maxPreauthLiteral = 8 << 10
	// maxBadCommands ends a session before login that keeps sending what
	// the proxy cannot take, as Dovecot does.
	maxBadCommands = 10
)

// session is one client connection.
type session struct {
	p      *Proxy
	opts   proxy.Options // as they were when the client connected
	up     *proxy.Upstream
	upCaps []string // what the upstream offers before login
	gen    uint64   // of the options
	ln     config.Listener
	log    *slog.Logger

	conn    net.Conn     // the client's, TLS once started, over guard
	guard   *proxy.Guard // holds the connection to the limits before login
	release func()       // the limiter's count of the connection
	br      *bufio.Reader
	wmu     sync.Mutex // whole responses are written under it
	bw      *bufio.Writer
	tlsOn   bool

	ctx    context.Context // ends with the session
	cancel context.CancelFunc

	closing    atomic.Bool // the end is ours: no BYE for a lost upstream
	relay      atomic.Pointer[relay]
	tokenLogin bool // logged in with an OAuth token, whose user name is the client's word
}

func newSessionID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run serves the connection until it ends.
func (s *session) run() {
	defer s.close()
	if s.ln.TLS == config.TLSImplicit {
		tc := tls.Server(s.conn, s.opts.Cert.ServerConfig())
		s.conn.SetDeadline(time.Now().Add(s.up.ConnectTimeout()))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			s.log.Debug("IMAP TLS handshake failed", "err", err)
			return
		}
		s.conn.SetDeadline(time.Time{})
		s.conn, s.tlsOn = tc, true
		s.br.Reset(tc)
		s.bw.Reset(s.writer(tc))
	}
	s.write(fmt.Sprintf("* OK [CAPABILITY %s] %s ready.\r\n", s.preauthCaps(), authservID(s.opts.Config.ServerName)))
	up, user, ok := s.preauth()
	if !ok {
		return
	}
	r := newRelay(s, up, user, s.tokenLogin)
	s.relay.Store(r)
	r.run()
}

// writer is how the session writes to the client: each write may wait for
// the client to read at most the command timeout, so that a client that
// stops reading cannot hold the session, and its upstream, forever.
func (s *session) writer(c net.Conn) io.Writer {
	return deadlineWriter{c, s.opts.Config.IMAP.Timeouts.Command.D()}
}

type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.conn.Write(b)
}

// write sends one whole response (or several) to the client.
func (s *session) write(b string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.bw.WriteString(b)
	return s.bw.Flush()
}

// preauthCaps is what the proxy offers before login: what it does itself,
// the login methods it can pass on, and informational ones of the upstream.
func (s *session) preauthCaps() string {
	caps := []string{"IMAP4rev1"}
	if hasCap(s.upCaps, "IMAP4rev2") {
		caps = append(caps, "IMAP4rev2")
	}
	caps = append(caps, "SASL-IR", "LITERAL+", "ID")
	for _, c := range []string{"ENABLE", "IDLE"} {
		if hasCap(s.upCaps, c) {
			caps = append(caps, c)
		}
	}
	if s.ln.TLS == config.TLSStartTLS && !s.tlsOn {
		return strings.Join(append(caps, "STARTTLS", "LOGINDISABLED"), " ")
	}
	caps = append(caps, "AUTH=PLAIN", "AUTH=LOGIN")
	for _, m := range tokenMechs {
		if hasCap(s.upCaps, "AUTH="+m) {
			caps = append(caps, "AUTH="+m)
		}
	}
	return strings.Join(caps, " ")
}

// tokenMechs are the SASL mechanisms passed on to the upstream as they are,
// offered when the upstream offers them.
var tokenMechs = []string{"OAUTHBEARER", "XOAUTH2"}

// loginAllowed reports whether credentials may be sent now: never in the
// clear on a STARTTLS listener before STARTTLS.
func (s *session) loginAllowed() bool {
	return s.ln.TLS != config.TLSStartTLS || s.tlsOn
}

// preauth answers commands until a login succeeds (ok) or the session ends.
func (s *session) preauth() (up *upConn, user string, ok bool) {
	bad := 0
	for {
		s.conn.SetReadDeadline(time.Now().Add(s.opts.Config.IMAP.Timeouts.Command.D()))
		line, err := readLine(s.br, maxPreauthLine)
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				s.write("* BYE Command line too long\r\n")
			case errors.Is(err, proxy.ErrPreAuthTime):
				s.log.Info("IMAP session too long without logging in")
				s.write("* BYE Too long without logging in\r\n")
			case isTimeout(err):
				s.write("* BYE Disconnected for inactivity.\r\n")
			}
			return nil, "", false
		}
		s.conn.SetReadDeadline(time.Time{})
		sc := newScanner(s.br, maxPreauthLine, line)
		tag, name, err := commandHead(sc)
		if err != nil {
			bad++
			s.write("* BAD Error in IMAP command received by server.\r\n")
			if bad >= maxBadCommands {
				s.write("* BYE Too many invalid IMAP commands.\r\n")
				return nil, "", false
			}
			continue
		}
		var answer string
		switch name {
		case "CAPABILITY":
			answer = "* CAPABILITY " + s.preauthCaps() + "\r\n" + tag + " OK Pre-login capabilities listed, post-login capabilities have more.\r\n"
		case "NOOP":
			answer = tag + " OK NOOP completed.\r\n"
		case "LOGOUT":
			s.write("* BYE Logging out\r\n" + tag + " OK Logout completed.\r\n")
			return nil, "", false
		case "ID":
			answer = s.id(sc, tag)
		case "STARTTLS":
			if !s.startTLS(tag) {
				return nil, "", false
			}
			continue
		case "LOGIN":
			up, user, answer = s.login(sc, tag)
		case "AUTHENTICATE":
			up, user, answer = s.authenticate(sc, tag)
		default:
			answer = tag + " BAD Error in IMAP command " + name + ": Unknown command or not allowed before login.\r\n"
		}
		if strings.HasPrefix(answer, tag+" BAD") {
			bad++
		}
		if up != nil {
			// The upstream's answer to the login has already been sent.
			return up, user, true
		}
		if err := s.write(answer); err != nil {
			return nil, "", false
		}
		if bad >= maxBadCommands {
			s.write("* BYE Too many invalid IMAP commands.\r\n")
			return nil, "", false
		}
	}
}

// commandHead reads a command's tag and name, the name upper case.
func commandHead(sc *scanner) (tag, name string, err error) {
	tag, err = sc.atom()
	// A tag is an astring's characters but "+" (RFC 9051 9), which leaves
	// out the list wildcards and the quoted-specials that atom reads.
	if err != nil || strings.ContainsAny(tag, `+%*"\`) {
		return "", "", fmt.Errorf("%w: invalid tag", errSyntax)
	}
	if err := sc.sp(); err != nil {
		return tag, "", err
	}
	name, err = sc.atom()
	return tag, strings.ToUpper(name), err
}

// id answers ID before login with the proxy's own identity (RFC 2971);
// after login ID goes to the upstream.
func (s *session) id(sc *scanner, tag string) string {
	if err := sc.sp(); err != nil {
		return tag + " BAD Error in IMAP command ID: missing argument.\r\n"
	}
	if err := sc.skipValue(); err != nil || !sc.done() {
		return tag + " BAD Error in IMAP command ID: invalid argument.\r\n"
	}
	return "* ID (\"name\" \"smimeproxy\")\r\n" + tag + " OK ID completed.\r\n"
}

// startTLS upgrades the client connection; false ends the session.
func (s *session) startTLS(tag string) bool {
	if s.ln.TLS != config.TLSStartTLS || s.tlsOn {
		return s.write(tag+" BAD TLS is already active or not available here.\r\n") == nil
	}
	if s.br.Buffered() > 0 {
		// Commands sent after STARTTLS before the handshake would be
		// injected into the TLS session (CVE-2011-0411 and its kind).
		s.write(tag + " BAD STARTTLS must be the last command in the packet.\r\n")
		return false
	}
	if s.write(tag+" OK Begin TLS negotiation now.\r\n") != nil {
		return false
	}
	tc := tls.Server(s.conn, s.opts.Cert.ServerConfig())
	s.conn.SetDeadline(time.Now().Add(s.up.ConnectTimeout()))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Debug("IMAP STARTTLS handshake failed", "err", err)
		return false
	}
	s.conn.SetDeadline(time.Time{})
	s.conn, s.tlsOn = tc, true
	s.br.Reset(tc)
	s.bw.Reset(s.writer(tc))
	return true
}

// continueLiteral asks the client for a synchronising literal.
func (s *session) continueLiteral(l literal) error {
	if !l.sync {
		return nil
	}
	return s.write("+ OK\r\n")
}

// login passes LOGIN's credentials on. It returns the upstream connection
// when the upstream accepted them (its answer then already sent), or the
// answer for the client.
func (s *session) login(sc *scanner, tag string) (*upConn, string, string) {
	var user, pass []byte
	err := sc.sp()
	if err == nil {
		user, err = sc.astring(maxPreauthLiteral, s.continueLiteral)
	}
	if err == nil {
		err = sc.sp()
	}
	if err == nil {
		pass, err = sc.astring(maxPreauthLiteral, s.continueLiteral)
	}
	if err == nil && !sc.done() {
		err = fmt.Errorf("%w: extra arguments", errSyntax)
	}
	if err != nil {
		return nil, "", tag + " BAD Error in IMAP command LOGIN: " + syntaxReason(err) + "\r\n"
	}
	if !s.loginAllowed() {
		return nil, "", tag + " NO [PRIVACYREQUIRED] Use STARTTLS before logging in.\r\n"
	}
	return s.passOn(tag, string(user), func(up *upConn) (loginResult, error) { return up.login(user, pass) })
}

func syntaxReason(err error) string {
	switch {
	case errors.Is(err, errLiteralTooLong):
		return "argument too long."
	case errors.Is(err, errLineTooLong):
		return "line too long."
	}
	return "invalid arguments."
}

// authenticate runs AUTHENTICATE: PLAIN and LOGIN are taken by the proxy
// and passed on as a login with the same credentials; the token mechanisms
// are relayed exchange by exchange.
func (s *session) authenticate(sc *scanner, tag string) (*upConn, string, string) {
	bad := func(why string) (*upConn, string, string) {
		return nil, "", tag + " BAD Error in IMAP command AUTHENTICATE: " + why + "\r\n"
	}
	if sc.sp() != nil {
		return bad("missing mechanism.")
	}
	mech, err := sc.atom()
	if err != nil {
		return bad("invalid mechanism.")
	}
	mech = strings.ToUpper(mech)
	var ir []byte
	if !sc.done() {
		if sc.sp() != nil {
			return bad("invalid arguments.")
		}
		a, err := sc.atom()
		if err != nil || !sc.done() {
			return bad("invalid initial response.")
		}
		ir = []byte(a)
	}
	if !s.loginAllowed() {
		return nil, "", tag + " NO [PRIVACYREQUIRED] Use STARTTLS before logging in.\r\n"
	}
	// step sends a challenge and reads the client's answer, base64
	// decoded; cancelled reports "*".
	step := func(challenge string) (answer []byte, cancelled bool, err error) {
		if err := s.write("+ " + challenge + "\r\n"); err != nil {
			return nil, false, err
		}
		line, err := readLine(s.br, maxPreauthLine)
		if err != nil {
			return nil, false, err
		}
		line = trimEOL(line)
		if string(line) == "*" {
			return nil, true, nil
		}
		return line, false, nil
	}
	decode := func(b []byte) ([]byte, bool) {
		if string(b) == "=" {
			return nil, true
		}
		out, err := base64.StdEncoding.DecodeString(string(b))
		return out, err == nil
	}
	const canceled = " BAD Authentication canceled.\r\n"
	switch mech {
	case "PLAIN":
		if ir == nil {
			a, cancelled, err := step("")
			if err != nil {
				return nil, "", ""
			}
			if cancelled {
				return nil, "", tag + canceled
			}
			ir = a
		}
		creds, ok := decode(ir)
		parts := bytes.Split(creds, []byte{0})
		if !ok || len(parts) != 3 || len(parts[1]) == 0 {
			return bad("invalid PLAIN response.")
		}
		authz, authc, pass := parts[0], parts[1], parts[2]
		user := string(authc)
		if len(authz) > 0 {
			user = string(authz)
		}
		return s.passOn(tag, user, func(up *upConn) (loginResult, error) {
			if len(authz) > 0 || hasCap(up.caps, "LOGINDISABLED") {
				return up.authenticate("PLAIN", []byte(base64.StdEncoding.EncodeToString(creds)), nil)
			}
			return up.login(authc, pass)
		})
	case "LOGIN":
		var creds [2][]byte
		prompts := []string{"VXNlcm5hbWU6", "UGFzc3dvcmQ6"} // "Username:", "Password:"
		for i := range creds {
			a, cancelled, err := step(prompts[i])
			if err != nil {
				return nil, "", ""
			}
			if cancelled {
				return nil, "", tag + canceled
			}
			v, ok := decode(a)
			if !ok {
				return bad("invalid LOGIN response.")
			}
			creds[i] = v
		}
		return s.passOn(tag, string(creds[0]), func(up *upConn) (loginResult, error) { return up.login(creds[0], creds[1]) })
	}
	for _, m := range tokenMechs {
		if mech != m || !hasCap(s.upCaps, "AUTH="+m) {
			continue
		}
		if ir == nil {
			a, cancelled, err := step("")
			if err != nil {
				return nil, "", ""
			}
			if cancelled {
				return nil, "", tag + canceled
			}
			ir = a
		}
		creds, ok := decode(ir)
		if !ok {
			return bad("invalid initial response.")
		}
		user := tokenUser(mech, creds)
		up, user, answer := s.passOn(tag, user, func(up *upConn) (loginResult, error) {
			return up.authenticate(mech, ir, func(challenge []byte) ([]byte, error) {
				a, cancelled, err := step(string(challenge))
				if cancelled {
					return []byte("*"), err
				}
				return a, err
			})
		})
		s.tokenLogin = up != nil
		return up, user, answer
	}
	return nil, "", tag + " NO [CANNOT] Unsupported authentication mechanism.\r\n"
}

// tokenUser finds the user name a token login names: OAUTHBEARER's GS2
// header (RFC 7628) or XOAUTH2's user field.
func tokenUser(mech string, creds []byte) string {
	switch mech {
	case "OAUTHBEARER":
		gs2, _, _ := bytes.Cut(creds, []byte{1})
		for _, f := range bytes.Split(gs2, []byte(",")) {
			if a, ok := bytes.CutPrefix(f, []byte("a=")); ok {
				return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(string(a))
			}
		}
	case "XOAUTH2":
		for _, f := range bytes.Split(creds, []byte{1}) {
			if u, ok := bytes.CutPrefix(f, []byte("user=")); ok {
				return string(u)
			}
		}
	}
	return ""
}

// passOn dials the upstream and logs in there with do. On success the
// upstream's answer has been sent and the connection is returned;
// otherwise the answer is returned for the client, and the session stays
// before login.
func (s *session) passOn(tag, user string, do func(*upConn) (loginResult, error)) (*upConn, string, string) {
	m := s.opts.Metrics
	if err := s.opts.StoresAvailable(); err != nil {
		// What the proxy holds of the keys and certificates may be stale:
		// no new session until the store answers again.
		s.log.Warn("IMAP login refused: the store is unavailable", "err", err)
		return nil, "", tag + " NO [UNAVAILABLE] The proxy cannot reach its key store; try again later\r\n"
	}
	start := time.Now()
	up, err := dialUpstream(s.ctx, s.up)
	m.UpstreamSeconds.WithLabelValues("imap", "connect").Observe(time.Since(start).Seconds())
	if err != nil {
		stage := "connect"
		if de, ok := errors.AsType[*dialError](err); ok && (de.stage == "tls" || de.stage == "starttls") {
			stage = "tls"
		}
		m.UpstreamErrors.WithLabelValues("imap", stage).Inc()
		s.log.Warn("IMAP upstream unavailable at login", "err", err)
		return nil, "", tag + " " + dialAnswer(err) + "\r\n"
	}
	start = time.Now()
	up.conn.SetDeadline(time.Now().Add(s.opts.Config.IMAP.Timeouts.Command.D()))
	res, err := do(up)
	up.conn.SetDeadline(time.Time{})
	m.UpstreamSeconds.WithLabelValues("imap", "auth").Observe(time.Since(start).Seconds())
	if err != nil {
		up.conn.Close()
		m.UpstreamErrors.WithLabelValues("imap", "auth").Inc()
		s.log.Warn("IMAP upstream login failed", "err", err)
		if isTimeout(err) {
			return nil, "", tag + " NO [UNAVAILABLE] The mail server did not answer in time\r\n"
		}
		return nil, "", tag + " NO [UNAVAILABLE] The connection to the mail server was lost\r\n"
	}
	var b strings.Builder
	for _, u := range res.untagged {
		b.Write(filterCapLine(u))
	}
	b.WriteString(tag + " ")
	b.Write(filterCapLine(res.st.line))
	b.WriteString("\r\n")
	if !res.st.ok() {
		up.logout(s.up.ConnectTimeout())
		m.AuthFailures.WithLabelValues("imap").Inc()
		s.log.Info("IMAP login refused by the upstream", "login", user)
		return nil, "", b.String()
	}
	if err := s.write(b.String()); err != nil {
		up.conn.Close()
		return nil, "", ""
	}
	s.guard.Authenticated()
	s.log = s.log.With("user", user)
	s.log.Info("IMAP login")
	return up, user, ""
}
