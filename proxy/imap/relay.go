package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// After login the session is a relay. Two goroutines move the bytes: the
// command loop reads the client's commands and writes them upstream, the
// pump reads the upstream's responses and writes them to the client. Both
// copy what they do not need to understand, literals included, in order.
//
// The relay keeps no mailbox state beyond the selected mailbox's name and
// UIDVALIDITY (the cache's key). A command it intercepts (a FETCH of
// content, for the S/MIME messages in it) runs alone: the loop first waits
// for every command before it to complete, then sends its own commands and
// the client's, while the pump hands the untagged responses to the
// command's interceptor. Untagged responses it does not claim reach the
// client as they came.

// errUpstreamGone is the upstream connection ending under a command.
var errUpstreamGone = errors.New("imap: upstream connection lost")

// relay is one logged-in session.
type relay struct {
	s    *session
	up   *upConn
	user string
	// verified: the upstream checked that the login is user's, so user's
	// keys may open messages. A token login's name is the client's word.
	verified bool
	log      *slog.Logger
	maxLine  int
	maxOpen  int64 // the largest S/MIME message opened

	mu        sync.Mutex
	pending   []*command  // in flight upstream, in the order sent
	cont      *command    // waiting for a continuation request
	icpt      interceptor // claims untagged responses while set
	selecting *command    // a SELECT or EXAMINE in flight
	mbox      mailbox
	sawBye    bool // the upstream said BYE: its end is expected
	// specialUse are the upstream's \Sent and \Drafts mailboxes, once
	// asked (append.go); only the command loop touches it.
	specialUse map[string]copyKind
	ending     bool // the relay closes the upstream connection itself

	upDone  chan struct{} // closed when the pump ends
	pumpErr error

	// held are flag updates the upstream sent during the proxy's own
	// commands, for the client at the end of its command, where the
	// upstream would have sent them.
	held [][]byte
}

// command is one command in flight upstream.
type command struct {
	tag     string
	name    string // upper case, "UID FETCH" for UID commands
	own     bool   // the proxy's: its responses are not the client's
	ownCont bool   // continuation requests are the proxy's to answer
	mailbox string // SELECT and EXAMINE: the mailbox named
	uidVal  uint32 // SELECT and EXAMINE: the UIDVALIDITY announced
	start   time.Time

	st    status
	contc chan struct{} // a continuation request arrived
	done  chan struct{} // closed when st is set
}

// mailbox is the selected mailbox, as far as the cache needs it.
type mailbox struct {
	name        string
	uidValidity uint32
}

// interceptor claims untagged FETCH, EXPUNGE and VANISHED responses while
// an intercepted command runs. line is the response's first line, whole;
// the rest, if a literal follows, is read from the upstream by the
// interceptor, which writes what the client is to see.
type interceptor interface {
	untagged(kind string, num uint32, line []byte) error
}

func newRelay(s *session, up *upConn, user string, token bool) *relay {
	return &relay{
		s: s, up: up, user: user, log: s.log,
		verified: !token || s.opts.Config.IMAP.TrustTokenNames,
		maxLine:  maxLine,
		maxOpen:  int64(s.opts.Config.IMAP.MaxMessageMB) << 20,
		upDone:   make(chan struct{}),
	}
}

// run relays until either side ends.
func (r *relay) run() {
	go r.pump()
	err := r.commands()
	if err != nil && !isConnClosed(err) && !errors.Is(err, errUpstreamGone) && !r.s.closing.Load() {
		r.log.Warn("IMAP session ended", "err", err)
	}
	r.end()
}

// end closes both connections: politely upstream when nothing is in
// flight there, and after the client has what was written for it.
func (r *relay) end() {
	r.mu.Lock()
	idle := len(r.pending) == 0 && !r.sawBye
	r.ending = true
	r.mu.Unlock()
	select {
	case <-r.upDone:
	default:
		if idle && !r.s.closing.Load() {
			r.up.conn.SetDeadline(time.Now().Add(r.s.up.ConnectTimeout()))
			r.up.bw.WriteString(r.up.tag() + " LOGOUT\r\n")
			r.up.bw.Flush()
			select {
			case <-r.upDone:
			case <-time.After(r.s.up.ConnectTimeout()):
			}
		}
	}
	r.up.conn.Close()
	<-r.upDone
	r.s.wmu.Lock()
	r.s.bw.Flush()
	r.s.wmu.Unlock()
	r.s.conn.Close()
}

