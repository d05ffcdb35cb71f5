package smime

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"smimeproxy/internal/rfc822"
)

// This file is the package's one MIME walker. Every path that looks inside
// a message (Open, Sign, Encrypt, and the IMAP proxy describing a message)
// reads its structure through Walk, once, within Limits and in time linear
// in the message: each line is scanned once, and a line that starts with
// "--" is compared with at most one boundary per open multipart, of at most
// 80 bytes each (so at most MaxDepth*80 bytes per line).
//
// It reads MIME as Dovecot's message parser (lib-mail/message-parser.c,
// 2.3) does, so that what the proxy serves for a message is what the IMAP
// server would: a delimiter is any line that begins with "--" and an
// enclosing multipart's boundary (the longest that fits), as RFC 2046 5.1.1
// asks; the line break before it belongs to it; a delimiter of an outer
// multipart ends the inner parts; past the limits a container is a leaf.

// Limits bound the work done on one message. A zero field means its default.
type Limits struct {
	// MaxDepth bounds how deep entities nest, the message itself being the
	// first level: a multipart or message/rfc822 at the last level is not
	// looked into and counts as a single part. Default 100, as in Dovecot.
	MaxDepth int
	// MaxParts bounds the entities of a message, the message itself
	// included: past it no delimiter is recognised, so the last part runs
	// on to the end of its enclosing entity. Default 10,000, as in Dovecot.
	MaxParts int
	// MaxHeaderBytes bounds one entity's header block: the fields past it
	// are not read. Default 1 MiB, as Exim's header_maxsize.
	MaxHeaderBytes int
}

// DefaultLimits are the limits used when none are given.
var DefaultLimits = Limits{MaxDepth: 100, MaxParts: 10000, MaxHeaderBytes: 1 << 20}

func (l *Limits) orDefault() Limits {
	d := DefaultLimits
	if l == nil {
		return d
	}
	if l.MaxDepth > 0 {
		d.MaxDepth = l.MaxDepth
	}
	if l.MaxParts > 0 {
		d.MaxParts = l.MaxParts
	}
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	return d
}

// Bound names one of the Limits.
type Bound string

const (
	BoundDepth  Bound = "depth"
	BoundParts  Bound = "parts"
	BoundHeader Bound = "header"
)

// ErrLimit reports a message that exceeds one of the Limits.
var ErrLimit = errors.New("smime: message exceeds a limit")

// LimitError says which of the Limits a message exceeded. It wraps
// ErrLimit.
type LimitError struct {
	Bound Bound
	Limit int
}

func (e *LimitError) Error() string { return ErrLimit.Error() + ": " + e.Reason() }

func (e *LimitError) Unwrap() error { return ErrLimit }

// Reason says what is wrong with the message in words for its sender or
// reader, without the package prefix.
func (e *LimitError) Reason() string {
	switch e.Bound {
	case BoundDepth:
		return fmt.Sprintf("it nests more than %d levels deep", e.Limit)
	case BoundParts:
		return fmt.Sprintf("it has more than %d parts", e.Limit)
	default:
		return fmt.Sprintf("a header is larger than %d bytes", e.Limit)
	}
}

// PartKind says how the walker read an entity.
type PartKind uint8

const (
	// Leaf is an entity with a body of its own; also a container the walker
	// did not look into, past MaxDepth.
	Leaf PartKind = iota
	// Multipart is a multipart entity with a boundary; its Children are its
	// body parts, possibly none.
	Multipart
	// Message is a message/rfc822 entity (or a part of a multipart/digest
	// without Content-Type); its one child is the message it holds.
	Message
)

// Tree is the structure of one message.
type Tree struct {
	Root *Part
	// Limit is the first of the Limits the message exceeded; nil when none.
	// The tree is then complete down to where the walker stopped looking.
	Limit *LimitError
	// Parts is how many entities the tree holds, Root included.
	Parts int
	// Limits are the limits the walker applied, defaults filled in.
	Limits Limits
}

