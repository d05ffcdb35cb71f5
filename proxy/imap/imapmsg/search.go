package imapmsg

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"smimeproxy/smime"
)

// Searcher matches the text keys of SEARCH (RFC 9051 6.4.4: SUBJECT, FROM,
// HEADER, BODY, TEXT and the rest) against one message, as Dovecot does
// without a full-text index (lib-mail/message-search.c, index-search.c): a
// substring test, ignoring case, on UTF-8.
//   - A header field is its value unfolded, with RFC 2047 encoded words
//     decoded; an empty needle matches any field of the name.
//   - The body is the body of every part whose type is text/* or
//     message/* (or that has none), decoded from its transfer encoding
//     and converted from its charset, each part on its own; multiparts'
//     preambles and the bodies of other types (attachments) are not
//     searched.
//   - TEXT is the body and every header block of the message, those of its
//     parts and of the messages it holds included, as "Name: value" lines.
//
// Charsets are converted as for PREVIEW (UTF-8, US-ASCII, ISO-8859-1,
// Windows-1252); text in another is searched as its bytes are, where its
// ASCII still matches. The decoded text is made once, on first use, for
// every key of one search.
type Searcher struct {
	m       *Message
	bodies  []string // folded, one per text part
	headers []string // folded, one per header block
	made    bool
}

// Searcher returns a Searcher of m.
func (m *Message) Searcher() *Searcher { return &Searcher{m: m} }

// ToUTF8 converts text in charset (lower case; "" is UTF-8) to UTF-8, for
// the charsets this package converts: UTF-8, US-ASCII, ISO-8859-1 and
// Windows-1252. ok is false for another.
func ToUTF8(b []byte, charset string) (text string, ok bool) { return toUTF8(b, charset) }

// Fold is s as a Searcher compares it: each character in one case. Needles
// are given to the Searcher folded.
func Fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(unicode.ToLower(unicode.ToUpper(r))) // RuneError for a broken sequence
		i += n
	}
	return b.String()
}

// Header reports whether a field of the message's own header named name
// holds needle (folded).
func (s *Searcher) Header(name, needle string) bool {
	found := false
	s.m.headers(s.m.root.Part, func(h header) bool {
		if h.value == nil || !strings.EqualFold(h.name, name) {
			return true
		}
		found = needle == "" || strings.Contains(Fold(decodeHeader(h.value)), needle)
		return !found
	})
	return found
}

// Body reports whether the text of the message's body holds needle
// (folded).
func (s *Searcher) Body(needle string) bool {
	s.make()
	for _, b := range s.bodies {
		if strings.Contains(b, needle) {
			return true
		}
	}
	return false
}

// Text reports whether the message's body or any of its header blocks
// holds needle (folded).
func (s *Searcher) Text(needle string) bool {
	if s.Body(needle) {
		return true
	}
	for _, h := range s.headers {
		if strings.Contains(h, needle) {
			return true
		}
	}
	return false
}

// make decodes the message's text parts and header blocks, once.
func (s *Searcher) make() {
	if s.made {
		return
	}
	s.made = true
	var walk func(p *part)
	walk = func(p *part) {
		s.headers = append(s.headers, s.headerText(p))
		switch {
		case p.Kind != smime.Leaf:
			for _, c := range p.children {
				walk(c)
			}
		case searchedAsText(p):
			s.bodies = append(s.bodies, Fold(s.m.decodedBody(p)))
		}
	}
	walk(s.m.root)
}

// headerText is p's header block as "Name: value" lines, decoded and
// folded.
func (s *Searcher) headerText(p *part) string {
	var b strings.Builder
	s.m.headers(p.Part, func(h header) bool {
		b.WriteString(h.name)
		if h.value != nil {
			b.WriteString(": ")
			b.WriteString(decodeHeader(h.value))
		}
		b.WriteByte('\n')
		return true
	})
	return Fold(b.String())
}

// searchedAsText reports whether the body of a leaf is searched: text/*,
// message/*, or no Content-Type at all (text/plain by default).
func searchedAsText(p *part) bool {
	t := p.data.typ
	return t == nil || strings.EqualFold(*t, "text") || strings.EqualFold(*t, "message")
}

// decodedBody is p's body decoded from its transfer encoding and converted
// to UTF-8 where its charset is known; undecodable content is taken as it
// is.
func (m *Message) decodedBody(p *part) string {
	body := m.msg[p.BodyStart:p.End]
	switch cte, _ := m.transferEncoding(p.Part); cte {
	case "base64":
		if dec, err := decodeBase64(body); err == nil {
			body = dec
		}
	case "quoted-printable":
		body = decodeQPLenient(body)
	}
	charset := ""
	for _, prm := range p.data.params {
		if strings.EqualFold(prm.Name, "charset") {
			charset = strings.ToLower(prm.Value)
			break
		}
	}
	if text, ok := toUTF8(body, charset); ok {
		return text
	}
	return string(body)
}

// decodeHeader is a header value unfolded and with its RFC 2047 encoded
// words decoded; a value that cannot be decoded is taken as written.
func decodeHeader(v []byte) string {
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	s := string(v)
	if !strings.Contains(s, "=?") {
		return s
	}
	d := mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		text, ok := toUTF8(b, strings.ToLower(charset))
		if !ok {
			return nil, errUnknownCharset
		}
		return strings.NewReader(text), nil
	}}
	dec, err := d.DecodeHeader(s)
	if err != nil || !utf8.ValidString(dec) {
		return s
	}
	return dec
}

var errUnknownCharset = errors.New("imapmsg: unknown charset")