// upstreamEnded tells the client when the upstream connection ended under
// the session, and closes the client connection, which ends the command
// loop: a client never waits on a connection that can no longer answer.
func (r *relay) upstreamEnded() {
	r.mu.Lock()
	expected := r.ending || r.sawBye
	r.mu.Unlock()
	if !expected && !r.s.closing.Load() {
		r.s.opts.Metrics.UpstreamErrors.WithLabelValues("imap", "command").Inc()
		r.log.Warn("IMAP upstream connection lost; ending the session", "err", r.pumpErr)
		r.s.wmu.Lock()
		r.s.bw.WriteString("* BYE Connection to the mail server lost\r\n")
		r.s.bw.Flush()
		r.s.wmu.Unlock()
	}
	r.s.wmu.Lock()
	r.s.bw.Flush()
	r.s.wmu.Unlock()
	r.s.conn.Close()
	// Nothing reads the upstream any more: a command loop writing to it
	// must not wait.
	r.up.conn.Close()
}

// commands is the command loop.
func (r *relay) commands() error {
	for {
		if r.s.br.Buffered() == 0 {
			if err := r.flushUp(); err != nil {
				return err
			}
		}
		line, err := readLine(r.s.br, r.maxLine)
		if errors.Is(err, errLineTooLong) {
			r.s.write("* BYE Command line too long\r\n")
			return err
		}
		if err != nil {
			return err
		}
		select {
		case <-r.upDone:
			return errUpstreamGone
		default:
		}
		sc := newScanner(r.s.br, r.maxLine, line)
		tag, name, err := commandHead(sc)
		if err == nil && name == "UID" {
			var sub string
			if err = sc.sp(); err == nil {
				sub, err = sc.atom()
			}
			name = "UID " + strings.ToUpper(sub)
		}
		if err != nil {
			// Not a command the relay can name: the upstream judges it,
			// and answers BAD as it would directly. Its answer may not
			// carry a tag the relay could wait for, so it is not counted
			// as in flight.
			r.up.bw.Write(line)
			continue
		}
		if why, ok := refusedCommands[name]; ok {
			if err := r.refuse(tag, name, why, line); err != nil {
				return err
			}
			continue
		}
		switch name {
		case "FETCH", "UID FETCH", "SELECT", "EXAMINE":
			err = r.whole(tag, name, line)
		case "APPEND":
			err = r.appendCmd(tag, name, line)
		case "SEARCH", "UID SEARCH", "SORT", "UID SORT":
			err = r.search(tag, name, line)
		default:
			err = r.passthrough(tag, name, line)
		}
		if err != nil {
			return err
		}
	}
}

// flushUp sends what is buffered for the upstream.
func (r *relay) flushUp() error {
	if r.up.bw.Buffered() == 0 {
		return nil
	}
	if err := r.up.bw.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errUpstreamGone, err)
	}
	return nil
}

// register adds a command to those in flight.
func (r *relay) register(tag, name string, own bool) *command {
	c := &command{tag: tag, name: name, own: own, start: time.Now(),
		contc: make(chan struct{}, 1), done: make(chan struct{})}
	r.mu.Lock()
	r.pending = append(r.pending, c)
	r.mu.Unlock()
	return c
}

// awaitContinuation makes c the command the next continuation request is
// for.
func (r *relay) awaitContinuation(c *command) {
	r.mu.Lock()
	r.cont = c
	r.mu.Unlock()
}

// continued sends what is buffered upstream and waits for the upstream's
// continuation request for c (see awaitContinuation); refused is true
// when the upstream ended c instead, and the client sends no more of it.
func (r *relay) continued(c *command) (refused bool, err error) {
	if err := r.flushUp(); err != nil {
		return false, err
	}
	select {
	case <-c.contc:
		return false, nil
	case <-c.done:
		return true, nil
	case <-r.upDone:
		return false, errUpstreamGone
	}
}

