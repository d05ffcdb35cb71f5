package imapmsg

import (
	"html"
	"strconv"
	"strings"
	"unicode/utf8"

	"smimeproxy/internal/rfc822"
	"smimeproxy/smime"
)

// previewChars is how many characters Dovecot puts in a preview.
const previewChars = 200

// Preview is the PREVIEW of the message (RFC 8970) as Dovecot 2.3
// computes it (lib-mail/message-snippet.c): the start of the first part,
// in order, that is text (text/*, or no Content-Type), decoded to UTF-8,
// HTML reduced to text, white space runs made one space; quoted lines
// count only when nothing else does, shown after a ">". Multiparts are
// looked into, a message/rfc822 is not (and counts as no text); a part of
// a multipart/digest without Content-Type is text, its header included.
// Empty when the first text part has no text.
func (m *Message) Preview() string {
	var first *part
	var walk func(p *part)
	walk = func(p *part) {
		for _, c := range p.children {
			if first == nil && p.Kind == smime.Multipart {
				walk(c)
			}
		}
		if first == nil && p.Kind != smime.Multipart && m.isText(p) {
			first = p
		}
	}
	walk(m.root)
	if first == nil {
		return ""
	}
	text, ok := m.previewText(first)
	if !ok {
		return ""
	}
	if s := snippet(text); s.has() {
		return s.String()
	}
	return ""
}

// contentType is p's first Content-Type as Dovecot's message decoder reads
// it: "type/subtype" as written, what could be read of it when broken
// (perhaps "" or a lone type), and false when p has none.
func (m *Message) contentType(p *smime.Part) (typ string, params []rfc822.Param, ok bool) {
	m.headers(p, func(h header) bool {
		if h.value == nil || !strings.EqualFold(h.name, "Content-Type") {
			return true
		}
		rp := rfc822.New(h.value)
		rp.SkipLWSP()
		var str []byte
		if rp.ContentType(&str) >= 0 {
			params, _ = rp.Params()
		}
		typ, ok = string(str), true
		return false
	})
	return typ, params, ok
}

// isText reports whether Dovecot's preview takes p as text.
func (m *Message) isText(p *part) bool {
	typ, _, ok := m.contentType(p.Part)
	return !ok || len(typ) >= 5 && strings.EqualFold(typ[:5], "text/")
}

// previewText is the decoded UTF-8 text of p, or false when it has none
// (an encoding the decoder does not know, or a charset this package does
// not convert).
func (m *Message) previewText(p *part) (string, bool) {
	typ, params, _ := m.contentType(p.Part)
	charset := ""
	for _, prm := range params {
		if strings.EqualFold(prm.Name, "charset") {
			charset = strings.ToLower(prm.Value)
			break
		}
	}
	body := m.msg[p.BodyStart:p.End]
	var dec []byte
	switch cte, _ := m.transferEncoding(p.Part); cte {
	case "base64":
		var err error
		if dec, err = decodeBase64(body); err != nil {
			return "", false
		}
	case "quoted-printable":
		dec = decodeQPLenient(body)
	case "unknown":
		return "", false
	default:
		dec = body
	}
	text, ok := toUTF8(dec, charset)
	if !ok {
		return "", false
	}
	if strings.EqualFold(typ, "text/html") {
		text = htmlText(text)
	}
	return text, true
}

// toUTF8 converts text in charset to UTF-8.
func toUTF8(b []byte, charset string) (string, bool) {
	switch charset {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return strings.ToValidUTF8(string(b), "\uFFFD"), true
	case "iso-8859-1", "latin1", "iso_8859-1", "windows-1252", "cp1252":
		var s strings.Builder
		for _, c := range b {
			if r, ok := cp1252[c]; ok && charset[0] != 'i' && charset[0] != 'l' {
				s.WriteRune(r)
			} else {
				s.WriteRune(rune(c))
			}
		}
		return s.String(), true
	}
	return "", false
}

// cp1252 are the characters Windows-1252 puts where ISO-8859-1 has C1 controls.
var cp1252 = map[byte]rune{
	0x80: '€', 0x82: '‚', 0x83: 'ƒ', 0x84: '„', 0x85: '…', 0x86: '†', 0x87: '‡', 0x88: 'ˆ', 0x89: '‰',
	0x8a: 'Š', 0x8b: '‹', 0x8c: 'Œ', 0x8e: 'Ž', 0x91: '‘', 0x92: '’', 0x93: '“', 0x94: '”', 0x95: '•',
	0x96: '–', 0x97: '—', 0x98: '˜', 0x99: '™', 0x9a: 'š', 0x9b: '›', 0x9c: 'œ', 0x9e: 'ž', 0x9f: 'Ÿ',
}

// snippetText collects one part's preview (message-snippet.c).
type snippetText struct {
	text, quoted         []rune
	hasText, hasQuoted   bool
	left, quotedLeft     int
	newline, inQuote, ws bool
}

