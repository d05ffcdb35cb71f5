package imapmsg

import (
	"strconv"
	"strings"
)

// The string writers of Dovecot's lib-imap/imap-quote.c.

// AppendString appends s as Dovecot writes an IMAP string (a PREVIEW, for
// one): quoted, or a literal when it holds a CR, LF, 8-bit byte or more
// than four quoted-specials.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// maxEscapes is how many quoted-specials a quoted string may hold before
// Dovecot writes a literal instead, which is then shorter.
const maxEscapes = 4

// appendNString writes s as a quoted string, or as a literal when it holds
// a CR, LF, 8-bit byte or more than four quoted-specials; nil is NIL.
func appendNString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "NIL"...)
	}
	return appendString(b, *s)
}

// appendNStringNoLF is appendNString with the line breaks of a folded
// value removed, and a space put where a line did not start with one.
func appendNStringNoLF(b []byte, s *string) []byte {
	if s == nil || !strings.ContainsAny(*s, "\r\n") {
		return appendNString(b, s)
	}
	v := *s
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != '\r' && c != '\n' {
			out = append(out, c)
		} else if i+1 < len(v) && strings.IndexByte(" \t\r\n", v[i+1]) < 0 {
			out = append(out, ' ')
		}
	}
	return appendString(b, string(out))
}

func appendString(b []byte, s string) []byte {
	escapes := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			if escapes++; escapes <= maxEscapes {
				continue
			}
			return appendLiteral(b, s)
		case c == '\r' || c == '\n' || c >= 0x80:
			return appendLiteral(b, s)
		case c == 0:
			// Dovecot's strings end at a NUL.
			return appendString(b, s[:i])
		}
	}
	return appendQuoted(b, s)
}

func appendLiteral(b []byte, s string) []byte {
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, "}\r\n"...)
	return append(b, s...)
}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r' || c == '\n' || c >= 0x80:
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendHuman writes text meant for people (a subject, a display name):
// white space runs become one space, line breaks go, leading and
// trailing white space goes, NUL becomes 0x80; quoted when nothing needed
// changing, else a literal (imap_append_string_for_humans).
func appendHuman(b []byte, src string) []byte {
	remove, modify := 0, false
	lastLWSP, prefix := true, true
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case 0:
			lastLWSP, modify = false, true
		case '\t', ' ':
			if c == '\t' {
				modify = true
			}
			if lastLWSP {
				modify = true
				remove++
			}
			lastLWSP = true
		case '\r', '\n':
			remove++
			modify = true
		case '"', '\\':
			modify, lastLWSP = true, false
		default:
			if c&0x80 != 0 {
				modify = true
			}
			lastLWSP = false
		}
		if !lastLWSP {
			prefix = false
		}
	}
	if lastLWSP && len(src) > 0 && !prefix {
		modify = true
		remove++
	}
	if !modify {
		b = append(b, '"')
		b = append(b, src...)
		return append(b, '"')
	}
	if len(src) == remove {
		return append(b, `""`...)
	}
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(src)-remove), 10)
	b = append(b, "}\r\n"...)
	lastLWSP, prefix = true, true
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case 0:
			b = append(b, 0x80)
			lastLWSP = false
		case '\t', ' ':
			if !lastLWSP {
				b = append(b, ' ')
			}
			lastLWSP = true
		case '\r', '\n':
		default:
			lastLWSP = false
			b = append(b, c)
		}
		if !lastLWSP {
			prefix = false
		}
	}
	if lastLWSP && len(src) > 0 && !prefix {
		b = b[:len(b)-1]
	}
	return b
}