// passthrough streams a command upstream as the client sends it, literal
// by literal; a synchronising literal waits for the upstream's
// continuation request, which reaches the client.
func (r *relay) passthrough(tag, name string, line []byte) error {
	c := r.register(tag, name, false)
	for {
		l, lit := literalAt(line)
		if lit && l.sync {
			r.awaitContinuation(c)
		}
		r.up.bw.Write(line)
		if !lit {
			break
		}
		if l.sync {
			if refused, err := r.continued(c); err != nil || refused {
				return err // refused: the client sends no literal
			}
		}
		if err := copyN(r.up.bw, r.s.br, l.n); err != nil {
			return err
		}
		var err error
		if line, err = readLine(r.s.br, r.maxLine); err != nil {
			return err
		}
	}
	if name != "IDLE" {
		return nil
	}
	// The line after IDLE's continuation request is the client's DONE.
	r.awaitContinuation(c)
	if refused, err := r.continued(c); err != nil || refused {
		return err
	}
	done, err := readLine(r.s.br, r.maxLine)
	if err != nil {
		return err
	}
	r.up.bw.Write(done)
	return r.flushUp()
}

// maxLine bounds a command line of the client's, as Dovecot's
// imap_max_line_length does.
const maxLine = 64 << 10

// maxWhole bounds a command the relay reads whole before deciding.
const maxWhole = 1 << 20

// readWhole reads the rest of a command into memory, answering
// synchronising literals itself. The result is the command as the client
// sent it, literals included.
func (r *relay) readWhole(line []byte) ([]byte, error) { return r.readWholeMax(line, maxWhole) }

// readWholeMax is readWhole for a command of at most max bytes. A literal
// past it is refused before the client sends it, or, when the client sends
// it without waiting (LITERAL+), read and thrown away with the rest of the
// command, so that its bytes are not taken for commands.
func (r *relay) readWholeMax(line []byte, max int) ([]byte, error) {
	raw := append([]byte(nil), line...)
	for {
		l, ok := literalAt(line)
		if !ok {
			return raw, nil
		}
		if int64(len(raw))+l.n > int64(max) {
			if err := r.skipLiterals(l); err != nil {
				return nil, err
			}
			return nil, errLiteralTooLong
		}
		if err := r.s.continueLiteral(l); err != nil {
			return nil, err
		}
		lit := make([]byte, l.n)
		if _, err := io.ReadFull(r.s.br, lit); err != nil {
			return nil, unexpectedEOF(err)
		}
		raw = append(raw, lit...)
		var err error
		if line, err = readLine(r.s.br, r.maxLine); err != nil {
			return nil, err
		}
		if len(raw)+len(line) > max {
			if l, ok := literalAt(line); ok {
				if err := r.skipLiterals(l); err != nil {
					return nil, err
				}
			}
			return nil, errLineTooLong
		}
		raw = append(raw, line...)
	}
}

// skipLiterals throws away the rest of a command from its literal l, as
// far as the client sends it without waiting for a continuation request.
func (r *relay) skipLiterals(l literal) error {
	for !l.sync {
		if err := copyN(io.Discard, r.s.br, l.n); err != nil {
			return err
		}
		line, err := readLine(r.s.br, r.maxLine)
		if err != nil {
			return unexpectedEOF(err)
		}
		var ok bool
		if l, ok = literalAt(line); !ok {
			break
		}
	}
	return nil
}