// Part is one entity of a message, as offsets into the message: its header
// block is msg[Start:BodyStart] (blank line included) and its body
// msg[BodyStart:End], as Dovecot reads them and IMAP serves them. The line
// break before a delimiter belongs to the delimiter, except when it ends a
// line that is not the part's own (a blank line before an empty body, or
// the close delimiter of a multipart inside): Dovecot then leaves it in the
// part, where RFC 2046 gives it to the delimiter all the same.
type Part struct {
	Start, BodyStart, End int
	Kind                  PartKind
	Depth                 int // the message itself is at depth 0
	// MIME reports whether the entity's Content-* fields apply: it is a body
	// part of a multipart, or has a MIME-Version or Content-Type field.
	MIME bool
	// Boundary is a Multipart's boundary parameter, as written.
	Boundary string
	Children []*Part

	// Counts of line feeds, and of those without a CR before them, at
	// Start, BodyStart and End, for the sizes in CRLF form that IMAP reports.
	start, body, end mark
	// delim is where the delimiter line that opens a body part begins,
	// its line break included: the end of the preamble for the first one.
	delim  int
	digest bool // a multipart/digest, whose parts are messages by default
	// rfcEnd is where the entity ends as RFC 2046 reads it, the line break
	// before the next delimiter always excluded: the end of the bytes a
	// multipart/signed signs.
	rfcEnd int
}

type mark struct{ lines, bare int }

// HeaderSize is the size of the header block with every line break a CRLF.
func (p *Part) HeaderSize() int64 {
	return int64(p.BodyStart - p.Start + p.body.bare - p.start.bare)
}

// BodySize is the size of the body with every line break a CRLF.
func (p *Part) BodySize() int64 { return int64(p.End - p.BodyStart + p.end.bare - p.body.bare) }

// HeaderLines is the number of lines of the header block.
func (p *Part) HeaderLines() int { return p.body.lines - p.start.lines }

// BodyLines is the number of line breaks in the body.
func (p *Part) BodyLines() int { return p.end.lines - p.body.lines }

// boundaryMax is how much of a boundary Dovecot compares (RFC 2046 allows 70).
const boundaryMax = 80

type boundary struct {
	part *Part
	b    []byte
}

// header is what the walker reads of the header of the entity it is in.
type header struct {
	field, colon, fieldEnd int // the field being read: first byte, its colon (-1: none), end of its last line
	mime, seenType, over   bool
	blank                  bool // the blank line has been read: it ends at blankEnd
	blankEnd               int
	blankMark              mark
	multipart, message     bool
	digest, hasBoundary    bool
	boundary               []byte
	boundaryFull           string
}

type walker struct {
	msg    []byte
	lim    Limits
	open   []*Part // from the root down to the entity being read
	stack  []boundary
	parts  int
	limit  *LimitError
	inHead bool
	h      header
	// prevBreak is the length of the line break that ended the previous
	// line of the region being read (0 on its first line): the break a
	// delimiter takes from the part it ends.
	prevBreak int
	lines     int // line feeds before the line being read
	bare      int // of which without a CR before them
	work      int // bytes looked at, for the tests of linearity
}

// Walk reads the MIME structure of msg within lim (nil: DefaultLimits). It
// never fails: what cannot be read as MIME is a leaf, as Dovecot reads it.
func Walk(msg []byte, lim *Limits) *Tree {
	w := newWalker(msg, lim)
	w.run()
	return &Tree{Root: w.open[0], Limit: w.limit, Parts: w.parts, Limits: w.lim}
}

func newWalker(msg []byte, lim *Limits) *walker {
	w := &walker{msg: msg, lim: lim.orDefault(), parts: 1}
	w.open = []*Part{{}}
	w.startHeader()
	return w
}

func (w *walker) cur() *Part { return w.open[len(w.open)-1] }

func (w *walker) run() {
	msg := w.msg
	for pos := 0; pos < len(msg); {
		end := len(msg)
		if j := bytes.IndexByte(msg[pos:], '\n'); j >= 0 {
			end = pos + j + 1
		}
		w.work += end - pos
		line := msg[pos:end]
		if w.inHead && w.h.blank {
			// The line after the blank line decides where the header
			// ends: a delimiter of an enclosing multipart takes the
			// blank line's break, as in Dovecot; anything else (its own
			// delimiter included) begins what follows the header.
			if b, closing := w.find(line); b >= 0 && w.stack[b].part != w.cur() {
				w.delimiter(pos, end, b, closing)
				pos = end
				continue
			}
			w.endHeaderAt(w.h.blankEnd, w.h.blankMark)
		}
		if b, closing := w.find(line); b >= 0 {
			w.delimiter(pos, end, b, closing)
			pos = end
			continue
		}
		if w.inHead {
			w.headerLine(pos, end, line)
		} else {
			w.count(end)
		}
		pos = end
	}
	for w.inHead {
		w.flushField()
		if w.h.blank {
			w.endHeaderAt(w.h.blankEnd, w.h.blankMark)
		} else {
			w.endHeaderAt(len(msg), w.mark())
		}
	}
	for _, p := range w.open {
		p.End, p.rfcEnd, p.end = len(msg), len(msg), w.mark()
	}
}

