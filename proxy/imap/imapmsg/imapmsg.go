// Package imapmsg describes a message the way an IMAP server does: every
// FETCH item that comes from a message's content (ENVELOPE, BODYSTRUCTURE,
// BODY, RFC822.SIZE, BODY[section], BINARY[section], BINARY.SIZE, PREVIEW)
// in IMAP wire syntax, as Dovecot 2.3 writes it for the same bytes, so
// that the IMAP proxy can serve an opened S/MIME message in the answer
// Dovecot produced for the rest; and matches SEARCH's text keys against a
// message as Dovecot does (Searcher).
//
// It reads the message's structure with smime.Walk, the proxy's one MIME
// walker, which reads MIME as Dovecot's message parser does, within
// smime.Limits (whose defaults are Dovecot's); header values are read as
// Dovecot's lib-mail reads them (internal/rfc822). Everything is linear in
// the message. A Message is only read after Parse, so it is safe to use
// from several goroutines.
//
// TestDovecot compares every item byte for byte with the lab's Dovecot
// (2.3.19) over a corpus of MIME shapes and the hostile-mail corpus; the
// answers it recorded let plain go test compare too. Where Dovecot does
// something odd, imapmsg does it as well (a multipart or message/rfc822
// past a limit is written as application/octet-stream; a part's
// HEADER.FIELDS reads past a header that a delimiter cut short; a
// multipart/digest part without Content-Type is text for PREVIEW). The
// differences that remain, and why:
//   - Fields past smime.Limits.MaxHeaderBytes of one header block are not
//     read, where Dovecot reads them all: the bound on hostile mail.
//   - BINARY of a truncated base64 or quoted-printable body: Dovecot drops
//     the connection ("Base64 data ends prematurely"); Binary returns
//     ErrInvalidData, for the relay to answer NO [PARSE] as Dovecot does
//     for other broken encodings, since a session must never drop.
//   - BINARY.SIZE: Dovecot, storing messages with LF line ends (its
//     default), mixes stored and CRLF offsets when it sums the sizes of
//     decoded parts and can count a later part's; its BINARY.SIZE then
//     disagrees with the BINARY it sends. BinarySize is always the size of
//     what Binary returns.
//   - PREVIEW converts only UTF-8, US-ASCII, ISO-8859-1 and Windows-1252
//     text (Dovecot's iconv knows every charset; another charset gives an
//     empty preview here), and knows HTML entities by Go's html package
//     (Dovecot has the HTML 4 list, matched ignoring case).
package imapmsg

import (
	"bytes"
	"strings"

	"smimeproxy/internal/rfc822"
	"smimeproxy/smime"
)

// Message is a message as an IMAP server describes it.
type Message struct {
	msg  []byte
	lim  smime.Limits
	root *part
}

// part is an entity with what Dovecot reads of its header.
type part struct {
	*smime.Part
	data     partData
	envelope *envelope // of a message/rfc822's child, and of the message itself
	children []*part
}

// partData are the Content-* fields of an entity, as Dovecot's
// message-part-data.c keeps them: nil where the field is absent.
type partData struct {
	typ, subtype     *string
	params           []rfc822.Param
	cte              *string
	id, description  *string
	md5, location    *string
	disposition      *string
	dispositionParam []rfc822.Param
	language         []string
}

// Parse reads msg within lim (nil: smime.DefaultLimits). It never fails: an
// entity that cannot be read, or lies past a limit, is described as Dovecot
// describes it (text/plain, or a leaf).
func Parse(msg []byte, lim *smime.Limits) *Message {
	t := smime.Walk(msg, lim)
	m := &Message{msg: msg, lim: t.Limits}
	m.root = m.build(t.Root, false)
	m.root.envelope = m.readEnvelope(t.Root)
	return m
}

func (m *Message) build(p *smime.Part, inMessage bool) *part {
	n := &part{Part: p}
	m.readData(n)
	if inMessage {
		n.envelope = m.readEnvelope(p)
	}
	for _, c := range p.Children {
		n.children = append(n.children, m.build(c, p.Kind == smime.Message))
	}
	return n
}

// Size is the RFC822.SIZE of the message: its size with CRLF line breaks.
func (m *Message) Size() int64 { return m.root.HeaderSize() + m.root.BodySize() }