// whole handles a command that is read whole first: FETCH, to see whether
// it asks for content, and SELECT and EXAMINE, for the mailbox's name.
func (r *relay) whole(tag, name string, line []byte) error {
	raw, err := r.readWhole(line)
	if err != nil {
		if isConnClosed(err) {
			return err
		}
		return r.answer(tag, name, syntaxAnswer(err))
	}
	cmd := newScanner(bufio.NewReader(bytes.NewReader(raw[len(line):])), maxWhole, line)
	commandHead(cmd)
	if strings.HasPrefix(name, "UID ") {
		cmd.sp()
		cmd.atom()
	}
	switch name {
	case "SELECT", "EXAMINE":
		var mbox []byte
		if cmd.sp() == nil {
			// An unreadable name keys nothing: the upstream refuses it.
			mbox, _ = cmd.astring(maxWhole, nil)
		}
		c := r.register(tag, name, false)
		c.ownCont = true
		c.mailbox = mailboxKey(mbox)
		r.mu.Lock()
		r.selecting = c
		r.mu.Unlock()
		return r.send(c, raw)
	}
	f, err := parseFetch(cmd, strings.HasPrefix(name, "UID "))
	if err != nil || !f.needsContent() {
		// The upstream judges a FETCH the relay cannot read.
		c := r.register(tag, name, false)
		c.ownCont = true
		return r.send(c, raw)
	}
	if err := r.drain(); err != nil {
		return err
	}
	return r.fetch(tag, name, raw, f)
}

// mailboxKey is a mailbox name as the cache keys it: INBOX in any case is
// INBOX (RFC 9051 5.1).
func mailboxKey(name []byte) string {
	if eqFold(name, "INBOX") {
		return "INBOX"
	}
	return string(name)
}

// send writes a command read whole to the upstream. Its literals were
// already asked for; the upstream gets them without a wait where LITERAL+
// allows, and after its continuation request otherwise.
func (r *relay) send(c *command, raw []byte) error {
	plus := hasCap(r.up.caps, "LITERAL+")
	for len(raw) > 0 {
		n := bytes.IndexByte(raw, '\n') + 1
		if n == 0 {
			n = len(raw)
		}
		line := raw[:n]
		raw = raw[n:]
		l, ok := literalAt(line)
		if !ok {
			r.up.bw.Write(line)
			continue
		}
		if l.sync && plus {
			body := trimEOL(line)
			r.up.bw.Write(body[:len(body)-1])
			r.up.bw.WriteString("+}\r\n")
		} else {
			r.up.bw.Write(line)
		}
		if l.sync && !plus {
			r.awaitContinuation(c)
			if refused, err := r.continued(c); err != nil || refused {
				return err
			}
		}
		r.up.bw.Write(raw[:l.n])
		raw = raw[l.n:]
	}
	return nil
}

// drain waits until no command is in flight upstream.
func (r *relay) drain() error {
	if err := r.flushUp(); err != nil {
		return err
	}
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.mu.Unlock()
			return nil
		}
		c := r.pending[len(r.pending)-1]
		r.mu.Unlock()
		select {
		case <-c.done:
		case <-r.upDone:
			return errUpstreamGone
		}
	}
}

// answer gives the client the proxy's own answer to a command, once every
// command before it is answered.
func (r *relay) answer(tag, name, text string) error {
	if err := r.drain(); err != nil {
		return err
	}
	kind, _, _ := strings.Cut(text, " ")
	r.s.opts.Metrics.IMAPCommands.WithLabelValues(metricName(name), strings.ToLower(kind)).Inc()
	if err := r.flushHeld(); err != nil {
		return err
	}
	return r.s.write(tag + " " + text + "\r\n")
}

// refuse answers a command of a capability the relay does not offer,
// without the upstream.
func (r *relay) refuse(tag, name, why string, line []byte) error {
	if _, err := r.readWhole(line); err != nil && isConnClosed(err) {
		return err
	}
	return r.answer(tag, name, "BAD "+why)
}

// own runs a command of the proxy's own, with icpt claiming the untagged
// responses while it runs. Nothing else may be in flight.
func (r *relay) own(text string, icpt interceptor) (status, error) {
	c := r.register(r.up.tag(), "", true)
	r.mu.Lock()
	prev := r.icpt
	r.icpt = icpt
	r.mu.Unlock()
	defer r.setInterceptor(prev)
	r.up.bw.WriteString(c.tag + " " + text + "\r\n")
	if err := r.flushUp(); err != nil {
		return status{}, err
	}
	return r.wait(c)
}

// wait waits for c's tagged response.
func (r *relay) wait(c *command) (status, error) {
	if err := r.flushUp(); err != nil {
		return status{}, err
	}
	select {
	case <-c.done:
		return c.st, nil
	case <-r.upDone:
		return status{}, errUpstreamGone
	}
}

