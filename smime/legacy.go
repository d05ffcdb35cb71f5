package smime

import (
	"bytes"
	"fmt"
	"html"
	"mime"
	"strings"
	"unicode/utf8"

	xhtml "golang.org/x/net/html"
)

// The Legacy Display Element (RFC 9788 4.5) shows the header fields that an
// encrypted message hides outside, in the text of its main body parts, for
// readers whose client shows only the outer header: in text/plain, a line
// "Name: value" per field and a blank line before the text; in text/html,
// a div of class header-protection-legacy-display. The part says it holds
// one with hp-legacy-display="1" on its Content-Type, and a client that
// knows header protection leaves it out.

const legacyDisplayClass = "header-protection-legacy-display"

// legacyLine is one field a Legacy Display Element shows: its name as
// written and its value as in the header, unfolded.
type legacyLine struct{ name, value string }

// legacyText is the element for a text/plain part. With decoded, values
// are shown as a reader sees them (RFC 2047 encoded words decoded, UTF-8);
// otherwise as written in the header, for a part whose charset cannot
// carry them.
func legacyText(lines []legacyLine, decoded bool) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		v := l.value
		if decoded {
			v = decodeWords(v)
		}
		fmt.Fprintf(&b, "%s: %s\r\n", l.name, v)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// legacyHTML is the element for a text/html part, in ASCII whatever the
// part's charset: other characters are character references.
func legacyHTML(lines []legacyLine) []byte {
	var b strings.Builder
	b.WriteString(`<div class="` + legacyDisplayClass + `"><pre>`)
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		for _, r := range html.EscapeString(l.name + ": " + decodeWords(l.value)) {
			if r < utf8.RuneSelf {
				b.WriteRune(r)
			} else {
				fmt.Fprintf(&b, "&#%d;", r)
			}
		}
	}
	b.WriteString("</pre></div>\r\n")
	return []byte(b.String())
}

// decodeWords decodes the RFC 2047 encoded words of a header value; a value
// it cannot decode (an unknown charset) stays as it is.
func decodeWords(v string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
}

// insertHTML puts elem at the start of the document's body: after the
// body start tag, or at the very start when there is none.
func insertHTML(doc, elem []byte) []byte {
	at := 0
	z := xhtml.NewTokenizer(bytes.NewReader(doc))
	for pos := 0; ; {
		tt := z.Next()
		if tt == xhtml.ErrorToken {
			break
		}
		pos += len(z.Raw())
		if name, _ := z.TagName(); tt == xhtml.StartTagToken && string(name) == "body" {
			at = pos
			break
		}
	}
	out := make([]byte, 0, len(doc)+len(elem))
	out = append(out, doc[:at]...)
	out = append(out, elem...)
	return append(out, doc[at:]...)
}

// stripLegacyText removes the element from the start of a text/plain body:
// the lines up to and including the first blank line, when each of them is
// a "Name: value" line. False when the body does not start with one.
func stripLegacyText(body []byte) ([]byte, bool) {
	for rest := body; len(rest) > 0; {
		line, next, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, false
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return next, true
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || !validFieldName(bytes.TrimRight(name, " \t")) {
			return nil, false
		}
		rest = next
	}
	return nil, false
}

// stripLegacyHTML removes the first div of class
// header-protection-legacy-display, with the line break after it, from an
// HTML document. False when there is none, or it does not end.
func stripLegacyHTML(doc []byte) ([]byte, bool) {
	z := xhtml.NewTokenizer(bytes.NewReader(doc))
	start, depth := -1, 0
	for pos := 0; ; {
		tt := z.Next()
		if tt == xhtml.ErrorToken {
			return nil, false
		}
		tokStart := pos
		pos += len(z.Raw())
		name, hasAttr := z.TagName()
		if string(name) != "div" {
			continue
		}
		switch {
		case tt == xhtml.StartTagToken && start < 0 && hasAttr && hasClass(z, legacyDisplayClass):
			start, depth = tokStart, 1
		case tt == xhtml.StartTagToken && start >= 0:
			depth++
		case tt == xhtml.EndTagToken && start >= 0:
			depth--
			if depth > 0 {
				continue
			}
			end := pos
			switch {
			case bytes.HasPrefix(doc[end:], []byte("\r\n")):
				end += 2
			case bytes.HasPrefix(doc[end:], []byte("\n")):
				end++
			}
			out := make([]byte, 0, len(doc)-(end-start))
			out = append(out, doc[:start]...)
			return append(out, doc[end:]...), true
		}
	}
}

// hasClass reports whether the tag z is on has class c among its classes.
func hasClass(z *xhtml.Tokenizer, c string) bool {
	for {
		k, v, more := z.TagAttr()
		if string(k) == "class" && strings.Contains(" "+strings.Join(strings.Fields(string(v)), " ")+" ", " "+c+" ") {
			return true
		}
		if !more {
			return false
		}
	}
}
