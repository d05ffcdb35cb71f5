package imap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"smimeproxy/proxy"
)

// A client that sends through the SMTP proxy then APPENDs its own copy of
// what it sent to its Sent mailbox, in plain text; drafts likewise. So an
// APPEND to the user's Sent or Drafts mailbox of a message that is not
// already S/MIME is stored protected (copy.go): the relay reads the command
// whole, protects each message, and sends the command on with the
// protected messages in their place. The client gets the upstream's answer
// (APPENDUID included) as it is. An APPEND anywhere else, or of a message
// already S/MIME, passes through as it was written, streamed.

// appendCmd handles APPEND.
func (r *relay) appendCmd(tag, name string, line []byte) error {
	mbox, ok := appendMailbox(line)
	c := r.s.opts.Config.IMAP
	if !ok || !c.Sent.Protect && !c.Drafts.Protect {
		return r.passthrough(tag, name, line)
	}
	if err := r.drain(); err != nil {
		return err
	}
	which, err := r.copiesOf(mbox)
	if err != nil {
		return err
	}
	if which == copyNone {
		return r.passthrough(tag, name, line)
	}
	raw, reserved, err := r.readAppend(line)
	defer r.s.opts.Budget.Release(reserved)
	if err != nil {
		if isConnClosed(err) || errors.Is(err, errUpstreamGone) {
			return err
		}
		return r.answer(tag, name, appendAnswer(err))
	}
	cmd, err := r.protectAppend(raw, which)
	if err != nil {
		var ce *copyError
		if errors.As(err, &ce) {
			r.log.Info("IMAP APPEND refused", "mailbox", which.String(), "err", err)
			return r.answer(tag, name, "NO "+ce.answer)
		}
		return r.answer(tag, name, syntaxAnswer(err))
	}
	cmdc := r.register(tag, name, false)
	cmdc.ownCont = true
	return r.send(cmdc, cmd)
}

// appendAnswer is the answer to an APPEND the relay could not read.
func appendAnswer(err error) string {
	switch {
	case errors.Is(err, errLiteralTooLong):
		return "NO [TOOBIG] The message is larger than the proxy protects (imap.max_message_mb)"
	case errors.Is(err, proxy.ErrOverBudget), errors.Is(err, context.DeadlineExceeded):
		return "NO [LIMIT] Too many large messages at once; try again later"
	}
	return syntaxAnswer(err)
}

// appendMailbox reads the mailbox an APPEND names on its first line; a
// mailbox given as a literal is not read (ok false), and the APPEND passes.
func appendMailbox(line []byte) (string, bool) {
	sc := newScanner(bufio.NewReader(bytes.NewReader(nil)), maxLine, line)
	if _, _, err := commandHead(sc); err != nil || sc.sp() != nil {
		return "", false
	}
	if sc.atEOL() {
		return "", false
	}
	b, err := sc.astring(0, nil)
	if err != nil {
		return "", false
	}
	return mailboxKey(b), true
}

// readAppend reads an APPEND whole, asking for its literals itself. Each
// message literal must be within imap.max_message_mb, and what protecting
// it will take is reserved from the memory budget first.
func (r *relay) readAppend(line []byte) (raw []byte, reserved int64, err error) {
	raw = append([]byte(nil), line...)
	for {
		l, ok := literalAt(line)
		if !ok {
			return raw, reserved, nil
		}
		if l.n > r.maxOpen {
			if !l.sync {
				// The client sends it without waiting: it must be read.
				err = copyN(discardWriter{}, r.s.br, l.n)
				if err == nil {
					_, err = readLine(r.s.br, r.maxLine)
				}
				if err != nil {
					return nil, reserved, err
				}
			}
			return nil, reserved, errLiteralTooLong
		}
		cost := protectCost(l.n)
		ctx, cancel := context.WithTimeout(r.s.ctx, r.s.opts.Config.IMAP.Timeouts.Data.D())
		err := r.s.opts.Budget.Acquire(ctx, cost)
		cancel()
		if err != nil {
			return nil, reserved, err
		}
		reserved += cost
		if err := r.s.continueLiteral(l); err != nil {
			return nil, reserved, err
		}
		lit := make([]byte, l.n)
		if _, err := io.ReadFull(r.s.br, lit); err != nil {
			return nil, reserved, err
		}
		raw = append(raw, lit...)
		if line, err = readLine(r.s.br, r.maxLine); err != nil {
			return nil, reserved, err
		}
		raw = append(raw, line...)
	}
}

// protectCost is the memory protecting a message of n bytes takes at its
// peak: the message, its signed and its encrypted form, and their copies,
// as the SMTP proxy measured them.
func protectCost(n int64) int64 { return 8 * n }

