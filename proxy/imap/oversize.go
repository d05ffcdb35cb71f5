package imap

import (
	"fmt"
	"strconv"
	"strings"

	"smimeproxy/proxy/imap/imapmsg"
	"smimeproxy/smime"
)

// An S/MIME message larger than imap.max_message_mb is not opened: it is
// served as it is stored, with the proxy's Authentication-Results field at
// the top saying why (and without a forged one). The relay never holds it:
// it holds only its header, H, and serves Hs = field + H, followed by the
// upstream's BODY[TEXT] streamed. Its FETCH goes upstream on its own, with
// each item the client asked for translated: BODY[] becomes Hs then
// BODY[TEXT], sizes and ranges move by the difference, header sections are
// computed from Hs, and everything else (parts, structure, envelope, flags)
// is the upstream's, since the header change does not touch it. Non-PEEK
// items stay non-PEEK upstream, so that \Seen changes as it would.

// maxOversizeHeader bounds the header of a message served this way.
const maxOversizeHeader = 1 << 20

// translation is one item of the client's, as the oversize FETCH asks it.
type translation struct {
	client   string // the name the answer gives it, as the client expects
	upstream string // the item asked upstream, "" when none is needed
	kind     int    // how the upstream's value becomes the client's
	offset   int64  // of a range asked for
	count    int64
}

const (
	passValue    = iota // the upstream's value, as it is
	withHeader          // Hs, then the upstream's BODY[TEXT] (range)
	computed            // made from Hs alone; the upstream value, if any, is dropped
	sizeAdjusted        // the upstream's number, moved by len(Hs) - len(H)
)

// oversize serves one message too large to open, as the last step of the
// client's FETCH when last is set (the client's tag then ends it).
func (run *fetchRun) oversize(e *entry, tag, name string, last bool) (status, error) {
	r := run.r
	verb, num := "FETCH ", e.seq
	if run.f.uid {
		verb, num = "UID FETCH ", e.uid
	}
	var header []byte
	got := false
	_, err := r.own(fmt.Sprintf("%s%d (UID BODY.PEEK[HEADER])", verb, num), ownReader{run: run, take: func(name string, hasSect bool, sc *scanner) (bool, error) {
		if name != "BODY" || !hasSect {
			return false, nil
		}
		b, err := sc.nstring(maxOversizeHeader)
		if err == errLiteralTooLong {
			return true, sc.skipValue()
		}
		header, got = b, b != nil
		return true, err
	}})
	if err != nil {
		return status{}, err
	}
	auth := authservID(r.s.opts.Config.ServerName)
	reason := fmt.Sprintf("not opened: the message is %d MiB, more than imap.max_message_mb (%d)", (e.size+1<<20-1)>>20, r.s.opts.Config.IMAP.MaxMessageMB)
	v := (&smime.Opened{}).AuthenticationResults(auth) + " " + comment(reason)
	hs := []byte(foldField(authResultsField, v))
	if got {
		hs = append(hs, dropOwnResults(header, auth)...)
	}
	ts, items, ok := run.translate(hs, e, got)
	var cmd []byte
	own := !last
	ownTag := tag
	if own {
		ownTag = r.up.tag()
	}
	if !ok {
		// Two items would need the same stream: the message is passed on
		// as stored, as a FETCH of the client's for it alone.
		cmd = concat([]byte(ownTag), run.raw[len(tag):run.f.setAt], []byte(strconv.FormatUint(uint64(num), 10)), run.raw[run.f.setEnd:])
	} else {
		cmd = []byte(fmt.Sprintf("%s %s%d (UID%s)%s", ownTag, verb, num, items, run.raw[run.f.itemsEnd:]))
	}
	r.log.Warn("IMAP S/MIME message too large to open; served as stored", "uid", e.uid, "bytes", e.size)
	r.s.opts.Metrics.Opened.WithLabelValues("decrypt", "too_large").Inc()
	c := r.register(ownTag, name, own)
	c.ownCont = true
	if ok {
		r.setInterceptor(&oversizeRewriter{run: run, hs: hs, hlen: int64(len(header)), ts: ts})
		defer r.setInterceptor(rewriter{run})
	}
	if err := r.send(c, cmd); err != nil {
		return status{}, err
	}
	return r.wait(c)
}

