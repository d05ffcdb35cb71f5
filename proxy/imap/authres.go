package imap

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"smimeproxy/smime"
)

// authResultsField is the name of the field the IMAP proxy adds to every
// S/MIME message it serves (RFC 8601, method smime of RFC 7281).
const authResultsField = "Authentication-Results"

// maxFieldLine is the line length RFC 5322 asks header fields to keep to.
const maxFieldLine = 78

// userKey is one of the logged-in user's decryption keys and the address it
// was found for.
type userKey struct {
	addr string
	key  smime.KeyPair
}

// authResults is the value of the Authentication-Results field for what Open
// found: the smime results, then a comment saying whether the message was
// encrypted, with which cipher and to whom, and whether its header was
// protected (RFC 9788). noKeys, when set, says why no key was tried at all,
// and so explains a message that could not be decrypted because no key was
// available at all.
func authResults(authservID string, o *smime.Opened, keys []userKey, noKeys string) string {
	v := o.AuthenticationResults(authservID)
	hp := headerProtection(o.HeaderProtection)
	if !o.Encrypted {
		if hp == "" {
			return v
		}
		return v + " " + comment(hp)
	}
	var mine []string
	others := 0
	for _, r := range o.Recipients {
		addr := ""
		for _, k := range keys {
			if k.key.Cert != nil && r.ID.Matches(k.key.Cert) {
				addr = k.addr
				break
			}
		}
		switch {
		case addr == "":
			others++
		case !slices.Contains(mine, addr):
			mine = append(mine, addr)
		}
	}
	var c strings.Builder
	c.WriteString("encrypted")
	if len(o.Recipients) > 0 {
		c.WriteString(" with " + o.Cipher.String())
	}
	switch {
	case len(mine) > 0 && others > 0:
		fmt.Fprintf(&c, " to %s and %d other %s", strings.Join(mine, ", "), others, plural(others, "recipient"))
	case len(mine) > 0:
		c.WriteString(" to " + strings.Join(mine, ", "))
	case others > 0:
		fmt.Fprintf(&c, " to %d %s, none of them this user", others, plural(others, "recipient"))
	}
	if !o.Decrypted {
		c.WriteString("; not decrypted")
		if noKeys != "" {
			c.WriteString(": " + noKeys)
		}
	}
	if hp != "" {
		c.WriteString("; " + hp)
	}
	return v + " " + comment(c.String())
}

// headerProtection says in words how the header was protected, by the
// parameter of the message's innermost part: "" when it was not.
func headerProtection(hp string) string {
	switch hp {
	case "cipher", "clear":
		return "header protected, hp=" + hp
	case "v1":
		return "header protected, protected-headers=v1"
	}
	return ""
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// comment makes an RFC 5322 comment of s: parentheses and backslashes are
// quoted, control characters dropped.
func comment(s string) string {
	var b strings.Builder
	b.WriteByte('(')
	for _, r := range s {
		switch {
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(')')
	return b.String()
}

// foldField writes "name: value" as a header field ending in CRLF, folded at
// spaces so that lines keep to 78 characters where the words allow. Removing
// the CRLFs gives back the field on one line; no line is blank. Line breaks
// in value become spaces, so a value can never end the field early.
func foldField(name, value string) string {
	value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
	var b strings.Builder
	line := name + ":"
	add := func(word string) {
		// Never break before an empty word: the new line would hold only
		// whitespace.
		if word != "" && len(line)+1+len(word) > maxFieldLine && strings.TrimLeft(line, " \t") != "" {
			b.WriteString(line)
			b.WriteString("\r\n")
			line = ""
		}
		line += " " + word
	}
	for _, chunk := range foldChunks(value) {
		if 1+len(chunk) <= maxFieldLine || !strings.Contains(chunk, " ") {
			add(chunk)
			continue
		}
		// A quoted string too long for a line of its own is folded inside,
		// which RFC 5322 allows.
		for _, word := range strings.Split(chunk, " ") {
			add(word)
		}
	}
	b.WriteString(line)
	b.WriteString("\r\n")
	return b.String()
}

// foldChunks splits v at the spaces outside quoted strings, the places a
// field is best folded.
func foldChunks(v string) []string {
	var out []string
	quoted, escaped, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == ' ' && !quoted:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// serveOpened is the message the client sees for an S/MIME message: the
// Authentication-Results field first, then msg (what Open made of it)
// without any Authentication-Results field that claims to come from us,
// since only we may say what our check found (RFC 8601 section 5).
func serveOpened(field string, msg []byte, authservID string) []byte {
	out := make([]byte, 0, len(field)+len(msg))
	out = append(out, field...)
	return append(out, dropOwnResults(msg, authservID)...)
}

// dropOwnResults removes from msg's header every Authentication-Results
// field whose authserv-id is authservID. The rest of the message is left
// byte for byte as it was.
func dropOwnResults(msg []byte, authservID string) []byte {
	end := headerEnd(msg)
	if end < 0 {
		return msg
	}
	fields, _ := splitHeader(msg[:end])
	var out []byte
	dropped := false
	for _, f := range fields {
		if isOwnResults(f, authservID) {
			dropped = true
			continue
		}
		out = append(out, f...)
	}
	if !dropped {
		return msg
	}
	return append(out, msg[end:]...)
}

// headerEnd returns the length of msg's header block, the blank line
// excluded, or -1 when there is no body separator.
func headerEnd(msg []byte) int {
	if bytes.HasPrefix(msg, []byte("\r\n")) || bytes.HasPrefix(msg, []byte("\n")) {
		return 0
	}
	i := bytes.Index(msg, []byte("\n\r\n"))
	j := bytes.Index(msg, []byte("\n\n"))
	switch {
	case i < 0 && j < 0:
		return -1
	case i < 0 || (j >= 0 && j < i):
		return j + 1
	}
	return i + 1
}

func isOwnResults(field []byte, authservID string) bool {
	name, value, ok := bytes.Cut(field, []byte(":"))
	if !ok || !strings.EqualFold(strings.TrimSpace(string(name)), authResultsField) {
		return false
	}
	id := strings.TrimSpace(string(value))
	if i := strings.IndexAny(id, "; \t\r\n("); i >= 0 {
		id = id[:i]
	}
	return strings.EqualFold(strings.Trim(id, `"`), authservID)
}
