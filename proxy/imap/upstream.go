package imap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// Buffer sizes of both legs: a line up to this size is read in one piece.
const bufSize = 64 << 10

// maxUpstreamLine bounds a line the relay holds whole from the upstream (a
// FETCH answer it rewrites, a status line). Lines it passes on are
// streamed, whatever their length.
const maxUpstreamLine = 16 << 20

// upConn is one session's connection to the upstream server.
type upConn struct {
	conn net.Conn // after STARTTLS, the TLS connection
	br   *bufio.Reader
	bw   *bufio.Writer
	caps []string // as of the last CAPABILITY seen
	n    int      // own commands sent, for tags
}

// dialError is a failure to reach the upstream, by stage: connect, tls,
// greeting, starttls, capability or login.
type dialError struct {
	stage string
	err   error
}

func (e *dialError) Error() string { return "imap: upstream " + e.stage + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialUpstream connects to the upstream with TLS as configured and reads its
// greeting and capabilities. STARTTLS that the upstream refuses is an
// error, never a reason to go on in the clear. Everything up to the
// capabilities is bounded by the connect timeout.
func dialUpstream(ctx context.Context, u *proxy.Upstream) (*upConn, error) {
	conn, err := u.Dial(ctx)
	if err != nil {
		stage := "tls"
		if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "dial" || isTimeout(err) {
			stage = "connect"
		}
		return nil, &dialError{stage: stage, err: err}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetDeadline(time.Now().Add(u.ConnectTimeout()))
	c, err := greet(conn, u)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

func greet(conn net.Conn, u *proxy.Upstream) (*upConn, error) {
	c := newUpConn(conn)
	line, err := readLine(c.br, maxUpstreamLine)
	if err != nil {
		return nil, &dialError{stage: "greeting", err: err}
	}
	if !bytes.HasPrefix(line, []byte("* OK")) && !bytes.HasPrefix(line, []byte("* PREAUTH")) {
		return nil, &dialError{stage: "greeting", err: fmt.Errorf("the server said %q", trimEOL(line))}
	}
	c.noteCaps(line)
	if u.Mode == config.TLSStartTLS {
		if c.caps == nil {
			if err := c.capability(); err != nil {
				return nil, &dialError{stage: "capability", err: err}
			}
		}
		if !hasCap(c.caps, "STARTTLS") {
			return nil, &dialError{stage: "starttls", err: errors.New("STARTTLS is not offered")}
		}
		st, err := c.simple("STARTTLS")
		if err != nil {
			return nil, &dialError{stage: "starttls", err: err}
		}
		if !st.ok() {
			return nil, &dialError{stage: "starttls", err: fmt.Errorf("the server said %q", st.line)}
		}
		tc := tls.Client(conn, u.TLS)
		if err := tc.Handshake(); err != nil {
			return nil, &dialError{stage: "tls", err: err}
		}
		c.conn = tc
		c.br.Reset(tc)
		c.bw.Reset(tc)
		c.caps = nil // what was said in the clear does not count (RFC 9051 6.2.1)
	}
	if c.caps == nil {
		if err := c.capability(); err != nil {
			return nil, &dialError{stage: "capability", err: err}
		}
	}
	if !hasCap(c.caps, "IMAP4rev1") && !hasCap(c.caps, "IMAP4rev2") {
		return nil, &dialError{stage: "capability", err: errors.New("not an IMAP4rev1 server")}
	}
	if hasCap(c.caps, "LOGINDISABLED") && !hasCap(c.caps, "AUTH=PLAIN") {
		return nil, &dialError{stage: "login", err: errors.New("neither LOGIN nor AUTH=PLAIN is offered")}
	}
	return c, nil
}

func newUpConn(conn net.Conn) *upConn {
	return &upConn{conn: conn, br: bufio.NewReaderSize(conn, bufSize), bw: bufio.NewWriterSize(conn, bufSize)}
}

// tag returns a new tag for a command of the proxy's own. Own commands are
// only ever in flight alone, so they cannot be confused with the client's.
func (c *upConn) tag() string {
	c.n++
	return "spx" + strconv.Itoa(c.n)
}

// noteCaps remembers the capabilities a response line announces.
func (c *upConn) noteCaps(line []byte) {
	body := trimEOL(line)
	if rest, ok := cutPrefixFold(body, "* CAPABILITY "); ok {
		c.caps = capList(rest)
		return
	}
	if i := indexFold(body, "[CAPABILITY "); i >= 0 {
		rest := body[i+len("[CAPABILITY "):]
		if j := bytes.IndexByte(rest, ']'); j >= 0 {
			c.caps = capList(rest[:j])
		}
	}
}

func capList(b []byte) []string {
	var out []string
	for _, f := range bytes.Fields(b) {
		out = append(out, string(f))
	}
	return out
}

// status is a tagged response: OK, NO or BAD, and the whole line.
type status struct {
	kind string
	line []byte // without the tag
}

func (s status) ok() bool { return s.kind == "OK" }

// parseStatus splits a tagged line into tag and status.
func parseStatus(line []byte) (tag string, st status, err error) {
	body := trimEOL(line)
	sp := bytes.IndexByte(body, ' ')
	if sp <= 0 {
		return "", status{}, fmt.Errorf("%w: response %q", errSyntax, body)
	}
	rest := body[sp+1:]
	kind, _, _ := bytes.Cut(rest, []byte(" "))
	k := string(bytes.ToUpper(kind))
	if k != "OK" && k != "NO" && k != "BAD" {
		return "", status{}, fmt.Errorf("%w: response %q", errSyntax, body)
	}
	return string(body[:sp]), status{kind: k, line: append([]byte(nil), rest...)}, nil
}

// simple sends a command of the proxy's own, without literals, and reads
// the responses up to its tagged one, noting capabilities on the way.
// Untagged responses are returned whole, literals included.
func (c *upConn) simple(command string) (status, error) {
	st, _, err := c.exchange(command, nil)
	return st, err
}

// exchange sends command and reads its responses; cont answers each
// continuation request (nil: none is expected).
func (c *upConn) exchange(command string, cont func(challenge []byte) ([]byte, error)) (status, [][]byte, error) {
	tag := c.tag()
	c.bw.WriteString(tag + " " + command + "\r\n")
	if err := c.bw.Flush(); err != nil {
		return status{}, nil, err
	}
	var untagged [][]byte
	for {
		resp, err := readResponse(c.br, maxUpstreamLine)
		if err != nil {
			return status{}, nil, err
		}
		switch {
		case bytes.HasPrefix(resp, []byte("+")):
			if cont == nil {
				return status{}, nil, errors.New("unexpected continuation request")
			}
			answer, err := cont(trimEOL(bytes.TrimPrefix(bytes.TrimPrefix(resp, []byte("+")), []byte(" "))))
			if err != nil {
				return status{}, nil, err
			}
			c.bw.Write(answer)
			c.bw.WriteString("\r\n")
			if err := c.bw.Flush(); err != nil {
				return status{}, nil, err
			}
		case bytes.HasPrefix(resp, []byte("* ")):
			c.noteCaps(resp)
			untagged = append(untagged, resp)
		default:
			t, st, err := parseStatus(resp)
			if err != nil {
				return status{}, nil, err
			}
			if t != tag {
				return status{}, nil, fmt.Errorf("response for unknown tag %q", t)
			}
			c.noteCaps(resp)
			return st, untagged, nil
		}
	}
}

// readResponse reads one whole response, literals included, of at most
// max bytes.
func readResponse(br *bufio.Reader, max int) ([]byte, error) {
	var resp []byte
	for {
		line, err := readLine(br, max-len(resp))
		if err != nil {
			return nil, err
		}
		resp = append(resp, line...)
		l, ok := literalAt(line)
		if !ok {
			return resp, nil
		}
		if l.n > int64(max-len(resp)) {
			return nil, errLineTooLong
		}
		lit := make([]byte, l.n)
		if _, err := io.ReadFull(br, lit); err != nil {
			return nil, err
		}
		resp = append(resp, lit...)
	}
}

func (c *upConn) capability() error {
	st, err := c.simple("CAPABILITY")
	if err != nil {
		return err
	}
	if !st.ok() || c.caps == nil {
		return fmt.Errorf("no CAPABILITY answer: %q", st.line)
	}
	return nil
}

// loginResult is the upstream's answer to a login: its untagged responses
// and its tagged status, for the client.
type loginResult struct {
	st       status
	untagged [][]byte
}

// login passes a user's password on: LOGIN, or AUTHENTICATE PLAIN where the
// upstream disables LOGIN.
func (c *upConn) login(user, password []byte) (loginResult, error) {
	if hasCap(c.caps, "LOGINDISABLED") {
		ir := base64.StdEncoding.EncodeToString(concat([]byte{0}, user, []byte{0}, password))
		return c.authenticate("PLAIN", []byte(ir), nil)
	}
	var args []byte
	args = c.appendArg(args, user)
	args = append(args, ' ')
	args = c.appendArg(args, password)
	if lits := bytes.Count(args, []byte("}\r\n")); lits > 0 && !hasCap(c.caps, "LITERAL+") && !hasCap(c.caps, "LITERAL-") {
		// A synchronising literal would need a continuation per string:
		// AUTHENTICATE PLAIN carries any password without one.
		ir := base64.StdEncoding.EncodeToString(concat([]byte{0}, user, []byte{0}, password))
		return c.authenticate("PLAIN", []byte(ir), nil)
	}
	st, untagged, err := c.exchange("LOGIN "+string(args), nil)
	return loginResult{st: st, untagged: untagged}, err
}

// appendArg writes s as a quoted string, or as a non-synchronising literal.
func (c *upConn) appendArg(dst, s []byte) []byte {
	if quotable(s) {
		return appendString(dst, s)
	}
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, "+}\r\n"...)
	return append(dst, s...)
}

// authenticate runs AUTHENTICATE mech with the initial response ir, and
// next for each further challenge.
func (c *upConn) authenticate(mech string, ir []byte, next func(challenge []byte) ([]byte, error)) (loginResult, error) {
	command := "AUTHENTICATE " + mech
	sent := false
	if ir != nil && hasCap(c.caps, "SASL-IR") {
		if len(ir) == 0 {
			ir = []byte("=")
		}
		command += " " + string(ir)
		sent = true
	}
	cont := func(challenge []byte) ([]byte, error) {
		if !sent && ir != nil {
			sent = true
			return ir, nil
		}
		if next == nil {
			return []byte("*"), nil // cancel: nothing more to say
		}
		return next(challenge)
	}
	st, untagged, err := c.exchange(command, cont)
	return loginResult{st: st, untagged: untagged}, err
}

// logout ends the connection politely when the upstream still listens,
// and closes it in any case.
func (c *upConn) logout(timeout time.Duration) {
	c.conn.SetDeadline(time.Now().Add(timeout))
	c.simple("LOGOUT")
	c.conn.Close()
}

// probe checks that the upstream answers as configured (connect, TLS,
// greeting, capabilities) and returns what it offers before login.
func probe(ctx context.Context, u *proxy.Upstream) ([]string, error) {
	c, err := dialUpstream(ctx, u)
	if err != nil {
		return nil, err
	}
	c.logout(u.ConnectTimeout())
	return c.caps, nil
}