// translate turns the client's items into the oversize FETCH's. ok is
// false when two of them would need the same range of the upstream's
// BODY[TEXT] stream.
func (run *fetchRun) translate(hs []byte, e *entry, haveHeader bool) ([]translation, string, bool) {
	var (
		ts    []translation
		items strings.Builder
		asked = map[string]bool{}
	)
	add := func(t translation) bool {
		if t.upstream != "" {
			key := strings.ToUpper(t.upstream)
			if asked[key] {
				return t.kind != withHeader
			}
			asked[key] = true
			items.WriteString(" " + t.upstream)
		}
		ts = append(ts, t)
		return true
	}
	peek := func(it fetchItem) string {
		if it.peek {
			return "BODY.PEEK"
		}
		return "BODY"
	}
	for _, it := range run.f.items {
		whole := it.hasSect && it.section == ""
		switch {
		case it.name == "RFC822.SIZE" || it.name == "BINARY.SIZE" && whole:
			if !add(translation{client: it.name + sectionSuffix(it), upstream: "RFC822.SIZE", kind: sizeAdjusted}) {
				return nil, "", false
			}
		case it.name == "RFC822" || (it.name == "BODY" || it.name == "BINARY") && whole:
			if !haveHeader {
				return nil, "", false
			}
			client := it.name + "[]"
			up := peek(it) + "[TEXT]"
			if it.name == "RFC822" {
				client, up = "RFC822", "BODY[TEXT]"
			}
			t := translation{client: client, kind: withHeader}
			if it.partial {
				t.offset, t.count = it.offset, it.count
				t.client += "<" + strconv.FormatInt(it.offset, 10) + ">"
				skip := max(0, it.offset-int64(len(hs)))
				want := it.count - max(0, min(int64(len(hs)), it.offset+it.count)-it.offset)
				if want > 0 {
					up += fmt.Sprintf("<%d.%d>", skip, want)
				} else {
					up += "<0.1>"
				}
			}
			t.upstream = up
			if !add(t) {
				return nil, "", false
			}
		case it.name == "RFC822.HEADER" || it.name == "BODY" && it.hasSect && isHeaderSection(it.section):
			t := translation{client: strings.ToUpper(it.raw), kind: computed}
			if it.name == "BODY" {
				t.client = "BODY[" + it.section + "]"
				if it.partial {
					t.offset, t.count = it.offset, it.count
					t.client += "<" + strconv.FormatInt(it.offset, 10) + ">"
				}
			}
			if !it.peek {
				// Only for \Seen: its value is dropped.
				t.upstream = "BODY[HEADER]"
			}
			if !add(t) {
				return nil, "", false
			}
		default:
			if !add(translation{upstream: it.raw, kind: passValue}) {
				return nil, "", false
			}
		}
	}
	return ts, items.String(), true
}

func sectionSuffix(it fetchItem) string {
	if it.hasSect {
		return "[" + it.section + "]"
	}
	return ""
}

// isHeaderSection reports a section of the top-level header.
func isHeaderSection(section string) bool {
	s, err := imapmsg.ParseSection(section)
	return err == nil && len(s.Part) == 0 && strings.HasPrefix(s.Specifier, "HEADER")
}

// ownReader reads the answers to an own FETCH with take, and follows the
// numbering for its run.
type ownReader struct {
	run  *fetchRun
	take func(name string, hasSect bool, sc *scanner) (bool, error)
}

func (o ownReader) untagged(kind string, num uint32, line []byte) error {
	if ok, err := o.run.mailboxChange(kind, num, line); ok {
		return err
	}
	_, err := o.run.r.ownResponse(line, o.take)
	return err
}

// oversizeRewriter writes the answer to an oversize FETCH in the client's
// terms.
type oversizeRewriter struct {
	run  *fetchRun
	hs   []byte
	hlen int64 // of the header as stored
	ts   []translation
}

