package imapmsg

import (
	"strconv"
	"strings"

	"smimeproxy/internal/rfc822"
	"smimeproxy/smime"
)

// emptyPart is what Dovecot writes for a multipart that has no part.
const emptyPart = `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)`

// BodyStructure is the BODYSTRUCTURE (extended) or BODY of the message, in
// wire form with its parentheses (lib-imap/imap-bodystructure.c).
func (m *Message) BodyStructure(extended bool) []byte {
	b := []byte{'('}
	b = appendStructure(b, m.root, extended)
	return append(b, ')')
}

func appendStructure(b []byte, p *part, extended bool) []byte {
	if p.Kind == smime.Multipart {
		return appendMultipart(b, p, extended)
	}
	return appendSinglepart(b, p, extended)
}

func appendMultipart(b []byte, p *part, extended bool) []byte {
	d := &p.data
	if len(p.children) == 0 {
		b = append(b, emptyPart...)
		if extended {
			b = append(b[:len(b)-1], " NIL NIL NIL NIL)"...)
		}
	}
	for _, c := range p.children {
		b = append(b, '(')
		b = appendStructure(b, c, extended)
		b = append(b, ')')
	}
	b = append(b, ' ')
	if d.subtype != nil {
		b = appendString(b, *d.subtype)
	} else {
		b = append(b, `"x-unknown"`...)
	}
	if !extended {
		return b
	}
	b = append(b, ' ')
	b = appendParams(b, d.params, false)
	return appendCommon(b, d)
}

func appendSinglepart(b []byte, p *part, extended bool) []byte {
	d := &p.data
	text := false
	switch {
	case p.Kind == smime.Message:
		b = append(b, `"message" "rfc822"`...)
	case d.typ == nil:
		text = true
		b = append(b, `"text" "plain"`...)
	case strings.EqualFold(*d.typ, "multipart") || strings.EqualFold(*d.typ, "message") && d.subtype != nil && strings.EqualFold(*d.subtype, "rfc822"):
		// A container Dovecot did not look into (past a limit) would
		// mislead a reader: it says what it is to a reader, a blob.
		b = append(b, `"application" "octet-stream"`...)
	default:
		text = strings.EqualFold(*d.typ, "text")
		b = appendString(b, *d.typ)
		b = append(b, ' ')
		if d.subtype != nil {
			b = appendString(b, *d.subtype)
		} else if text {
			b = append(b, `"plain"`...)
		} else {
			b = append(b, `"unknown"`...)
		}
	}
	b = append(b, ' ')
	b = appendParams(b, d.params, text)
	b = append(b, ' ')
	b = appendNStringNoLF(b, d.id)
	b = append(b, ' ')
	b = appendNStringNoLF(b, d.description)
	b = append(b, ' ')
	if d.cte != nil {
		b = appendString(b, *d.cte)
	} else {
		b = append(b, `"7bit"`...)
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.BodySize(), 10)
	switch {
	case text:
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(p.BodyLines()), 10)
	case p.Kind == smime.Message:
		child := p.children[0]
		b = append(b, ' ')
		b = appendEnvelope(b, child.envelope)
		b = append(b, " ("...)
		b = appendStructure(b, child, extended)
		b = append(b, ") "...)
		b = strconv.AppendInt(b, int64(p.BodyLines()), 10)
	}
	if !extended {
		return b
	}
	b = append(b, ' ')
	b = appendNStringNoLF(b, d.md5)
	return appendCommon(b, d)
}

// appendCommon writes the disposition, language and location.
func appendCommon(b []byte, d *partData) []byte {
	b = append(b, ' ')
	if d.disposition == nil {
		b = append(b, "NIL"...)
	} else {
		b = append(b, '(')
		b = appendString(b, *d.disposition)
		b = append(b, ' ')
		b = appendParams(b, d.dispositionParam, false)
		b = append(b, ')')
	}
	b = append(b, ' ')
	if d.language == nil {
		b = append(b, "NIL"...)
	} else {
		b = append(b, '(')
		for i, l := range d.language {
			if i > 0 {
				b = append(b, ' ')
			}
			b = appendString(b, l)
		}
		b = append(b, ')')
	}
	b = append(b, ' ')
	return appendNStringNoLF(b, d.location)
}

// appendParams writes a parameter list; a text part without a charset
// says us-ascii, the default (RFC 2045 5.2).
func appendParams(b []byte, params []rfc822.Param, defaultCharset bool) []byte {
	if !defaultCharset && len(params) == 0 {
		return append(b, "NIL"...)
	}
	b = append(b, '(')
	seen := false
	for i, p := range params {
		if i > 0 {
			b = append(b, ' ')
		}
		seen = seen || strings.EqualFold(p.Name, "charset")
		b = appendString(b, p.Name)
		b = append(b, ' ')
		b = appendString(b, p.Value)
	}
	if defaultCharset && !seen {
		if len(params) > 0 {
			b = append(b, ' ')
		}
		b = append(b, `"charset" "us-ascii"`...)
	}
	return append(b, ')')
}
