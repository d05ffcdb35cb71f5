package smtp

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// AUTH is passed through: the proxy logs in upstream with the client's
// credentials, on the session's own upstream connection, and answers with the
// upstream's verdict. A refusal reaches the client verbatim; on success
// go-smtp writes its own "235 2.0.0 Authentication succeeded". The password
// lives only in the sasl.Client that logs in upstream, and is dropped with it.
//
// PLAIN and LOGIN are offered when the upstream offers either: the proxy
// logs in upstream with PLAIN when it can, else LOGIN (Outlook speaks LOGIN
// only, and go-sasl has no LOGIN server). OAUTHBEARER and XOAUTH2 are
// offered when the upstream offers them, and their token goes upstream as
// it came. When the upstream refuses a token it sends an error challenge
// first; the proxy answers it as the mechanism asks and gives the client the
// upstream's final refusal.

const (
	mechOAuthBearer = "OAUTHBEARER"
	mechXOAuth2     = "XOAUTH2"
)

// AuthMechanisms lists what the client is offered (go-smtp asks only over
// TLS or on a listener that allows AUTH without it).
func (s *session) AuthMechanisms() []string {
	up := s.gen.caps.auth
	var mechs []string
	if slices.Contains(up, sasl.Plain) || slices.Contains(up, sasl.Login) {
		mechs = append(mechs, sasl.Plain, sasl.Login)
	}
	for _, m := range []string{mechOAuthBearer, mechXOAuth2} {
		if slices.Contains(up, m) {
			mechs = append(mechs, m)
		}
	}
	return mechs
}

// Auth starts the server side of mech.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if !slices.Contains(s.AuthMechanisms(), mech) {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	s.mu.Lock()
	inTxn := s.txn != nil
	s.mu.Unlock()
	if inTxn {
		return nil, replyAuthInTxn
	}
	switch mech {
	case sasl.Plain:
		return &plainServer{auth: s.authPassword}, nil
	case sasl.Login:
		return &loginServer{auth: s.authPassword}, nil
	}
	return &tokenServer{mech: mech, auth: s.authToken}, nil
}

// authPassword logs in upstream with a name and password.
func (s *session) authPassword(identity, user, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return s.reply(err)
	}
	if err := s.connect(); err != nil {
		return s.reply(err)
	}
	var c sasl.Client
	switch {
	case s.up.supportsAuth(sasl.Plain):
		c = sasl.NewPlainClient(identity, user, password)
	case s.up.supportsAuth(sasl.Login) && (identity == "" || identity == user):
		c = sasl.NewLoginClient(user, password)
	default:
		return replyNoPassword
	}
	return s.authUpstream(c, user, true)
}

// authToken passes an OAuth token upstream. login is the user the client
// says the token is for: the upstream accepted the token, but may not have
// compared the name with it, so login counts for policy and keys only when
// smtp.trust_token_names says so.
func (s *session) authToken(mech string, ir []byte, login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return s.reply(err)
	}
	if err := s.connect(); err != nil {
		return s.reply(err)
	}
	if !s.up.supportsAuth(mech) {
		return gosmtp.ErrAuthUnknownMechanism
	}
	return s.authUpstream(&tokenClient{mech: mech, ir: ir}, login, s.gen.cfg.TrustTokenNames)
}

// authUpstream logs in upstream. After a refusal go-smtp's client sends
// "*" as if cancelling, which Postfix answers by hanging up ("I can break
// rules, too"): so the connection is dropped, and another AUTH makes a new one.
func (s *session) authUpstream(c sasl.Client, login string, verified bool) error {
	if err := s.up.auth(c); err != nil {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			s.gen.metrics.AuthFailures.WithLabelValues("smtp").Inc()
			s.log.Info("upstream refused the login", "login", login, "reply", replyText(se))
			s.up.quit()
			s.up = nil
		}
		return s.reply(err)
	}
	s.setLogin(login, verified)
	s.cc.guard.Authenticated()
	s.log.Info("logged in", "verified", verified)
	return nil
}