func (o *oversizeRewriter) untagged(kind string, num uint32, line []byte) error {
	r := o.run.r
	if ok, err := o.run.mailboxChange(kind, num, line); ok {
		return err
	}
	open := indexFold(line, " FETCH (")
	if open < 0 {
		return r.forward(line)
	}
	sc := newScanner(r.up.br, maxUpstreamLine, line)
	sc.pos = open + len(" FETCH (")
	r.s.wmu.Lock()
	defer r.s.wmu.Unlock()
	out := r.s.bw
	out.Write(line[:sc.pos])
	done := make([]bool, len(o.ts))
	wrote := false
	sep := func() {
		if wrote {
			out.WriteByte(' ')
		}
		wrote = true
	}
	for first := true; sc.peek() != ')'; first = false {
		if sc.atEOL() && sc.lit == nil {
			return fmt.Errorf("%w: FETCH answer cut short", errSyntax)
		}
		if !first {
			if err := sc.sp(); err != nil {
				return err
			}
		}
		start := sc.pos
		if _, _, _, _, err := itemName(sc); err != nil {
			return err
		}
		name := string(sc.line[start:sc.pos])
		if err := sc.sp(); err != nil {
			return err
		}
		i := o.match(name, done)
		if i < 0 {
			// Not one the client asked for under another name: UID,
			// FLAGS and the rest, as the upstream wrote them.
			sep()
			out.WriteString(name + " ")
			if err := sc.copyValue(out); err != nil {
				return err
			}
			continue
		}
		done[i] = true
		t := o.ts[i]
		switch t.kind {
		case passValue:
			sep()
			out.WriteString(name + " ")
			if err := sc.copyValue(out); err != nil {
				return err
			}
		case sizeAdjusted:
			v, err := sc.atom()
			if err != nil {
				return err
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			sep()
			out.WriteString(t.client + " " + strconv.FormatInt(n-o.hlen+int64(len(o.hs)), 10))
		case computed:
			if err := sc.skipValue(); err != nil {
				return err
			}
			sep()
			o.computed(out, t)
		case withHeader:
			sep()
			if err := o.stream(out, sc, t); err != nil {
				return err
			}
		}
	}
	sc.pos++
	for i, t := range o.ts {
		if !done[i] && t.kind == computed {
			sep()
			o.computed(out, t)
		}
	}
	out.WriteString(")\r\n")
	return nil
}

// match finds the translation an upstream item answers, by its name and
// the origin of its range.
func (o *oversizeRewriter) match(name string, done []bool) int {
	key := echoKey(name)
	for i, t := range o.ts {
		if !done[i] && t.upstream != "" && echoKey(t.upstream) == key {
			return i
		}
	}
	return -1
}

// echoKey is an item as the upstream echoes it: upper case, without .PEEK,
// and with the origin of a range but not its length ("BODY[TEXT]<5>").
func echoKey(item string) string {
	k := strings.Replace(strings.ToUpper(item), ".PEEK", "", 1)
	if i := strings.IndexByte(k, '<'); i >= 0 {
		if dot := strings.IndexByte(k[i:], '.'); dot >= 0 {
			k = k[:i+dot] + ">"
		}
	}
	return k
}

// computed writes an item made from Hs alone.
func (o *oversizeRewriter) computed(out valueWriter, t translation) {
	out.WriteString(t.client + " ")
	var b []byte
	if strings.HasPrefix(t.client, "RFC822.HEADER") {
		b = o.hs
	} else {
		sect := strings.TrimPrefix(t.client, "BODY[")
		sect, _, _ = strings.Cut(sect, "]")
		s, err := imapmsg.ParseSection(sect)
		if err != nil {
			out.WriteString("NIL")
			return
		}
		b = imapmsg.Parse(o.hs, nil).Section(s)
	}
	if strings.Contains(t.client, "<") {
		b = cut(b, t.offset, t.count)
	}
	writeLiteral(out, b, false)
}

// stream writes Hs (or its part in range) and then the upstream's BODY[TEXT]
// literal as it arrives.
func (o *oversizeRewriter) stream(out valueWriter, sc *scanner, t translation) error {
	if sc.peekNIL() {
		out.WriteString(t.client + " ")
		return sc.copyValue(out)
	}
	if !sc.atEOL() || sc.lit == nil {
		// A quoted string: small, so read whole.
		b, err := sc.nstring(maxOversizeHeader)
		if err != nil {
			return err
		}
		return o.write(out, t, b, nil)
	}
	return o.write(out, t, nil, sc)
}

func (o *oversizeRewriter) write(out valueWriter, t translation, small []byte, sc *scanner) error {
	head := o.hs
	if t.count > 0 {
		head = cut(o.hs, t.offset, t.count)
	}
	var n int64
	if sc != nil {
		n = sc.lit.n
	} else {
		n = int64(len(small))
	}
	if t.count > 0 && int64(len(head)) == t.count {
		n = 0 // the range ends inside Hs; the byte fetched for \Seen is dropped
	}
	out.WriteString(t.client + " ")
	writeLiteralHead(out, int64(len(head))+n)
	out.Write(head)
	switch {
	case sc != nil && n > 0:
		return sc.copyLiteralBody(out)
	case sc != nil:
		return sc.skipValue()
	default:
		out.Write(small[:n])
		return nil
	}
}

// cut is b's range from offset, of at most count bytes.
func cut(b []byte, offset, count int64) []byte {
	if offset >= int64(len(b)) {
		return nil
	}
	return b[offset:min(int64(len(b)), offset+count)]
}

// writeLiteralHead writes a literal's announcement.
func writeLiteralHead(w valueWriter, n int64) {
	w.WriteByte('{')
	w.WriteString(strconv.FormatInt(n, 10))
	w.WriteString("}\r\n")
}

// copyLiteralBody copies the bytes of the literal announced at the end of
// the line, without its announcement, and moves on to the next line.
func (s *scanner) copyLiteralBody(w valueWriter) error {
	if err := copyN(w, s.br, s.lit.n); err != nil {
		return err
	}
	return s.nextLine()
}
