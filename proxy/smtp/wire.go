package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	gosmtp "github.com/emersion/go-smtp"
)

// go-smtp's client writes a message body one byte at a time through
// net/textproto's dot writer, in 4 KiB writes: for a large message that
// is most of the proxy's own cost. The proxy writes the body itself,
// dot-stuffed in large writes, onto the plaintext side of the upstream
// connection, so it needs that connection: with STARTTLS it says the
// plaintext EHLO and STARTTLS itself and hands go-smtp the TLS connection.

// startTLS reads the greeting on conn, says EHLO as name, asks for
// STARTTLS and completes a handshake verified with tc. It returns the TLS
// connection, with the stage that failed and why otherwise. Like go-smtp,
// it fails, never downgrades, when the server does not offer STARTTLS.
func startTLS(ctx context.Context, conn net.Conn, tc *tls.Config, name string) (*tls.Conn, string, error) {
	br := bufio.NewReader(conn)
	r := textproto.NewReader(br)
	if _, _, err := r.ReadResponse(220); err != nil {
		return nil, stageConnect, replyError(err)
	}
	if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", name); err != nil {
		return nil, stageConnect, err
	}
	_, msg, err := r.ReadResponse(250)
	var te *textproto.Error
	switch {
	case errors.As(err, &te) && (te.Code == 500 || te.Code == 502):
		return nil, stageTLS, errSMTPNoStartTLS // no EHLO, so no extensions
	case err != nil:
		return nil, stageConnect, replyError(err)
	case !offers(msg, "STARTTLS"):
		return nil, stageTLS, errSMTPNoStartTLS
	}
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return nil, stageConnect, err
	}
	if _, _, err := r.ReadResponse(220); err != nil {
		return nil, stageConnect, replyError(err)
	}
	if br.Buffered() > 0 {
		// Whatever came before the handshake would be read as if it came
		// over TLS (the STARTTLS injection of CVE-2011-0411).
		return nil, stageTLS, errors.New("the upstream sent data after its STARTTLS reply, before TLS")
	}
	tlsConn := tls.Client(conn, tc)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return nil, stageTLS, err
	}
	return tlsConn, "", nil
}

// replyError makes a reply the server refused with an *smtp.SMTPError, as
// go-smtp's client returns it; other errors stay as they are.
func replyError(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		return &gosmtp.SMTPError{Code: te.Code, Message: te.Msg}
	}
	return err
}

// offers reports whether an EHLO reply (its lines after the first) names
// the extension ext.
func offers(ehlo, ext string) bool {
	lines := strings.Split(ehlo, "\n")
	for _, l := range lines[1:] {
		if kw, _, _ := strings.Cut(l, " "); strings.EqualFold(kw, ext) {
			return true
		}
	}
	return false
}

// greeted is the TLS connection after a STARTTLS that startTLS made:
// go-smtp's client, new on it, first waits for a greeting, so it reads one
// before the server's replies. The server's greeting came before TLS.
type greeted struct {
	net.Conn
	pending []byte
}

func newGreeted(c net.Conn) *greeted {
	return &greeted{Conn: c, pending: []byte("220 greeted before STARTTLS\r\n")}
}

func (g *greeted) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// lineConn is the connection under go-smtp's client. Its reads stop at
// the end of a line, so that go-smtp's buffered reader, which fills only
// when it holds no whole line, never holds more than the reply it reads:
// once it has read one, whatever the server sends next is in br, where
// readReply reads the reply to BDAT, which go-smtp's client cannot send,
// and go-smtp reads on after it, as if it had read that reply itself.
type lineConn struct {
	net.Conn
	br   *bufio.Reader
	text *textproto.Reader
}

func newLineConn(c net.Conn) *lineConn {
	br := bufio.NewReader(c)
	return &lineConn{Conn: c, br: br, text: textproto.NewReader(br)}
}

func (c *lineConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := c.br.Peek(1); err != nil {
		return 0, err
	}
	b, _ := c.br.Peek(min(c.br.Buffered(), len(p)))
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	}
	n := copy(p, b)
	_, _ = c.br.Discard(n)
	return n, nil
}

// readReply reads a reply as go-smtp's client does: a code other than
// want is an *smtp.SMTPError, as go-smtp makes it, which reaches the
// client verbatim.
func (c *lineConn) readReply(want int) (string, error) {
	_, text, err := c.text.ReadResponse(want)
	var te *textproto.Error
	if errors.As(err, &te) {
		return "", smtpError(te)
	}
	return text, err
}

// smtpError is what go-smtp's client makes of a refusal (its toSMTPErr):
// the enhanced code, when there is one, apart from the text.
func smtpError(te *textproto.Error) *gosmtp.SMTPError {
	se := &gosmtp.SMTPError{Code: te.Code, Message: te.Msg}
	if code, msg, ok := enhancedCode(te.Msg); ok {
		se.EnhancedCode, se.Message = code, msg
	}
	return se
}