// supportsAuth reports whether the upstream offered mech after EHLO.
func (u *upstream) supportsAuth(mech string) bool {
	_, mechs := u.c.Extension("AUTH")
	return slices.Contains(strings.Fields(strings.ToUpper(mechs)), mech)
}

// plainServer is SASL PLAIN (RFC 4616): one message, identity NUL user
// NUL password.
type plainServer struct {
	auth func(identity, user, password string) error
	done bool
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, true, replyBadSASL
	}
	if resp == nil {
		return []byte{}, false, nil // no initial response: ask for it
	}
	p.done = true
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || !utf8.Valid(parts[0]) || !utf8.Valid(parts[1]) {
		return nil, true, replyBadSASL
	}
	return nil, true, p.auth(string(parts[0]), string(parts[1]), string(parts[2]))
}

// loginServer is SASL LOGIN (draft-murchison-sasl-login): the server
// asks "Username:" then "Password:". A client may send the name as the
// initial response, as Outlook does.
type loginServer struct {
	auth func(identity, user, password string) error
	step int
	user string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		if len(resp) == 0 || !validSASLField(resp) {
			return nil, true, replyBadSASL
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		if bytes.IndexByte(resp, 0) >= 0 {
			return nil, true, replyBadSASL
		}
		return nil, true, l.auth("", l.user, string(resp))
	}
	return nil, true, replyBadSASL
}

// validSASLField is a user name the upstream can be given in PLAIN.
func validSASLField(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// tokenServer takes the initial response of OAUTHBEARER (RFC 7628) or
// XOAUTH2 and passes it upstream.
type tokenServer struct {
	mech  string
	auth  func(mech string, ir []byte, login string) error
	asked bool
}

func (t *tokenServer) Next(resp []byte) ([]byte, bool, error) {
	if len(resp) == 0 && !t.asked {
		t.asked = true
		return []byte{}, false, nil
	}
	login, ok := tokenLogin(t.mech, resp)
	if !ok {
		return nil, true, replyBadSASL
	}
	return nil, true, t.auth(t.mech, resp, login)
}

// tokenLogin finds the user a token response names: the authzid of the
// OAUTHBEARER GS2 header ("n,a=user@example.com,^A..."), or the user field
// of XOAUTH2 ("user=user@example.com^Aauth=Bearer ...^A^A").
func tokenLogin(mech string, resp []byte) (string, bool) {
	if !utf8.Valid(resp) || bytes.IndexByte(resp, 0) >= 0 {
		return "", false
	}
	s := string(resp)
	if mech == mechXOAuth2 {
		first, _, _ := strings.Cut(s, "\x01")
		user, ok := strings.CutPrefix(first, "user=")
		return user, ok && user != ""
	}
	gs2, _, ok := strings.Cut(s, "\x01")
	if !ok {
		return "", false
	}
	fields := strings.Split(gs2, ",")
	if len(fields) < 2 || (fields[0] != "n" && fields[0] != "y") {
		return "", false
	}
	a, ok := strings.CutPrefix(fields[1], "a=")
	if !ok || a == "" {
		return "", false
	}
	// RFC 5801: "," and "=" are escaped as =2C and =3D.
	return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(a), true
}

// tokenClient sends a token response upstream. When the upstream
// answers with an error challenge, it sends what the mechanism asks (RFC
// 7628 3.2.3: a single ^A; XOAUTH2: an empty response) so that the upstream
// gives its final reply.
type tokenClient struct {
	mech     string
	ir       []byte
	answered bool
}

func (t *tokenClient) Start() (string, []byte, error) { return t.mech, t.ir, nil }

func (t *tokenClient) Next([]byte) ([]byte, error) {
	if t.answered {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	t.answered = true
	if t.mech == mechOAuthBearer {
		return []byte{1}, nil
	}
	return []byte{}, nil
}