func (r *relay) setInterceptor(i interceptor) {
	r.mu.Lock()
	r.icpt = i
	r.mu.Unlock()
}

// pump reads the upstream's responses until it ends.
func (r *relay) pump() {
	defer close(r.upDone)
	defer r.upstreamEnded()
	for {
		first, err := r.up.br.ReadSlice('\n')
		whole := err == nil
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			r.pumpErr = err
			return
		}
		if err := r.response(first, whole); err != nil {
			r.pumpErr = err
			return
		}
		if r.up.br.Buffered() == 0 {
			r.s.wmu.Lock()
			err := r.s.bw.Flush()
			r.s.wmu.Unlock()
			if err != nil {
				r.pumpErr = err
				return
			}
		}
	}
}

// restOfLine completes a line of which first was read, up to the limit.
func (r *relay) restOfLine(first []byte, whole bool) ([]byte, error) {
	line := append([]byte(nil), first...)
	if whole {
		return line, nil
	}
	rest, err := readLine(r.up.br, maxUpstreamLine-len(line))
	if err != nil {
		return nil, err
	}
	return append(line, rest...), nil
}

// response handles one upstream response whose first bytes are first.
func (r *relay) response(first []byte, whole bool) error {
	switch {
	case len(first) > 0 && first[0] == '+':
		line, err := r.restOfLine(first, whole)
		if err != nil {
			return err
		}
		return r.continuation(line)
	case bytes.HasPrefix(first, []byte("* ")):
		return r.untagged(first, whole)
	}
	line, err := r.restOfLine(first, whole)
	if err != nil {
		return err
	}
	return r.tagged(line)
}

// continuation passes a continuation request to the command waiting for
// one: the client's, or the proxy's own.
func (r *relay) continuation(line []byte) error {
	r.mu.Lock()
	c := r.cont
	r.cont = nil
	r.mu.Unlock()
	if c == nil || !c.ownCont && !c.own {
		r.s.wmu.Lock()
		r.s.bw.Write(line)
		r.s.wmu.Unlock()
	}
	if c != nil {
		select {
		case c.contc <- struct{}{}:
		default:
		}
	}
	return nil
}

// untaggedKind names an untagged response: the word after "* ", or after
// "* n " for the numbered ones, upper case.
func untaggedKind(line []byte) (kind string, num uint32) {
	rest := trimEOL(line)[2:]
	word, after, _ := bytes.Cut(rest, []byte(" "))
	if n, err := strconv.ParseUint(string(word), 10, 32); err == nil {
		num = uint32(n)
		word, _, _ = bytes.Cut(after, []byte(" "))
	}
	return strings.ToUpper(string(word)), num
}

func (r *relay) untagged(first []byte, whole bool) error {
	kind, num := untaggedKind(first)
	r.mu.Lock()
	icpt := r.icpt
	sel := r.selecting
	if kind == "BYE" {
		r.sawBye = true
	}
	r.mu.Unlock()
	switch kind {
	case "FETCH", "EXPUNGE", "VANISHED", "EXISTS", "LIST", "SEARCH", "ESEARCH":
		if icpt == nil {
			break
		}
		line, err := r.restOfLine(first, whole)
		if err != nil {
			return err
		}
		return icpt.untagged(kind, num, line)
	case "CAPABILITY", "OK", "NO", "BAD", "BYE", "PREAUTH":
		line, err := r.restOfLine(first, whole)
		if err != nil {
			return err
		}
		if sel != nil && kind == "OK" {
			if v, ok := responseCodeNumber(line, "UIDVALIDITY"); ok {
				sel.uidVal = uint32(v)
			}
		}
		return r.forward(filterCapLine(line))
	}
	return r.forwardStream(first, whole)
}

// responseCodeNumber reads "[CODE n]" from a status response.
func responseCodeNumber(line []byte, code string) (uint64, bool) {
	i := indexFold(line, "["+code+" ")
	if i < 0 {
		return 0, false
	}
	rest := line[i+len(code)+2:]
	end := bytes.IndexByte(rest, ']')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 32)
	return n, err == nil
}

