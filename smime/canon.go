package smime

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"smimeproxy/internal/ascii"
)

// Outgoing messages are put in the form RFC 8551 3.1 asks for before they are
// signed or encrypted: canonical CRLF line breaks, and every part that is not
// 7-bit safe re-encoded, so that the bytes signed are exactly the bytes sent
// and no relay has reason to touch them.

// maxLine is the longest line SMTP carries, without its CRLF (RFC 5322 2.1.1).
const maxLine = 998

// prepared is an outgoing message split for wrapping: the header fields that
// stay outside, in CRLF form, and the canonical MIME entity that goes inside.
type prepared struct {
	outer      [][]byte
	hasMIMEVer bool
	// inner is the canonical entity in pieces, size bytes in all: each
	// caller writes them once where they are to go.
	inner [][]byte
	size  int
}

// content is the canonical entity in one slice.
func (p *prepared) content() []byte { return bytes.Join(p.inner, nil) }

// writeContent writes the canonical entity to b.
func (p *prepared) writeContent(b *bytes.Buffer) {
	for _, piece := range p.inner {
		b.Write(piece)
	}
}

// outerSize is how many bytes writeOuter writes besides the content fields.
func (p *prepared) outerSize() int {
	n := len("MIME-Version: 1.0\r\n\r\n")
	for _, f := range p.outer {
		n += len(f)
	}
	return n
}