// enhancedCode splits the enhanced status code (RFC 2034) off the start of
// a reply's text, as go-smtp's client does: ok is false when the text
// starts with none. Continuation lines repeat the code; go-smtp writes it
// again, so msg is without it.
func enhancedCode(text string) (code gosmtp.EnhancedCode, msg string, ok bool) {
	first, rest, ok := strings.Cut(text, " ")
	if !ok {
		return code, "", false
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return code, "", false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return code, "", false
		}
		code[i] = n
	}
	return code, strings.ReplaceAll(rest, "\n"+first+" ", "\n"), true
}

// crlfLines reports whether every line of msg, the last one too, ends in
// CRLF and no CR stands alone. DATA's dot writer (net/textproto's, which
// go-smtp's client uses and writeBody copies) changes such a message only
// by doubling leading dots, which the server takes away again, so that a
// BDAT chunk of msg is stored as DATA would store it. Others go as DATA.
func crlfLines(msg []byte) bool {
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		return false
	}
	lines := 0
	for i := 0; i < len(msg); i++ {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || msg[i-1] != '\r' {
			return false
		}
		lines++
	}
	// Each LF has its own CR before it: any other CR stands alone.
	return bytes.Count(msg, []byte("\r")) == lines
}

// writeChunk writes msg as one BDAT LAST chunk, command and all: the
// command and the first stuffChunk bytes in one write, the rest in another.
func writeChunk(w io.Writer, msg []byte) error {
	bp := stuffBufs.Get().(*[]byte)
	defer stuffBufs.Put(bp)
	first := min(len(msg), stuffChunk)
	buf := fmt.Appendf((*bp)[:0], "BDAT %d LAST\r\n", len(msg))
	buf = append(buf, msg[:first]...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if first < len(msg) {
		_, err := w.Write(msg[first:])
		return err
	}
	return nil
}

// stuffChunk is how much dot-stuffed body is written at once: a few TLS
// records, in one system call.
const stuffChunk = 64 << 10

var stuffBufs = sync.Pool{New: func() any { b := make([]byte, 0, stuffChunk+stuffChunk/2); return &b }}

// writeBody writes msg as DATA's content: the body as net/textproto's dot
// writer would write it (a leading dot doubled, a bare LF made CRLF),
// byte for byte, but in large writes to raw, the plaintext side of the
// connection under go-smtp's client; then its last line through the
// client's writer w, which is left as if it had written all of msg, so
// that closing it ends the message as go-smtp does. go-smtp's buffered
// writer is empty here: DATA and its reply have been flushed and read.
func writeBody(raw io.Writer, w io.Writer, msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	// The raw part ends just after a LF, where the dot writer's state is
	// "beginning of a line", as it is at its start: the last line goes to
	// w in the same state as it would have.
	cut := bytes.LastIndexByte(msg[:len(msg)-1], '\n') + 1
	if cut > 0 {
		bp := stuffBufs.Get().(*[]byte)
		defer stuffBufs.Put(bp)
		d := dotStuffer{out: (*bp)[:0], state: stuffBeginLine}
		for rest := msg[:cut]; len(rest) > 0; {
			n := min(len(rest), stuffChunk)
			d.write(rest[:n])
			rest = rest[n:]
			if _, err := raw.Write(d.out); err != nil {
				return err
			}
			d.out = d.out[:0]
		}
	}
	_, err := w.Write(msg[cut:])
	return err
}

// States of dotStuffer, those of net/textproto's dotWriter.
const (
	stuffBeginLine = iota
	stuffData
	stuffCR
)

// dotStuffer appends to out what net/textproto's dotWriter writes for its
// input, and in the same states, copying the runs between CRs and LFs
// whole. Its quirks are kept on purpose, so that the bytes upstream are
// those go-smtp would send: a CR followed by anything but LF ends the
// look for a CR, so "\r\r\n" becomes "\r\r\r\n".
type dotStuffer struct {
	out   []byte
	state int
}

func (d *dotStuffer) write(b []byte) {
	for len(b) > 0 {
		switch d.state {
		case stuffBeginLine:
			if b[0] == '.' {
				d.out = append(d.out, '.')
			}
			d.state = stuffData
		case stuffCR:
			d.state = stuffData
			if b[0] == '\n' {
				d.state = stuffBeginLine
			}
			d.out = append(d.out, b[0])
			b = b[1:]
			continue
		}
		// stuffData: copy up to the next CR or LF. Two byte searches
		// are much faster than bytes.IndexAny, which goes byte by byte.
		run := b
		if i := bytes.IndexByte(b, '\r'); i >= 0 {
			run = b[:i]
		}
		if i := bytes.IndexByte(run, '\n'); i >= 0 {
			d.out = append(d.out, b[:i]...)
			d.out = append(d.out, '\r', '\n')
			d.state = stuffBeginLine
			b = b[i+1:]
			continue
		}
		d.out = append(d.out, run...)
		if len(run) == len(b) {
			return
		}
		d.out = append(d.out, '\r')
		d.state = stuffCR
		b = b[len(run)+1:]
	}
}
