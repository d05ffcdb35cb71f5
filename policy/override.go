package policy

import (
	"strings"
)

// Toggle is a per-message choice: not made, on, or off.
type Toggle int

const (
	Unset Toggle = iota
	On
	Off
)

// Override is what a person asked for in one message, from any client: tags
// in the Subject and the X-SMIME-Policy header.
type Override struct {
	Sign    Toggle
	Encrypt Toggle
}

// OverrideHeader is the header a client or script may set instead of a tag.
const OverrideHeader = "X-SMIME-Policy"

// words are the override keywords, as tags ("[encrypt]") and header values.
var words = map[string]func(*Override){
	"encrypt": func(o *Override) { o.Encrypt = On },
	"sign":    func(o *Override) { o.Sign = On },
	"nosign":  func(o *Override) { o.Sign = Off },
	"plain":   func(o *Override) { o.Sign, o.Encrypt = Off, Off },
}

// ParseOverride reads the override keywords from the subject's tags
// ("[encrypt] Contract", case-insensitive, anywhere in the subject) and from
// the X-SMIME-Policy header value ("encrypt, nosign"), and returns the subject
// with the tags removed: unchanged when it has none. Unknown bracketed text
// stays in the subject.
func ParseOverride(subject, header string) (Override, string) {
	var o Override
	for _, w := range strings.FieldsFunc(header, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if f, ok := words[strings.ToLower(w)]; ok {
			f(&o)
		}
	}
	var out strings.Builder
	rest, removed := subject, false
	for {
		open := strings.IndexByte(rest, '[')
		if open < 0 {
			break
		}
		end := strings.IndexByte(rest[open:], ']')
		if end < 0 {
			break
		}
		f, ok := words[strings.ToLower(strings.TrimSpace(rest[open+1:open+end]))]
		if !ok {
			out.WriteString(rest[:open+end+1])
			rest = rest[open+end+1:]
			continue
		}
		f(&o)
		removed = true
		out.WriteString(rest[:open])
		rest = rest[open+end+1:]
	}
	if !removed {
		return o, subject
	}
	out.WriteString(rest)
	return o, strings.Join(strings.Fields(out.String()), " ")
}
