// Package rfc822 reads the tokens of RFC 5322 and RFC 2045 header values
// (atoms, quoted strings, comments, domains, media types and parameters)
// the way Dovecot's lib-mail reads them (rfc822-parser.c, rfc2231-parser.c),
// so that what the proxy makes of a header is what Dovecot makes of it.
//
// The functions follow Dovecot's convention for results: 1 when more input
// follows, 0 at the end of the input, -1 on a syntax error. Every loop
// moves forward, so each value is read in time linear in its length.
package rfc822

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
)

// NULReplacement stands for a NUL byte in quoted strings, comments and
// domain literals when Parser.ReplaceNUL is set.
const NULReplacement = "\uFFFD"

// atext classifies bytes: 0 not atext, 1 atext that is no tspecial, 2 a
// letter, digit or 8-bit byte, 4 atext that is a tspecial (RFC 2045).
var atext = func() [256]byte {
	var t [256]byte
	for c := 0x80; c < 0x100; c++ {
		t[c] = 2
	}
	for _, c := range []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		t[c] = 2
	}
	for _, c := range []byte("!#$%&'*+-^_`{|}~") {
		t[c] = 1
	}
	for _, c := range []byte("/=?") {
		t[c] = 4
	}
	return t
}()

// IsAtext reports whether c may appear in an atom.
func IsAtext(c byte) bool { return atext[c] != 0 }

// isToken reports whether c may appear in a MIME token.
func isToken(c byte) bool { return atext[c]&3 != 0 }

// Parser reads one header value.
type Parser struct {
	data []byte
	pos  int
	// Comment, when not nil, receives the text of the last comment skipped.
	Comment *[]byte
	// ReplaceNUL makes NUL bytes in quoted strings, comments and domain
	// literals read as NULReplacement.
	ReplaceNUL bool
}

// New returns a parser of value.
func New(value []byte) *Parser { return &Parser{data: value} }

// Pos is how much of the value has been read.
func (p *Parser) Pos() int { return p.pos }

// SetPos moves back to a position Pos returned.
func (p *Parser) SetPos(pos int) { p.pos = pos }

// Peek returns the next byte, or 0 at the end.
func (p *Parser) Peek() byte {
	if p.pos >= len(p.data) {
		return 0
	}
	return p.data[p.pos]
}

// AtEnd reports whether the whole value has been read.
func (p *Parser) AtEnd() bool { return p.pos >= len(p.data) }

// Skip steps over the next byte.
func (p *Parser) Skip() { p.pos++ }

func (p *Parser) more() int {
	if p.pos < len(p.data) {
		return 1
	}
	return 0
}

// SkipComment skips the comment at the parser, nested ones included.
func (p *Parser) SkipComment() int {
	if p.Comment != nil {
		*p.Comment = (*p.Comment)[:0]
	}
	p.pos++
	start := p.pos
	level := 1
	for ; p.pos < len(p.data); p.pos++ {
		switch p.data[p.pos] {
		case 0:
			if p.Comment != nil && p.ReplaceNUL {
				*p.Comment = append(*p.Comment, p.data[start:p.pos]...)
				*p.Comment = append(*p.Comment, NULReplacement...)
				start = p.pos + 1
			}
		case '(':
			level++
		case ')':
			level--
			if level == 0 {
				if p.Comment != nil {
					*p.Comment = append(*p.Comment, p.data[start:p.pos]...)
				}
				p.pos++
				return p.more()
			}
		case '\n':
			if p.Comment == nil {
				break
			}
			end := p.pos
			if end > start && p.data[end-1] == '\r' {
				end--
			}
			*p.Comment = append(*p.Comment, p.data[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.data) {
				return -1
			}
			if c := p.data[p.pos]; c == '\r' || c == '\n' || c == 0 {
				p.pos--
				break
			}
			if p.Comment != nil {
				*p.Comment = append(*p.Comment, p.data[start:p.pos-1]...)
			}
			start = p.pos
		}
	}
	return -1
}

// SkipLWSP skips white space, line breaks and comments.
func (p *Parser) SkipLWSP() int {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
			continue
		case '(':
			if p.SkipComment() < 0 {
				return -1
			}
			continue
		}
		break
	}
	return p.more()
}

// Atom appends an atom to str.
func (p *Parser) Atom(str *[]byte) int {
	if p.pos >= len(p.data) || !IsAtext(p.data[p.pos]) {
		return -1
	}
	start := p.pos
	for p.pos++; p.pos < len(p.data); p.pos++ {
		if !IsAtext(p.data[p.pos]) {
			*str = append(*str, p.data[start:p.pos]...)
			return p.SkipLWSP()
		}
	}
	*str = append(*str, p.data[start:]...)
	return 0
}

