package smime

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strings"

	mtextproto "github.com/emersion/go-message/textproto"
)

// This file reads one entity at a time: its header fields and its body, as
// slices of the input, so that signed bytes stay exactly as they were
// received. What is inside a body (multiparts, enclosed messages) is the
// walker's to find (walk.go).

// ErrMalformed reports a message that cannot be read as RFC 5322 and MIME.
var ErrMalformed = errors.New("smime: malformed message")

// field is one header field as it appears in the input: its canonical name and
// its raw bytes, continuation lines and line endings included.
type field struct {
	name string
	raw  []byte
}

// entity is a MIME entity (or a whole message): its header fields and its body.
type entity struct {
	fields []field
	header mtextproto.Header
	body   []byte
}

// parseEntity splits b into header fields and body without copying. A
// header block longer than maxHeader bytes is a *LimitError.
func parseEntity(b []byte, maxHeader int) (*entity, error) {
	e := &entity{}
	i := 0
	for i < len(b) {
		if i > maxHeader {
			return nil, &LimitError{Bound: BoundHeader, Limit: maxHeader}
		}
		end := len(b)
		if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
			end = i + j + 1
		}
		line := trimEOL(b[i:end])
		switch {
		case len(line) == 0:
			e.body = b[end:]
			e.header = headerOf(e.fields)
			return e, nil
		case line[0] == ' ' || line[0] == '\t':
			if len(e.fields) == 0 {
				return nil, fmt.Errorf("%w: header begins with a continuation line", ErrMalformed)
			}
			last := &e.fields[len(e.fields)-1]
			last.raw = b[i-len(last.raw) : end]
		default:
			colon := bytes.IndexByte(line, ':')
			if colon < 0 {
				return nil, fmt.Errorf("%w: header line without a colon", ErrMalformed)
			}
			name := bytes.TrimRight(line[:colon], " \t")
			if !validFieldName(name) {
				return nil, fmt.Errorf("%w: invalid header field name", ErrMalformed)
			}
			e.fields = append(e.fields, field{name: textproto.CanonicalMIMEHeaderKey(string(name)), raw: b[i:end]})
		}
		i = end
	}
	// No blank line: a header without a body.
	e.header = headerOf(e.fields)
	return e, nil
}

// parseContent reads decrypted or unwrapped content as an entity; content
// whose header cannot be read becomes the body of an entity without header
// fields, so that it is still shown.
func parseContent(b []byte, maxHeader int) *entity {
	e, err := parseEntity(b, maxHeader)
	if err != nil {
		return &entity{body: b}
	}
	return e
}

func validFieldName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// headerOf builds the parsed header that Classify and value lookups use.
func headerOf(fields []field) mtextproto.Header {
	var h mtextproto.Header
	// AddRaw inserts at the top, so add in reverse to keep the order.
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw(fields[i].raw)
	}
	return h
}

// trimEOL removes one trailing LF or CRLF.
func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// isContentField reports whether a header field describes the content and so
// belongs to the MIME entity rather than to the message (RFC 2045, RFC 8551 3.1).
func isContentField(name string) bool {
	return strings.HasPrefix(name, "Content-")
}

// mediaType returns the lower-case media type and parameters of h's
// Content-Type, text/plain when it is absent or unreadable (RFC 2045 5.2).
func mediaType(h mtextproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	t, params, err := mime.ParseMediaType(v)
	if err != nil {
		t, params = lenientMediaType(v)
	}
	if !strings.Contains(t, "/") {
		return "text/plain", map[string]string{}
	}
	return strings.ToLower(t), params
}

// lenientMediaType reads what mime.ParseMediaType rejects but mail clients
// accept, such as duplicate or badly quoted parameters; the first value wins.
func lenientMediaType(v string) (string, map[string]string) {
	parts := splitParams(v)
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = strings.ReplaceAll(val[1:len(val)-1], `\"`, `"`)
		}
		if _, dup := params[k]; !dup && k != "" {
			params[k] = val
		}
	}
	return strings.ToLower(strings.TrimSpace(parts[0])), params
}

// splitParams splits a header value on semicolons outside quoted strings.
func splitParams(v string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ';':
			if !quoted {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

// filename returns the lower-case file name that h gives its content, from the
// Content-Disposition filename or the Content-Type name parameter.
func filename(h mtextproto.Header, ctParams map[string]string) string {
	if v := h.Get("Content-Disposition"); v != "" {
		_, params, err := mime.ParseMediaType(v)
		if err != nil {
			_, params = lenientMediaType(v)
		}
		if n := params["filename"]; n != "" {
			return strings.ToLower(n)
		}
	}
	return strings.ToLower(ctParams["name"])
}

func transferEncoding(h mtextproto.Header) string {
	return strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
}

// decodeBody undoes the entity's Content-Transfer-Encoding.
func decodeBody(e *entity) ([]byte, error) {
	switch transferEncoding(e.header) {
	case "base64":
		return decodeBase64(e.body)
	case "quoted-printable":
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(e.body)))
		if err != nil {
			return nil, fmt.Errorf("%w: quoted-printable: %v", ErrMalformed, err)
		}
		return b, nil
	default:
		return e.body, nil
	}
}

// decodeBase64 decodes leniently, as mail clients do: whitespace and stray
// characters are skipped, and decoding stops at the padding.
func decodeBase64(b []byte) ([]byte, error) {
	// The usual case, lines broken by CRLF, needs no cleaning.
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	if n, err := base64.StdEncoding.Decode(out, b); err == nil {
		return out[:n], nil
	}
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		switch {
		case c == '=':
			return base64RawDecode(clean)
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		}
	}
	return base64RawDecode(clean)
}

func base64RawDecode(b []byte) ([]byte, error) {
	if len(b)%4 == 1 {
		b = b[:len(b)-1] // a lone trailing sextet carries no whole byte
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(b)))
	n, err := base64.RawStdEncoding.Decode(out, b)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	return out[:n], nil
}

// toCRLF turns every bare LF into CRLF (the canonical form, RFC 5751 3.1.1).
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n")) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// toLF turns every CRLF into LF.
func toLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\r\n")) {
		return b
	}
	return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
}

// usesCRLF reports whether the fields end their lines with CRLF; an empty
// header counts as CRLF, the wire form.
func usesCRLF(fields []field) bool {
	if len(fields) == 0 {
		return true
	}
	return bytes.HasSuffix(fields[0].raw, []byte("\r\n")) || !bytes.HasSuffix(fields[0].raw, []byte("\n"))
}