// hold keeps a flag update for the end of the client's command.
func (r *relay) hold(resp []byte) {
	r.mu.Lock()
	r.held = append(r.held, resp)
	r.mu.Unlock()
}

// flushHeld passes the held updates on: before the client's tagged
// response, and before anything that renumbers messages.
func (r *relay) flushHeld() error {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, h := range held {
		if err := r.forward(h); err != nil {
			return err
		}
	}
	return nil
}

// forward writes one line-only response to the client.
func (r *relay) forward(line []byte) error {
	r.s.wmu.Lock()
	defer r.s.wmu.Unlock()
	_, err := r.s.bw.Write(line)
	return err
}

// forwardStream copies one response to the client as it arrives, its
// literals and however long its lines.
func (r *relay) forwardStream(first []byte, whole bool) error {
	r.s.wmu.Lock()
	defer r.s.wmu.Unlock()
	w := r.s.bw
	if _, err := w.Write(first); err != nil {
		return err
	}
	tail := first
	if !whole {
		var err error
		if tail, err = copyLine(w, r.up.br); err != nil {
			return err
		}
	}
	for {
		l, ok := literalAt(tail)
		if !ok {
			return nil
		}
		if err := copyN(w, r.up.br, l.n); err != nil {
			return err
		}
		var err error
		if tail, err = copyLine(w, r.up.br); err != nil {
			return err
		}
	}
}

// tagged completes the command the tagged response is for.
func (r *relay) tagged(line []byte) error {
	tag, st, err := parseStatus(line)
	if err != nil {
		return r.forward(line)
	}
	r.mu.Lock()
	var c *command
	for i, p := range r.pending {
		if p.tag == tag {
			c = p
			r.pending = append(r.pending[:i], r.pending[i+1:]...)
			break
		}
	}
	if c != nil && c == r.selecting {
		r.selecting = nil
		// A SELECT that fails leaves no mailbox selected (RFC 9051 6.3.2).
		r.mbox = mailbox{}
		if st.ok() {
			r.mbox = mailbox{name: c.mailbox, uidValidity: c.uidVal}
		}
	}
	if c != nil && !c.own && st.ok() && (c.name == "CLOSE" || c.name == "UNSELECT") {
		r.mbox = mailbox{}
	}
	if r.cont == c {
		r.cont = nil
	}
	r.mu.Unlock()
	if c == nil {
		return r.forward(line)
	}
	c.st = st
	close(c.done)
	if c.own {
		return nil
	}
	if err := r.flushHeld(); err != nil {
		return err
	}
	r.s.opts.Metrics.IMAPCommands.WithLabelValues(metricName(c.name), strings.ToLower(st.kind)).Inc()
	r.s.opts.Metrics.UpstreamSeconds.WithLabelValues("imap", metricName(c.name)).Observe(time.Since(c.start).Seconds())
	return r.forward(filterCapLine(line))
}

// knownCommands keeps the metrics' command label to a bounded set.
var knownCommands = map[string]bool{
	"APPEND": true, "CAPABILITY": true, "CHECK": true, "CLOSE": true, "COPY": true, "CREATE": true,
	"DELETE": true, "ENABLE": true, "EXAMINE": true, "EXPUNGE": true, "FETCH": true, "GETQUOTA": true,
	"GETQUOTAROOT": true, "ID": true, "IDLE": true, "LIST": true, "LOGOUT": true, "LSUB": true,
	"MOVE": true, "NAMESPACE": true, "NOOP": true, "RENAME": true, "SEARCH": true, "SELECT": true,
	"SORT": true, "STATUS": true, "STORE": true, "SUBSCRIBE": true, "THREAD": true, "UNSELECT": true,
	"UNSUBSCRIBE": true, "GETMETADATA": true, "SETMETADATA": true,
	"UID COPY": true, "UID EXPUNGE": true, "UID FETCH": true, "UID MOVE": true, "UID SEARCH": true,
	"UID SORT": true, "UID STORE": true, "UID THREAD": true,
}

func metricName(name string) string {
	if knownCommands[name] || refusedCommands[name] != "" {
		return name
	}
	return "other"
}