// prepare splits msg into the message header, which stays outside, and the
// content entity (its Content-* fields and body), canonicalised. A message
// that would exceed lim once wrapped in wrap more levels of
// multipart/signed is refused with a *LimitError. With hp, the content
// entity is the payload of header protection (protect.go).
func prepare(msg []byte, lim *Limits, wrap int, hp HeaderProtection) (*prepared, error) {
	l := lim.orDefault()
	walk := l
	walk.MaxDepth = max(l.MaxDepth-wrap, 1)
	walk.MaxParts = max(l.MaxParts-2*wrap, 1) // the wrapper and the signature part
	t := Walk(msg, &walk)
	if t.Limit == nil && wrap > 0 && t.Parts+2 >= l.MaxParts {
		// The close delimiter of multipart/signed counts only while one
		// more part would fit, as every delimiter does.
		t.Limit = &LimitError{Bound: BoundParts}
	}
	if le := t.Limit; le != nil {
		switch le.Bound {
		case BoundDepth:
			le.Limit = l.MaxDepth
		case BoundParts:
			le.Limit = l.MaxParts
		}
		return nil, le
	}
	e, err := parseEntity(msg, l.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	p := &prepared{}
	var content []field
	for _, f := range e.fields {
		switch {
		case isContentField(f.name):
			content = append(content, f)
		default:
			p.hasMIMEVer = p.hasMIMEVer || f.name == "Mime-Version"
			if out := outside(f.name, crlfField(f.raw), hp); out != nil {
				p.outer = append(p.outer, out)
			}
		}
	}
	if h := headerOf(content); h.Get("Content-Type") == "" {
		if sevenBitSafe(e.body) {
			// Say what RFC 2045 5.2 implies: some clients misread a part with no header.
			content = append(content, field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=us-ascii\r\n")})
		}
	}
	root := &entity{fields: content, header: headerOf(content), body: e.body}
	c := &canon{buf: msg, lim: l}
	if hp != NoHeaderProtection {
		if err := c.protect(e, root, t.Root, hp); err != nil {
			return nil, err
		}
	}
	if err := c.entity(root, t.Root); err != nil {
		return nil, err
	}
	p.inner = c.out
	for _, piece := range c.out {
		p.size += len(piece)
	}
	return p, nil
}

// protect makes root, the content entity of msg, the payload of header
// protection in mode: the protected fields go in, its Content-Type says hp,
// and the main body parts are to show what the outer header hides.
func (c *canon) protect(msg, root *entity, p *Part, mode HeaderProtection) error {
	if Classify(root.header) != Plain {
		return errProtectedContent
	}
	content := slices.Clone(root.fields)
	ct := slices.IndexFunc(content, func(f field) bool { return f.name == "Content-Type" })
	if ct < 0 {
		// 8-bit text of no stated type, which leaf would label the same way.
		charset := "utf-8"
		if !utf8.Valid(root.body) {
			charset = "unknown-8bit"
		}
		content = append(content, field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=" + charset + "\r\n")})
		ct = len(content) - 1
	}
	value := "clear"
	if mode == ProtectCipher {
		value = "cipher"
	}
	raw, ok := withParams(content[ct].raw, [2]string{hpParam, value})
	if !ok {
		return fmt.Errorf("%w: its Content-Type cannot be read to mark it as protected", ErrMalformed)
	}
	content[ct].raw = raw
	pr := protect(msg, mode)
	fields := slices.Concat(pr.copies, content, pr.hpOuter)
	*root = entity{fields: fields, header: headerOf(fields), body: root.body}
	if len(pr.legacy) > 0 {
		c.legacy = pr.legacy
		c.main = map[*Part]bool{}
		mainBodyParts(c.buf, root, p, c.lim.MaxHeaderBytes, func(_ *entity, p *Part) { c.main[p] = true })
	}
	return nil
}

// writeOuter writes the outer header fields, then MIME-Version when the
// message had none, then the given content fields and the blank line. It
// returns where in b the content fields begin.
func (p *prepared) writeOuter(b *bytes.Buffer, contentFields ...string) int {
	for _, f := range p.outer {
		b.Write(f)
	}
	if !p.hasMIMEVer {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	header := b.Len()
	for _, f := range contentFields {
		b.WriteString(f)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return header
}

// crlfField returns a header field in CRLF form, ending in CRLF.
func crlfField(raw []byte) []byte {
	raw = toCRLF(raw)
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		raw = append(raw[:len(raw):len(raw)], '\r', '\n')
	}
	return raw
}

var crlf = []byte("\r\n")

// canon writes entities in canonical, 7-bit safe form as a list of pieces,
// most of them slices of the input, joined once at the end: an entity
// nested deep is written once, never copied again by each level.
type canon struct {
	buf    []byte // the message the walker read
	lim    Limits
	out    [][]byte
	unsafe int // how many pieces of out are not 7-bit safe
	// legacy is what the Legacy Display Element in each of the main body
	// parts shows; nil: none.
	legacy []legacyLine
	main   map[*Part]bool
}

func (c *canon) put(b []byte, safe bool) int {
	c.out = append(c.out, b)
	if !safe {
		c.unsafe++
	}
	return len(c.out) - 1
}

// entity writes e, which the walker found as p in c.buf.
func (c *canon) entity(e *entity, p *Part) error {
	t, _ := mediaType(e.header)
	switch {
	case t == "multipart/signed":
		// Signed bytes must not change; RFC 1847 verifiers canonicalise line breaks themselves.
		body := toCRLF(e.body)
		c.join(e.fields, "", body, sevenBitSafe(body))
		return nil
	case p.Kind == Multipart && len(p.Children) > 0:
		return c.multipart(e, p)
	case p.Kind == Multipart || strings.HasPrefix(t, "multipart/"):
		// Unreadable multipart structure: it may pass only as it is.
		if !sevenBitSafe(e.body) {
			return fmt.Errorf("%w: %s without a readable boundary holds 8-bit data", ErrMalformed, t)
		}
		c.join(e.fields, "", toCRLF(e.body), true)
		return nil
	case p.Kind == Message && !isEncodedCTE(transferEncoding(e.header)):
		child := p.Children[0]
		inner, err := parseEntity(c.buf[child.Start:child.rfcEnd], c.lim.MaxHeaderBytes)
		if err != nil {
			return c.leaf(e, t)
		}
		var ctes []int
		for _, f := range e.fields {
			raw := crlfField(f.raw)
			i := c.put(raw, sevenBitSafe(raw))
			if f.name == "Content-Transfer-Encoding" {
				ctes = append(ctes, i)
			}
		}
		c.put(crlf, true)
		unsafe := c.unsafe
		if err := c.entity(inner, child); err != nil {
			return err
		}
		if c.unsafe == unsafe && transferEncoding(e.header) != "" {
			// The message inside is 7-bit now: say so.
			for k, i := range ctes {
				if !sevenBitSafe(c.out[i]) {
					c.unsafe--
				}
				c.out[i] = nil
				if k == 0 {
					c.out[i] = []byte("Content-Transfer-Encoding: 7bit\r\n")
				}
			}
		}
		return nil
	case c.main[p]:
		if ok, err := c.legacyLeaf(e, t); ok || err != nil {
			return err
		}
		return c.leaf(e, t)
	default:
		return c.leaf(e, t)
	}
}

func isEncodedCTE(cte string) bool { return cte == "base64" || cte == "quoted-printable" }

func (c *canon) multipart(e *entity, p *Part) error {
	c.fields(e.fields, "")
	c.put(crlf, true)
	if pre := c.buf[p.BodyStart:p.Children[0].delim]; len(pre) > 0 && sevenBitSafe(pre) {
		c.put(toCRLF(pre), true)
		c.put(crlf, true)
	}
	delim := []byte("--" + p.Boundary + "\r\n")
	safe := sevenBitSafe(delim)
	for _, child := range p.Children {
		part, err := parseEntity(c.buf[child.Start:child.rfcEnd], c.lim.MaxHeaderBytes)
		if err != nil {
			return err
		}
		c.put(delim, safe)
		if err := c.entity(part, child); err != nil {
			return err
		}
		c.put(crlf, true)
	}
	// The epilogue is dropped: text after the close delimiter is invisible,
	// and Outlook rejects signatures over it.
	c.put([]byte("--"+p.Boundary+"--"), safe)
	return nil
}

// leaf writes a single-part entity, re-encoded when its body is not 7-bit
// safe: quoted-printable for text, base64 for anything else.
func (c *canon) leaf(e *entity, t string) error {
	cte := transferEncoding(e.header)
	body := e.body
	if safe, crlf := scan7bit(body); safe {
		newCTE := ""
		if cte == "8bit" || cte == "binary" {
			newCTE = "7bit"
		}
		if !crlf {
			body = toCRLF(body)
		}
		c.join(e.fields, newCTE, body, true)
		return nil
	}
	switch cte {
	case "", "7bit", "8bit", "binary":
	case "base64", "quoted-printable":
		decoded, err := decodeBody(e)
		if err != nil {
			return err
		}
		body = decoded
	default:
		return fmt.Errorf("%w: unknown Content-Transfer-Encoding %q on 8-bit data", ErrMalformed, cte)
	}
	fields := e.fields
	if e.header.Get("Content-Type") == "" && !utf8.Valid(body) {
		// RFC 1428: 8-bit text of no stated charset.
		fields = append(fields[:len(fields):len(fields)], field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=unknown-8bit\r\n")})
	} else if e.header.Get("Content-Type") == "" {
		fields = append(fields[:len(fields):len(fields)], field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=utf-8\r\n")})
	}
	if strings.HasPrefix(t, "text/") {
		c.join(fields, "quoted-printable", encodeQP(body), true)
		return nil
	}
	c.join(fields, "base64", appendBase64(nil, body), true)
	return nil
}

// join writes fields (with Content-Transfer-Encoding set to cte when cte is
// not empty), the blank line and body.
func (c *canon) join(fields []field, cte string, body []byte, bodySafe bool) {
	c.fields(fields, cte)
	c.put(crlf, true)
	c.put(body, bodySafe)
}

// fields writes fields in CRLF form. A non-empty cte replaces the
// Content-Transfer-Encoding field in place, or is added at the end.
func (c *canon) fields(fields []field, cte string) {
	done := cte == ""
	for _, f := range fields {
		if f.name == "Content-Transfer-Encoding" && cte != "" {
			if !done {
				c.put([]byte("Content-Transfer-Encoding: "+cte+"\r\n"), true)
				done = true
			}
			continue
		}
		raw := crlfField(f.raw)
		c.put(raw, sevenBitSafe(raw))
	}
	if !done {
		c.put([]byte("Content-Transfer-Encoding: "+cte+"\r\n"), true)
	}
}

// sevenBitSafe reports whether b can travel as 7bit once bare LFs become
// CRLF: no 8-bit bytes, no NUL, no CR outside CRLF, no line over 998 octets.
func sevenBitSafe(b []byte) bool {
	safe, _ := scan7bit(b)
	return safe
}

// scan7bit is sevenBitSafe, and says too whether every line break in b is
// a CRLF already, so that a body that needs nothing is read once. It checks
// the bytes of the whole of b at once and then goes a line at a time, with
// the library's vectorised searches: byte by byte it was much of the cost
// of signing a large message.
func scan7bit(b []byte) (safe, crlf bool) {
	if !ascii.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		return false, false
	}
	crlf = true
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			} else {
				crlf = false
			}
		} else {
			b = nil
		}
		if len(line) > maxLine || bytes.IndexByte(line, '\r') >= 0 {
			return false, false
		}
	}
	return true, crlf
}

// encodeQP encodes text as quoted-printable (RFC 2045 6.7) with CRLF line
// breaks for its LF or CRLF ones. A '-' that would start a line after a soft
// break is encoded, so that breaking a line never makes a delimiter.
func encodeQP(text []byte) []byte {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(text)+len(text)/3+16)
	for len(text) > 0 {
		line, rest, broken := bytes.Cut(text, []byte("\n"))
		if broken {
			line = bytes.TrimSuffix(line, []byte("\r"))
		}
		col, soft := 0, false
		for i, c := range line {
			if col >= 73 { // room for "=XX" before the soft break, 76 in all
				out = append(out, '=', '\r', '\n')
				col, soft = 0, true
			}
			if c == '=' || c < ' ' && c != '\t' || c > '~' ||
				col == 0 && soft && c == '-' ||
				(c == ' ' || c == '\t') && i == len(line)-1 {
				out = append(out, '=', hex[c>>4], hex[c&15])
				col += 3
				continue
			}
			out = append(out, c)
			col++
		}
		if broken {
			out = append(out, '\r', '\n')
		}
		text = rest
	}
	return out
}

// appendBase64 appends data in base64, in lines of 76 characters with CRLF
// breaks between them.
func appendBase64(dst, data []byte) []byte {
	const chunk = 57 // bytes per 76-character line
	dst = slices.Grow(dst, base64Len(len(data)))
	for len(data) > chunk {
		dst = base64.StdEncoding.AppendEncode(dst, data[:chunk])
		dst = append(dst, '\r', '\n')
		data = data[chunk:]
	}
	return base64.StdEncoding.AppendEncode(dst, data)
}

// base64Lines writes to b in base64 what is written to it, in whatever
// pieces, broken into lines as appendBase64 breaks them; finish writes the
// last line.
type base64Lines struct {
	b       *bytes.Buffer
	partial [57]byte // the start of a line, not yet encoded
	n       int
	started bool
}

func (w *base64Lines) Write(p []byte) (int, error) {
	written := len(p)
	if w.n > 0 {
		k := copy(w.partial[w.n:], p)
		w.n += k
		p = p[k:]
		if w.n < len(w.partial) {
			return written, nil
		}
		w.line(w.partial[:])
		w.n = 0
	}
	if whole := len(p) - len(p)%len(w.partial); whole > 0 {
		w.line(p[:whole])
		p = p[whole:]
	}
	w.n = copy(w.partial[:], p)
	return written, nil
}

// line writes data, whole lines but for the last, after the break that
// ends the line before.
func (w *base64Lines) line(data []byte) {
	if w.started {
		w.b.WriteString("\r\n")
	}
	w.started = true
	w.b.Write(appendBase64(w.b.AvailableBuffer(), data))
}

// finish writes what is left, the last line.
func (w *base64Lines) finish() {
	if w.n > 0 {
		w.line(w.partial[:w.n])
		w.n = 0
	}
}

// base64Len is how long appendBase64 makes n bytes.
func base64Len(n int) int {
	lines := (n + 56) / 57
	return base64.StdEncoding.EncodedLen(n) + 2*max(lines-1, 0)
}