// DotAtom appends a dot-atom, white space around the dots removed.
func (p *Parser) DotAtom(str *[]byte) int {
	if p.pos >= len(p.data) || !IsAtext(p.data[p.pos]) {
		return -1
	}
	start := p.pos
	p.pos++
	for p.pos < len(p.data) {
		if IsAtext(p.data[p.pos]) {
			p.pos++
			continue
		}
		if start == p.pos {
			return -1
		}
		*str = append(*str, p.data[start:p.pos]...)
		if ret := p.SkipLWSP(); ret <= 0 {
			return ret
		}
		if p.data[p.pos] != '.' {
			return 1
		}
		p.pos++
		*str = append(*str, '.')
		if p.SkipLWSP() <= 0 {
			return -1
		}
		start = p.pos
	}
	*str = append(*str, p.data[start:]...)
	return 0
}

// MimeToken appends a MIME token (RFC 2045), which may be empty.
func (p *Parser) MimeToken(str *[]byte) int {
	start := p.pos
	for ; p.pos < len(p.data); p.pos++ {
		if c := p.data[p.pos]; !isToken(c) && c != '.' {
			*str = append(*str, p.data[start:p.pos]...)
			return p.SkipLWSP()
		}
	}
	*str = append(*str, p.data[start:]...)
	return 0
}