func (w *walker) mark() mark { return mark{w.lines, w.bare} }

// count moves past the line that ends at end.
func (w *walker) count(end int) {
	w.prevBreak = 0
	if end == 0 || w.msg[end-1] != '\n' {
		return
	}
	w.lines++
	w.prevBreak = 1
	if end >= 2 && w.msg[end-2] == '\r' {
		w.prevBreak = 2
	} else {
		w.bare++
	}
}

func (w *walker) limitHit(b Bound, n int) {
	if w.limit == nil {
		w.limit = &LimitError{Bound: b, Limit: n}
	}
}

// find returns the index in the stack of the boundary that line delimits,
// or -1, and whether it is a close delimiter.
func (w *walker) find(line []byte) (int, bool) {
	if len(w.stack) == 0 || len(line) < 2 || line[0] != '-' || line[1] != '-' {
		return -1, false
	}
	data := line[2:]
	size := len(data)
	if size > 0 && data[size-1] == '\n' {
		size--
		if size > 0 && data[size-1] == '\r' {
			size--
		}
		if size > 2 && data[size-1] == '-' && data[size-2] == '-' {
			size -= 2
		}
	} else if size > boundaryMax+4 {
		size = boundaryMax + 4
	}
	best := -1
	for i := len(w.stack) - 1; i >= 0; i-- {
		b := w.stack[i].b
		w.work += len(b)
		if len(b) <= size && bytes.HasPrefix(data, b) && (best < 0 || len(w.stack[best].b) < len(b)) {
			best = i
			if len(b) == size {
				break
			}
		}
	}
	if best < 0 {
		return -1, false
	}
	if w.parts >= w.lim.MaxParts {
		// No further part may begin, so no delimiter counts.
		w.limitHit(BoundParts, w.lim.MaxParts)
		return -1, false
	}
	n := len(w.stack[best].b)
	return best, len(data) >= n+2 && data[n] == '-' && data[n+1] == '-'
}

// delimiter handles the delimiter line msg[pos:end] of the boundary at
// w.stack[bi]: it ends every part inside that multipart and opens the next.
func (w *walker) delimiter(pos, end, bi int, closing bool) {
	brk := pos - w.prevBreak
	at := w.mark()
	if w.prevBreak > 0 {
		at.lines--
		if w.prevBreak == 1 {
			at.bare--
		}
	}
	owner := w.stack[bi].part
	// The line break before the delimiter goes to the delimiter's
	// multipart, and the parts it ends end before it; when it ends a
	// header line cut short by the delimiter, Dovecot gives it to the
	// body of that header's parent instead (more than the multipart when
	// it is a message/rfc822), which then ends after it.
	receiver := slices.Index(w.open, owner)
	if w.inHead && w.prevBreak > 0 {
		receiver = len(w.open) - 2
	}
	for w.inHead {
		// A header cut short by a delimiter has no blank line.
		w.flushField()
		w.endHeaderAt(brk, at)
	}
	rfcBrk := pos
	if pos > 0 && w.msg[pos-1] == '\n' {
		rfcBrk--
		if rfcBrk > 0 && w.msg[rfcBrk-1] == '\r' {
			rfcBrk--
		}
	}
	for i := len(w.open) - 1; w.open[i] != owner; i-- {
		p := w.open[i]
		if i > receiver {
			p.End, p.end = brk, at
		} else {
			p.End, p.end = pos, w.mark()
		}
		p.rfcEnd = max(rfcBrk, p.Start)
		w.open = w.open[:i]
	}
	if closing {
		w.stack = w.stack[:bi]
	} else {
		w.stack = w.stack[:bi+1]
	}
	w.count(end)
	w.prevBreak = 0
	if closing || w.msg[end-1] != '\n' {
		return // the epilogue, or the end of the message
	}
	child := &Part{Start: end, Depth: owner.Depth + 1, MIME: true, start: w.mark(), delim: brk}
	owner.Children = append(owner.Children, child)
	w.parts++
	w.open = append(w.open, child)
	w.startHeader()
	w.h.mime = true
}

func (w *walker) startHeader() {
	w.inHead = true
	w.h = header{field: -1}
	w.prevBreak = 0
}

