package smime

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Outgoing messages are put in the form RFC 8551 3.1 asks for before they are
// signed or encrypted: canonical CRLF line breaks, and every part that is not
// 7-bit safe re-encoded, so that the bytes signed are exactly the bytes sent
// and no relay has reason to touch them.

// maxNesting bounds how deep multiparts and enclosed messages are followed.
const maxNesting = 32

// maxLine is the longest line SMTP carries, without its CRLF (RFC 5322 2.1.1).
const maxLine = 998

// prepared is an outgoing message split for wrapping: the header fields that
// stay outside, in CRLF form, and the canonical MIME entity that goes inside.
type prepared struct {
	outer        [][]byte
	hasMIMEVer   bool
	innerContent []byte
}

// prepare splits msg into the message header, which stays outside, and the
// content entity (its Content-* fields and body), canonicalised.
func prepare(msg []byte) (*prepared, error) {
	e, err := parseEntity(msg)
	if err != nil {
		return nil, err
	}
	p := &prepared{}
	var content []field
	for _, f := range e.fields {
		switch {
		case isContentField(f.name):
			content = append(content, f)
		default:
			p.hasMIMEVer = p.hasMIMEVer || f.name == "Mime-Version"
			p.outer = append(p.outer, crlfField(f.raw))
		}
	}
	if h := headerOf(content); h.Get("Content-Type") == "" {
		if sevenBitSafe(e.body) {
			// Say what RFC 2045 5.2 implies: some clients misread a part with no header.
			content = append(content, field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=us-ascii\r\n")})
		}
	}
	inner, err := canonEntity(&entity{fields: content, header: headerOf(content), body: e.body}, 0)
	if err != nil {
		return nil, err
	}
	p.innerContent = inner
	return p, nil
}

// writeOuter writes the outer header fields, then MIME-Version when the
// message had none, then the given content fields and the blank line.
func (p *prepared) writeOuter(b *bytes.Buffer, contentFields ...string) {
	for _, f := range p.outer {
		b.Write(f)
	}
	if !p.hasMIMEVer {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	for _, f := range contentFields {
		b.WriteString(f)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
}

// crlfField returns a header field in CRLF form, ending in CRLF.
func crlfField(raw []byte) []byte {
	raw = toCRLF(raw)
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		raw = append(raw[:len(raw):len(raw)], '\r', '\n')
	}
	return raw
}

// canonEntity returns e in canonical, 7-bit safe form.
func canonEntity(e *entity, depth int) ([]byte, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("%w: nested too deep", ErrMalformed)
	}
	t, params := mediaType(e.header)
	switch {
	case t == "multipart/signed":
		// Signed bytes must not change; RFC 1847 verifiers canonicalise line breaks themselves.
		return joinEntity(e.fields, "", toCRLF(e.body)), nil
	case strings.HasPrefix(t, "multipart/"):
		if m, err := splitMultipart(e.body, params["boundary"]); err == nil {
			return canonMultipart(e, m, params["boundary"], depth)
		}
		// Unreadable multipart structure: it may pass only as it is.
		if !sevenBitSafe(e.body) {
			return nil, fmt.Errorf("%w: %s without a readable boundary holds 8-bit data", ErrMalformed, t)
		}
		return joinEntity(e.fields, "", toCRLF(e.body)), nil
	case (t == "message/rfc822" || t == "message/global") && !isEncodedCTE(transferEncoding(e.header)):
		inner, err := parseEntity(e.body)
		if err != nil {
			return canonLeaf(e, t, params)
		}
		body, err := canonEntity(inner, depth+1)
		if err != nil {
			return nil, err
		}
		cte := ""
		if sevenBitSafe(body) && transferEncoding(e.header) != "" {
			cte = "7bit"
		}
		return joinEntity(e.fields, cte, body), nil
	default:
		return canonLeaf(e, t, params)
	}
}

func isEncodedCTE(cte string) bool { return cte == "base64" || cte == "quoted-printable" }

func canonMultipart(e *entity, m *multipart, boundary string, depth int) ([]byte, error) {
	var b bytes.Buffer
	writeFields(&b, e.fields, "")
	b.WriteString("\r\n")
	if len(m.preamble) > 0 && sevenBitSafe(m.preamble) {
		b.Write(toCRLF(m.preamble))
		b.WriteString("\r\n")
	}
	for _, raw := range m.parts {
		part, err := parseEntity(raw)
		if err != nil {
			return nil, err
		}
		c, err := canonEntity(part, depth+1)
		if err != nil {
			return nil, err
		}
		b.WriteString("--" + boundary + "\r\n")
		b.Write(c)
		b.WriteString("\r\n")
	}
	// The epilogue is dropped: text after the close delimiter is invisible,
	// and Outlook rejects signatures over it.
	b.WriteString("--" + boundary + "--")
	return b.Bytes(), nil
}

// canonLeaf returns a single-part entity, re-encoded when its body is not
// 7-bit safe: quoted-printable for text, base64 for anything else.
func canonLeaf(e *entity, t string, params map[string]string) ([]byte, error) {
	cte := transferEncoding(e.header)
	body := e.body
	if sevenBitSafe(body) {
		newCTE := ""
		if cte == "8bit" || cte == "binary" {
			newCTE = "7bit"
		}
		return joinEntity(e.fields, newCTE, toCRLF(body)), nil
	}
	switch cte {
	case "", "7bit", "8bit", "binary":
	case "base64", "quoted-printable":
		decoded, err := decodeBody(e)
		if err != nil {
			return nil, err
		}
		body = decoded
	default:
		return nil, fmt.Errorf("%w: unknown Content-Transfer-Encoding %q on 8-bit data", ErrMalformed, cte)
	}
	fields := e.fields
	if e.header.Get("Content-Type") == "" && !utf8.Valid(body) {
		// RFC 1428: 8-bit text of no stated charset.
		fields = append(fields[:len(fields):len(fields)], field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=unknown-8bit\r\n")})
	} else if e.header.Get("Content-Type") == "" {
		fields = append(fields[:len(fields):len(fields)], field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=utf-8\r\n")})
	}
	if strings.HasPrefix(t, "text/") {
		return joinEntity(fields, "quoted-printable", encodeQP(body)), nil
	}
	return joinEntity(fields, "base64", appendBase64(nil, body)), nil
}

// joinEntity writes fields (with Content-Transfer-Encoding set to cte when
// cte is not empty), the blank line and body.
func joinEntity(fields []field, cte string, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(body) + 1024)
	writeFields(&b, fields, cte)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// writeFields writes fields in CRLF form. A non-empty cte replaces the
// Content-Transfer-Encoding field in place, or is added at the end.
func writeFields(b *bytes.Buffer, fields []field, cte string) {
	done := cte == ""
	for _, f := range fields {
		if f.name == "Content-Transfer-Encoding" && cte != "" {
			if !done {
				b.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
				done = true
			}
			continue
		}
		b.Write(crlfField(f.raw))
	}
	if !done {
		b.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
	}
}

// sevenBitSafe reports whether b can travel as 7bit once bare LFs become
// CRLF: no 8-bit bytes, no NUL, no CR outside CRLF, no line over 998 octets.
func sevenBitSafe(b []byte) bool {
	lineLen := 0
	for i, c := range b {
		switch {
		case c >= 0x80 || c == 0:
			return false
		case c == '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
		case c == '\n':
			lineLen = 0
			continue
		}
		if c != '\r' {
			lineLen++
			if lineLen > maxLine {
				return false
			}
		}
	}
	return true
}

// encodeQP encodes text as quoted-printable (RFC 2045 6.7) with CRLF line
// breaks for its LF or CRLF ones. A '-' that would start a line after a soft
// break is encoded, so that breaking a line never makes a delimiter.
func encodeQP(text []byte) []byte {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(text)+len(text)/3+16)
	for len(text) > 0 {
		line, rest, broken := bytes.Cut(text, []byte("\n"))
		if broken {
			line = bytes.TrimSuffix(line, []byte("\r"))
		}
		col, soft := 0, false
		for i, c := range line {
			if col >= 73 { // room for "=XX" before the soft break, 76 in all
				out = append(out, '=', '\r', '\n')
				col, soft = 0, true
			}
			if c == '=' || c < ' ' && c != '\t' || c > '~' ||
				col == 0 && soft && c == '-' ||
				(c == ' ' || c == '\t') && i == len(line)-1 {
				out = append(out, '=', hex[c>>4], hex[c&15])
				col += 3
				continue
			}
			out = append(out, c)
			col++
		}
		if broken {
			out = append(out, '\r', '\n')
		}
		text = rest
	}
	return out
}

// appendBase64 appends data in base64, in lines of 76 characters with CRLF
// breaks between them.
func appendBase64(dst, data []byte) []byte {
	const chunk = 57 // bytes per 76-character line
	lines := (len(data) + chunk - 1) / chunk
	dst = slices.Grow(dst, base64.StdEncoding.EncodedLen(len(data))+2*lines)
	for len(data) > chunk {
		dst = base64.StdEncoding.AppendEncode(dst, data[:chunk])
		dst = append(dst, '\r', '\n')
		data = data[chunk:]
	}
	return base64.StdEncoding.AppendEncode(dst, data)
}