// header is a header field as Dovecot's header parser gives it with the
// flags its mail storage uses (SKIP_INITIAL_LWSP, DROP_CR).
type header struct {
	name string
	// value is what follows the colon and the white space after it (all
	// of it when the value is nothing else, but one character), the
	// continuation lines joined by LF; nil for a line without colon.
	value []byte
}

// headers calls fn for each field of the header of p, in order, within
// the header limit, until fn returns false.
func (m *Message) headers(p *smime.Part, fn func(h header) bool) {
	block := m.msg[p.Start:p.BodyStart]
	if len(block) > m.lim.MaxHeaderBytes {
		block = block[:m.lim.MaxHeaderBytes]
	}
	var cur *header
	var value []byte
	flush := func() bool {
		if cur == nil {
			return true
		}
		h := *cur
		if h.value != nil {
			h.value = value
		}
		cur = nil
		return fn(h)
	}
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = bytes.TrimSuffix(block[:i], []byte("\r")), block[i+1:]
		} else {
			block = nil
		}
		if len(line) == 0 {
			break // the blank line
		}
		if cur != nil && (line[0] == ' ' || line[0] == '\t') {
			if cur.value != nil {
				value = append(value, '\n')
				value = append(value, line...)
			}
			continue
		}
		if !flush() {
			return
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			cur = &header{name: string(line)}
			continue
		}
		cur = &header{name: strings.TrimRight(string(line[:colon]), " \t"), value: []byte{}}
		v := line[colon+1:]
		i := 0
		for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
		if i == len(v) && i > 0 {
			i = 1
		}
		value = append([]byte{}, v[i:]...)
	}
	flush()
}

// headerString is a header value as Dovecot keeps it: NULs become U+FFFD.
func headerString(v []byte) *string {
	s := strings.ReplaceAll(string(v), "\x00", rfc822.NULReplacement)
	return &s
}

// readData reads the Content-* fields of p (message-part-data.c).
func (m *Message) readData(n *part) {
	d := &n.data
	m.headers(n.Part, func(h header) bool {
		if len(h.name) < 8 || !strings.EqualFold(h.name[:8], "Content-") || h.value == nil {
			return true
		}
		switch name := strings.ToLower(h.name[8:]); {
		case name == "id" && d.id == nil:
			d.id = headerString(h.value)
		case name == "md5" && d.md5 == nil:
			d.md5 = headerString(h.value)
		case name == "type" && d.typ == nil:
			d.readType(h.value)
		case name == "transfer-encoding" && d.cte == nil:
			p := rfc822.New(h.value)
			p.SkipLWSP()
			var tok []byte
			if p.MimeToken(&tok) >= 0 && p.SkipLWSP() == 0 && len(tok) > 0 {
				s := string(tok)
				d.cte = &s
			}
		case name == "language" && d.language == nil:
			p := rfc822.New(h.value)
			p.SkipLWSP()
			for {
				var atom []byte
				if p.Atom(&atom) < 0 {
					break
				}
				d.language = append(d.language, string(atom))
				if p.AtEnd() || p.Peek() != ',' {
					break
				}
				p.Skip()
				p.SkipLWSP()
			}
		case name == "location" && d.location == nil:
			d.location = headerString(h.value)
		case name == "description" && d.description == nil:
			d.description = headerString(h.value)
		case name == "disposition" && d.dispositionParam == nil:
			p := rfc822.New(h.value)
			p.SkipLWSP()
			var tok []byte
			if p.MimeToken(&tok) < 0 {
				return true
			}
			s := string(tok)
			d.disposition = &s
			d.dispositionParam, _ = p.Params()
		}
		return true
	})
	if !n.MIME {
		// Without MIME-Version the Content-* fields do not count.
		*d = partData{}
	}
}

// readType reads a Content-Type value, as much of it as can be read.
func (d *partData) readType(v []byte) {
	p := rfc822.New(v)
	p.SkipLWSP()
	var str []byte
	ret := p.ContentType(&str)
	t, sub, _ := bytes.Cut(str, []byte("/"))
	typ, subtype := string(t), string(sub)
	d.typ, d.subtype = &typ, &subtype
	if ret < 0 {
		return
	}
	d.params, _ = p.Params()
}