// protectAppend rewrites an APPEND read whole with each message protected
// for which.
func (r *relay) protectAppend(raw []byte, which copyKind) ([]byte, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	first, err := readLine(br, maxWhole)
	if err != nil {
		return nil, err
	}
	sc := newScanner(br, maxWhole, first)
	tag, _, err := commandHead(sc)
	if err != nil {
		return nil, err
	}
	if err := sc.sp(); err != nil {
		return nil, err
	}
	start := sc.pos
	if _, err := sc.astring(0, nil); err != nil {
		return nil, err
	}
	out := []byte(tag + " APPEND ")
	out = append(out, sc.line[start:sc.pos]...)
	for !sc.done() {
		if err := sc.sp(); err != nil {
			return nil, err
		}
		// Flags and a date, as the client wrote them.
		if sc.peek() == '(' {
			var b bytes.Buffer
			if err := sc.copyValue(&b); err != nil {
				return nil, err
			}
			out = append(append(out, ' '), b.Bytes()...)
			if err := sc.sp(); err != nil {
				return nil, err
			}
		}
		if !sc.atEOL() && sc.peek() == '"' {
			start := sc.pos
			if _, err := sc.quoted(); err != nil {
				return nil, err
			}
			out = append(append(out, ' '), sc.line[start:sc.pos]...)
			if err := sc.sp(); err != nil {
				return nil, err
			}
		}
		utf8 := false
		if rest := sc.line[sc.pos:sc.end]; len(rest) >= 6 && eqFold(rest[:6], "UTF8 (") {
			utf8 = true
			sc.pos += 6
		}
		if !sc.atEOL() || sc.lit == nil {
			return nil, fmt.Errorf("%w: APPEND without a message literal", errSyntax)
		}
		binary := sc.lit.binary
		msg, err := sc.literalBytes(r.maxOpen, nil)
		if err != nil {
			return nil, err
		}
		protected, err := r.protectCopy(msg, which)
		if err != nil {
			return nil, err
		}
		out = append(out, ' ')
		if utf8 {
			out = append(out, "UTF8 ("...)
		}
		if binary || utf8 {
			out = append(out, '~')
		}
		out = append(out, '{')
		out = strconv.AppendInt(out, int64(len(protected)), 10)
		out = append(out, "}\r\n"...)
		out = append(out, protected...)
		if utf8 {
			if sc.peek() != ')' {
				return nil, fmt.Errorf("%w: UTF8 literal not closed", errSyntax)
			}
			sc.pos++
			out = append(out, ')')
		}
	}
	return append(out, "\r\n"...), nil
}

// copyKind says which of the user's copies a mailbox holds.
type copyKind int

const (
	copyNone copyKind = iota
	copySent
	copyDrafts
)

func (k copyKind) String() string {
	switch k {
	case copySent:
		return "sent"
	case copyDrafts:
		return "drafts"
	}
	return "none"
}

// copiesOf says which copies mbox holds: a mailbox configured by name, or
// the one the upstream marks \Sent or \Drafts (RFC 6154), which the relay
// asks the upstream once per session.
func (r *relay) copiesOf(mbox string) (copyKind, error) {
	c := r.s.opts.Config.IMAP
	named := func(list []string) bool {
		for _, n := range list {
			if mailboxKey([]byte(n)) == mbox {
				return true
			}
		}
		return false
	}
	switch {
	case c.Sent.Protect && named(c.Sent.Mailboxes):
		return copySent, nil
	case c.Drafts.Protect && named(c.Drafts.Mailboxes):
		return copyDrafts, nil
	}
	if r.specialUse == nil {
		special, err := r.listSpecialUse()
		if err != nil {
			return copyNone, err
		}
		r.specialUse = special
	}
	switch kind := r.specialUse[mbox]; {
	case kind == copySent && c.Sent.Protect, kind == copyDrafts && c.Drafts.Protect:
		return kind, nil
	}
	return copyNone, nil
}

// listSpecialUse asks the upstream for its \Sent and \Drafts mailboxes.
func (r *relay) listSpecialUse() (map[string]copyKind, error) {
	out := map[string]copyKind{}
	var command string
	switch {
	case hasCap(r.up.caps, "SPECIAL-USE") && hasCap(r.up.caps, "LIST-EXTENDED"):
		command = `LIST (SPECIAL-USE) "" "*"`
	case hasCap(r.up.caps, "SPECIAL-USE"):
		command = `LIST "" "*" RETURN (SPECIAL-USE)`
	default:
		return out, nil
	}
	st, err := r.own(command, listReader{out: out})
	if err != nil {
		return nil, err
	}
	if !st.ok() {
		r.log.Warn("IMAP upstream refused to list its special-use mailboxes", "answer", string(st.line))
	}
	return out, nil
}

// listReader takes the LIST answers to listSpecialUse.
type listReader struct{ out map[string]copyKind }

func (l listReader) untagged(kind string, _ uint32, line []byte) error {
	if kind != "LIST" {
		return nil
	}
	sc := newScanner(bufio.NewReader(bytes.NewReader(nil)), maxUpstreamLine, line)
	sc.pos = len("* LIST ")
	var flags bytes.Buffer
	if err := sc.copyValue(&flags); err != nil {
		return nil
	}
	if sc.sp() != nil || sc.skipValue() != nil || sc.sp() != nil {
		return nil
	}
	name, err := sc.astring(maxUpstreamLine, nil)
	if err != nil {
		return nil
	}
	f := strings.ToUpper(flags.String())
	switch {
	case strings.Contains(f, `\SENT`):
		l.out[mailboxKey(name)] = copySent
	case strings.Contains(f, `\DRAFTS`):
		l.out[mailboxKey(name)] = copyDrafts
	}
	return nil
}
