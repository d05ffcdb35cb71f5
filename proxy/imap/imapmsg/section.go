package imapmsg

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"smimeproxy/smime"
)

// Section is what a BODY[...] or BINARY[...] item names: a part (empty for
// the whole message) and what of it.
type Section struct {
	Part []int
	// Specifier is "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT",
	// "TEXT" or "MIME".
	Specifier string
	// Fields are the field names of HEADER.FIELDS and HEADER.FIELDS.NOT,
	// upper case, as given.
	Fields []string
}

// ErrSection reports a section specification that is not valid IMAP; the
// client's mistake, to answer with BAD.
var ErrSection = errors.New("imapmsg: invalid section")

// ParseSection reads the text between the brackets of BODY[...] or
// BINARY[...]: "1.2.MIME", "HEADER.FIELDS (From \"Subject\")". Field names
// are atoms or quoted strings; literals are the caller's to replace.
func ParseSection(spec string) (Section, error) {
	var s Section
	rest := spec
	for rest != "" && rest[0] >= '0' && rest[0] <= '9' {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n == 0 {
			return Section{}, fmt.Errorf("%w: part number %q", ErrSection, rest[:i])
		}
		s.Part = append(s.Part, n)
		rest = rest[i:]
		if rest == "" {
			return s, nil
		}
		if rest[0] != '.' || len(rest) == 1 {
			return Section{}, fmt.Errorf("%w: %q", ErrSection, spec)
		}
		rest = rest[1:]
	}
	upper := strings.ToUpper(rest)
	switch {
	case upper == "":
		return s, nil
	case upper == "HEADER", upper == "TEXT":
		s.Specifier = upper
		return s, nil
	case upper == "MIME" && len(s.Part) > 0:
		s.Specifier = upper
		return s, nil
	case strings.HasPrefix(upper, "HEADER.FIELDS.NOT "):
		s.Specifier, rest = "HEADER.FIELDS.NOT", rest[len("HEADER.FIELDS.NOT "):]
	case strings.HasPrefix(upper, "HEADER.FIELDS "):
		s.Specifier, rest = "HEADER.FIELDS", rest[len("HEADER.FIELDS "):]
	default:
		return Section{}, fmt.Errorf("%w: %q", ErrSection, spec)
	}
	fields, err := fieldList(rest)
	if err != nil {
		return Section{}, fmt.Errorf("%w: %q: %v", ErrSection, spec, err)
	}
	s.Fields = fields
	return s, nil
}

// fieldList reads "(name name ...)" of atoms and quoted strings.
func fieldList(s string) ([]string, error) {
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return nil, errors.New("field names not in parentheses")
	}
	s = s[1 : len(s)-1]
	var names []string
	for s != "" {
		var name string
		if s[0] == '"' {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, errors.New("unterminated quoted string")
			}
			name, s = b.String(), s[i+1:]
		} else {
			i := strings.IndexAny(s, " ()\"{")
			if i < 0 {
				i = len(s)
			}
			if i == 0 {
				return nil, fmt.Errorf("unexpected %q", s[0])
			}
			name, s = s[:i], s[i:]
		}
		names = append(names, strings.ToUpper(name))
		if s != "" {
			if s[0] != ' ' || len(s) == 1 {
				return nil, errors.New("field names not separated by one space")
			}
			s = s[1:]
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no field name")
	}
	return names, nil
}

// find returns the part a section number names, as Dovecot finds it
// (imap-msgpart.c), or nil. A message/rfc822 stands for the message it
// holds when the number goes on inside it.
func (m *Message) find(path []int) *part {
	p := m.root
	for i, num := range path {
		more := i+1 < len(path)
		switch {
		case p.Kind == smime.Multipart:
			if num > len(p.children) {
				return nil
			}
			p = p.children[max(num, 1)-1]
		case num != 1, more && p.Kind != smime.Message:
			return nil
		}
		if p.Kind == smime.Message && more {
			p = p.children[0]
		}
	}
	return p
}

// Section returns the bytes of BODY[s], before any <partial> (the caller
// slices): with CRLF line breaks and NULs as 0x80, as Dovecot sends them.
// A part that does not exist, or a HEADER or TEXT of a part that is no
// message/rfc822, is empty, as Dovecot answers.
func (m *Message) Section(s Section) []byte {
	p := m.root
	if len(s.Part) > 0 {
		if p = m.find(s.Part); p == nil {
			return []byte{}
		}
		switch s.Specifier {
		case "":
			return m.text(p.BodyStart, p.End)
		case "MIME":
			return m.text(p.Start, p.BodyStart)
		}
		if p.Kind != smime.Message {
			return []byte{}
		}
		p = p.children[0]
	}
	switch s.Specifier {
	case "":
		return m.text(p.Start, p.End)
	case "TEXT":
		return m.text(p.BodyStart, p.End)
	case "HEADER":
		return m.text(p.Start, p.BodyStart)
	}
	return m.fields(p, s.Fields, s.Specifier == "HEADER.FIELDS", len(s.Part) == 0)
}

// text is msg[start:end] with CRLF line breaks and NULs as 0x80.
func (m *Message) text(start, end int) []byte {
	src := m.msg[start:end]
	out := make([]byte, 0, len(src)+bytes.Count(src, []byte("\n"))/8)
	for i, c := range src {
		switch {
		case c == '\n' && (i == 0 && (start == 0 || m.msg[start-1] != '\r') || i > 0 && src[i-1] != '\r'):
			out = append(out, '\r', '\n')
		case c == 0:
			out = append(out, 0x80)
		default:
			out = append(out, c)
		}
	}
	return out
}

// fields returns the header fields of p named (include) or not named
// (exclude) in names, as Dovecot does. For the message itself with
// HEADER.FIELDS it builds them from its cache: the named fields, each
// line ending in CRLF, then a blank line. Otherwise its header filter
// reads from p's first byte to the first blank line (for a header cut
// short by a delimiter, past the delimiter into what follows) and writes
// the lines it keeps with CRLF line breaks, a last line without one
// staying without, then the blank line if it met one.
func (m *Message) fields(p *part, names []string, include, top bool) []byte {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[strings.ToUpper(n)] = true
	}
	cache := top && include
	var out []byte
	end := len(m.msg)
	if cache {
		end = p.BodyStart
	}
	block := m.msg[p.Start:end]
	keep := false
	for first := true; len(block) > 0; first = false {
		line, rest, broken := bytes.Cut(block, []byte("\n"))
		block = rest
		content := line
		if broken {
			content = bytes.TrimSuffix(line, []byte("\r"))
		}
		if len(content) == 0 && broken {
			if !cache {
				out = append(out, '\r', '\n')
			}
			break
		}
		if first || content[0] != ' ' && content[0] != '\t' {
			name, colon := content, bytes.IndexByte(content, ':')
			if colon >= 0 {
				name = bytes.TrimRight(content[:colon], " \t")
			}
			keep = want[strings.ToUpper(string(name))] == include && (colon >= 0 || !cache)
		}
		if keep {
			out = append(out, content...)
			if broken || cache {
				out = append(out, '\r', '\n')
			}
		}
	}
	if cache {
		out = append(out, '\r', '\n')
	}
	for i, c := range out {
		if c == 0 {
			out[i] = 0x80
		}
	}
	if out == nil {
		out = []byte{}
	}
	return out
}