func (s *snippetText) has() bool { return s.hasText || s.hasQuoted }

func (s *snippetText) String() string {
	if s.hasText {
		return strings.TrimLeft(string(s.text), " \t\r\n\v\f")
	}
	return ">" + strings.TrimLeft(string(s.quoted), " \t\r\n\v\f")
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r'
}

func snippet(text string) *snippetText {
	s := &snippetText{left: previewChars, quotedLeft: previewChars - 1, newline: true}
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if s.newline {
			s.newline = false
			s.inQuote = r == '>'
			if s.inQuote {
				i += n
				if i >= len(text) {
					break
				}
				r, n = utf8.DecodeRuneInString(text[i:])
			}
		}
		i += n
		if !s.add(r) {
			break
		}
	}
	return s
}

// add adds one character; false when the preview is full.
func (s *snippetText) add(r rune) bool {
	out, has, left := &s.text, &s.hasText, &s.left
	if s.inQuote {
		out, has, left = &s.quoted, &s.hasQuoted, &s.quotedLeft
	}
	switch {
	case r == '\uFEFF' || r == 0:
	case isSpace(r):
		if *has {
			s.ws = true
		}
		if r == '\n' {
			s.newline = true
		}
	case *left == 0:
	default:
		*left--
		*has = true
		if s.ws {
			if *left == 0 {
				break // no trailing space
			}
			*out = append(*out, ' ')
			s.ws = false
			*left--
		}
		*out = append(*out, r)
	}
	return s.left != 0
}

// htmlText reduces HTML to text as Dovecot's mail-html2text.c does with
// SKIP_QUOTED: tags become a space, comments, scripts, styles and the
// text of blockquotes go, entities are decoded.
func htmlText(src string) string {
	var out strings.Builder
	space := func() {
		if s := out.String(); len(s) > 0 && s[len(s)-1] != ' ' {
			out.WriteByte(' ')
		}
	}
	lower := strings.ToLower(src)
	quoted := 0
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch c {
		case '<':
			rest := lower[i+1:]
			switch {
			case strings.HasPrefix(rest, "!--"):
				end := strings.Index(lower[i+4:], "-->")
				if end < 0 {
					return out.String()
				}
				i += 4 + end + 2
				continue
			case tagIs(rest, "script"), tagIs(rest, "style"):
				name := "</script>"
				if tagIs(rest, "style") {
					name = "</style>"
				}
				end := strings.Index(lower[i:], name)
				if end < 0 {
					return out.String()
				}
				space()
				i += end + len(name) - 1
				continue
			case strings.HasPrefix(rest, "![cdata["):
				end := strings.Index(src[i:], "]]>")
				if end < 0 {
					end = len(src) - i
				}
				if quoted == 0 {
					out.WriteString(src[i+9 : i+end])
				}
				i += end + 2
				continue
			case tagIs(rest, "blockquote"):
				quoted++
			case quoted > 0 && strings.HasPrefix(rest, "/blockquote>"):
				quoted--
			}
			end := tagEnd(src, i+1)
			if end < 0 {
				return out.String()
			}
			i = end
			space()
		case '&':
			semi := strings.IndexByte(src[i+1:min(len(src), i+11)], ';')
			ws := strings.IndexAny(src[i+1:min(len(src), i+11)], " \t\r\n")
			if semi < 0 || ws >= 0 && ws < semi {
				continue // a broken entity: the '&' goes
			}
			out.WriteString(entity(src[i+1 : i+1+semi]))
			i += semi + 1
		default:
			if quoted == 0 {
				out.WriteByte(c)
			}
		}
	}
	return out.String()
}

func tagIs(rest, name string) bool {
	return strings.HasPrefix(rest, name) && len(rest) > len(name) &&
		strings.IndexByte(" \t\r\n>", rest[len(name)]) >= 0
}

// tagEnd returns where the tag that starts at i ends (its '>'), quoted
// attribute values skipped; -1 when it does not.
func tagEnd(s string, i int) int {
	quote := byte(0)
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0 && c == '\\':
			i++
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote == 0 && c == '>':
			return i
		}
	}
	return -1
}

// entity decodes an HTML entity name (without & and ;), or drops it.
func entity(name string) string {
	if strings.HasPrefix(name, "#x") {
		if n, err := strconv.ParseUint(name[2:], 16, 32); err == nil {
			return string(rune(n))
		}
		return ""
	}
	if strings.HasPrefix(name, "#") {
		if n, err := strconv.ParseUint(name[1:], 10, 32); err == nil {
			return string(rune(n))
		}
		return ""
	}
	for _, n := range []string{name, strings.ToLower(name)} {
		if s := html.UnescapeString("&" + n + ";"); s != "&"+n+";" {
			return s
		}
	}
	return ""
}