func isBlank(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// headerLine reads the header line msg[pos:end].
func (w *walker) headerLine(pos, end int, line []byte) {
	if isBlank(line) {
		w.flushField()
		w.count(end)
		w.blankLine(end)
		return
	}
	w.count(end)
	p := w.cur()
	if w.h.over {
		return
	}
	if end-p.Start > w.lim.MaxHeaderBytes {
		w.h.over = true
		w.limitHit(BoundHeader, w.lim.MaxHeaderBytes)
		w.h.fieldEnd = min(w.h.fieldEnd, p.Start+w.lim.MaxHeaderBytes)
		w.flushField()
		return
	}
	if (line[0] == ' ' || line[0] == '\t') && w.h.field >= 0 {
		w.h.fieldEnd = end
		return
	}
	w.flushField()
	w.h.field, w.h.fieldEnd = pos, end
	w.h.colon = bytes.IndexByte(line, ':')
	if w.h.colon >= 0 {
		w.h.colon += pos
	}
}

// flushField reads the field that has just ended, if it is one the walker
// needs: MIME-Version or Content-Type.
func (w *walker) flushField() {
	h := &w.h
	if h.field < 0 {
		return
	}
	start, colon, end := h.field, h.colon, h.fieldEnd
	h.field = -1
	if colon < 0 {
		return
	}
	name := strings.TrimRight(string(w.msg[start:colon]), " \t")
	switch {
	case strings.EqualFold(name, "Mime-Version"):
		h.mime = true
	case strings.EqualFold(name, "Content-Type"):
		h.mime = true
		if !h.seenType {
			h.seenType = true
			w.contentType(w.msg[colon+1 : end])
		}
	}
}

// contentType reads the first Content-Type of an entity.
func (w *walker) contentType(value []byte) {
	h := &w.h
	p := rfc822.New(value)
	p.SkipLWSP()
	var str []byte
	ret := p.ContentType(&str)
	t := string(str)
	switch {
	case strings.EqualFold(t, "message/rfc822"):
		h.message = true
	case len(t) >= 10 && strings.EqualFold(t[:10], "multipart/"):
		h.multipart = true
		h.digest = strings.EqualFold(t[10:], "digest")
	}
	if ret < 0 || !h.multipart {
		return
	}
	params, _ := p.Params()
	for _, prm := range params {
		if strings.EqualFold(prm.Name, "boundary") {
			h.boundaryFull, h.hasBoundary = prm.Value, true
			h.boundary = []byte(prm.Value[:min(len(prm.Value), boundaryMax)])
			return
		}
	}
}

// blankLine notes the blank line that ends the header of the current
// entity at end. A multipart's boundary counts from here on; where the
// header ends is known at the next line.
func (w *walker) blankLine(end int) {
	h := &w.h
	h.blank, h.blankEnd, h.blankMark = true, end, w.mark()
	if !h.hasBoundary || !h.mime {
		return
	}
	if p := w.cur(); p.Depth+1 >= w.lim.MaxDepth {
		h.multipart = false
		w.limitHit(BoundDepth, w.lim.MaxDepth)
	} else {
		w.stack = append(w.stack, boundary{part: p, b: h.boundary})
	}
}

// endHeaderAt ends the header of the current entity at bodyStart and
// decides how to read what follows.
func (w *walker) endHeaderAt(bodyStart int, at mark) {
	p, h := w.cur(), &w.h
	w.inHead, w.prevBreak = false, 0 // a delimiter on the first line of a body takes no line break
	p.BodyStart, p.body = bodyStart, at
	if !h.mime {
		// Not MIME: its Content-* fields do not count.
		h.multipart, h.message, h.digest = false, false, false
	}
	if !h.seenType || !h.mime {
		// RFC 2046 5.1.5: in a digest, a part without a type is a message.
		h.message = len(w.open) > 1 && w.open[len(w.open)-2].digest
	}
	p.MIME = h.mime
	switch {
	case h.multipart:
		p.Kind, p.Boundary, p.digest = Multipart, h.boundaryFull, h.digest
	case !h.message:
	case p.Depth+1 >= w.lim.MaxDepth:
		w.limitHit(BoundDepth, w.lim.MaxDepth)
	case w.parts >= w.lim.MaxParts:
		w.limitHit(BoundParts, w.lim.MaxParts)
	default:
		p.Kind = Message
		child := &Part{Start: bodyStart, Depth: p.Depth + 1, start: at}
		p.Children = append(p.Children, child)
		w.parts++
		w.open = append(w.open, child)
		w.startHeader()
	}
}