// QuotedString appends the content of the quoted string at the parser,
// unescaped, without the line breaks of folding.
func (p *Parser) QuotedString(str *[]byte) int {
	p.pos++
	start := p.pos
	for ; p.pos < len(p.data); p.pos++ {
		switch p.data[p.pos] {
		case 0:
			if p.ReplaceNUL {
				*str = append(*str, p.data[start:p.pos]...)
				*str = append(*str, NULReplacement...)
				start = p.pos + 1
			}
		case '"':
			*str = append(*str, p.data[start:p.pos]...)
			p.pos++
			return p.SkipLWSP()
		case '\n':
			end := p.pos
			if end > start && p.data[end-1] == '\r' {
				end--
			}
			*str = append(*str, p.data[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.data) {
				return -1
			}
			if c := p.data[p.pos]; c == '\r' || c == '\n' || c == 0 {
				p.pos--
				break
			}
			*str = append(*str, p.data[start:p.pos-1]...)
			start = p.pos
		}
	}
	return -1
}

func (p *Parser) atomOrDot(str *[]byte) int {
	start := p.pos
	for ; p.pos < len(p.data); p.pos++ {
		if c := p.data[p.pos]; !IsAtext(c) && c != '.' {
			*str = append(*str, p.data[start:p.pos]...)
			return p.SkipLWSP()
		}
	}
	*str = append(*str, p.data[start:]...)
	return 0
}

// Phrase appends a phrase: words (atoms, dots, quoted strings) joined by
// single spaces.
func (p *Parser) Phrase(str *[]byte) int {
	if p.pos >= len(p.data) {
		return 0
	}
	if p.data[p.pos] == '.' {
		return -1
	}
	for {
		var ret int
		if p.data[p.pos] == '"' {
			ret = p.QuotedString(str)
		} else {
			ret = p.atomOrDot(str)
		}
		if ret <= 0 {
			return ret
		}
		if c := p.data[p.pos]; !IsAtext(c) && c != '"' && c != '.' {
			break
		}
		*str = append(*str, ' ')
	}
	return p.SkipLWSP()
}

func (p *Parser) domainLiteral(str *[]byte) int {
	start := p.pos
	for p.pos++; p.pos < len(p.data); p.pos++ {
		switch p.data[p.pos] {
		case 0:
			if p.ReplaceNUL {
				*str = append(*str, p.data[start:p.pos]...)
				*str = append(*str, NULReplacement...)
				start = p.pos + 1
			}
		case '[':
			return -1
		case ']':
			*str = append(*str, p.data[start:p.pos+1]...)
			p.pos++
			return p.SkipLWSP()
		case '\n':
			end := p.pos
			if end > start && p.data[end-1] == '\r' {
				end--
			}
			*str = append(*str, p.data[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.data) {
				return -1
			}
			if c := p.data[p.pos]; c == '\r' || c == '\n' || c == 0 {
				*str = append(*str, p.data[start:p.pos]...)
				start = p.pos
				p.pos--
			}
		}
	}
	return -1
}

// Domain appends the domain after the '@' at the parser: a dot-atom or a
// domain literal.
func (p *Parser) Domain(str *[]byte) int {
	p.pos++
	if p.SkipLWSP() <= 0 {
		return -1
	}
	if p.data[p.pos] == '[' {
		return p.domainLiteral(str)
	}
	return p.DotAtom(str)
}

// ContentType appends "type/subtype" of a Content-Type value. On a syntax
// error it may leave the type alone in str, as Dovecot does.
func (p *Parser) ContentType(str *[]byte) int {
	start := len(*str)
	if p.SkipLWSP() <= 0 {
		return -1
	}
	if p.MimeToken(str) <= 0 || len(*str) == start {
		return -1
	}
	if p.data[p.pos] != '/' {
		*str = (*str)[:start]
		return -1
	}
	p.pos++
	if p.SkipLWSP() <= 0 {
		*str = (*str)[:start]
		return -1
	}
	*str = append(*str, '/')
	sub := len(*str)
	ret := p.MimeToken(str)
	if ret < 0 || len(*str) == sub || p.pos < len(p.data) && p.data[p.pos] != ';' {
		*str = (*str)[:start]
		return -1
	}
	return ret
}

// contentParam reads one "; key=value" parameter.
func (p *Parser) contentParam(key, value *[]byte) int {
	*key, *value = (*key)[:0], (*value)[:0]
	if p.pos >= len(p.data) {
		return 0
	}
	if p.data[p.pos] != ';' {
		return -1
	}
	p.pos++
	if p.SkipLWSP() <= 0 {
		return -1
	}
	if p.MimeToken(key) <= 0 {
		return -1
	}
	if p.data[p.pos] != '=' {
		return -1
	}
	p.pos++
	ret := p.SkipLWSP()
	switch {
	case ret <= 0:
	case p.data[p.pos] == '"':
		ret = p.QuotedString(value)
	case p.data[p.pos] == '=':
		// An encoded word sent unquoted (RFC 2047 forbids it, mailers do it).
		for p.pos < len(p.data) {
			c := p.data[p.pos]
			if c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				break
			}
			*value = append(*value, c)
			p.pos++
		}
	default:
		ret = p.MimeToken(value)
	}
	if ret < 0 {
		return -1
	}
	return 1
}

// Param is a parameter of a Content-Type or Content-Disposition value.
type Param struct{ Name, Value string }

type rfc2231Param struct {
	key, value string
	idx        int
	extended   bool
}

// Params reads the parameters that follow a media type or disposition and
// joins RFC 2231 continuations ("name*0", "name*1*") into one parameter
// named "name" (or "name*" when encoded), its value still encoded. Plain
// parameters come first, in order, then the joined ones, sorted by name.
// broken reports a parameter that could not be read; the others are kept.
func (p *Parser) Params() (params []Param, broken bool) {
	var key, value []byte
	var ext []rfc2231Param
	for {
		ret := p.contentParam(&key, &value)
		if ret == 0 {
			break
		}
		if ret < 0 {
			broken = true
			if p.pos >= len(p.data) {
				break
			}
			p.pos++
			continue
		}
		k := string(key)
		star := strings.IndexByte(k, '*')
		if star < 0 {
			params = append(params, Param{k, string(value)})
			continue
		}
		r := rfc2231Param{key: k[:star], value: string(value)}
		i := star
		if i+1 < len(k) {
			i++
			for ; i < len(k) && k[i] >= '0' && k[i] <= '9'; i++ {
				r.idx = r.idx*10 + int(k[i]-'0')
			}
		}
		if i < len(k) && k[i] == '*' {
			r.extended = true
			i++
		}
		if i < len(k) {
			params = append(params, Param{k, string(value)})
			continue
		}
		ext = append(ext, r)
	}
	if len(ext) == 0 {
		return params, broken
	}
	slices.SortStableFunc(ext, func(a, b rfc2231Param) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.idx - b.idx
	})
	for i := 0; i < len(ext); {
		ok, extended := true, false
		j := i
		for next := 0; j < len(ext) && strings.EqualFold(ext[i].key, ext[j].key); j++ {
			ok = ok && ext[j].idx == next
			extended = extended || ext[j].extended
			next++
		}
		if !ok {
			for _, r := range ext[i:j] {
				name := r.key + "*" + strconv.Itoa(r.idx)
				if r.extended {
					name += "*"
				}
				params = append(params, Param{name, r.value})
			}
			i = j
			continue
		}
		var v strings.Builder
		if !ext[i].extended && extended {
			v.WriteString("''")
		}
		for _, r := range ext[i:j] {
			if !r.extended && extended {
				v.WriteString(strings.ReplaceAll(r.value, "%", "%25"))
			} else {
				v.WriteString(r.value)
			}
		}
		name := ext[i].key
		if extended {
			name += "*"
		}
		params = append(params, Param{name, v.String()})
		i = j
	}
	return params, broken
}

// MediaType reads a Content-Type value as Dovecot does: the type and
// subtype as written (not lower-cased) and the parameters. ok is false when
// the value is not "type/subtype"; typ may then still hold a lone type.
func MediaType(value []byte) (typ, subtype string, params []Param, ok bool) {
	p := New(value)
	p.SkipLWSP()
	var str []byte
	ret := p.ContentType(&str)
	t, sub, _ := bytes.Cut(str, []byte("/"))
	if ret < 0 {
		return string(t), string(sub), nil, false
	}
	params, _ = p.Params()
	return string(t), string(sub), params, true
}
