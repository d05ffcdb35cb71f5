package imapmsg

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"smimeproxy/internal/rfc822"
	"smimeproxy/smime"
)

// UnknownCTEError reports a part whose Content-Transfer-Encoding BINARY
// cannot undo; the relay answers NO [UNKNOWN-CTE] (RFC 3516).
type UnknownCTEError struct{ Encoding string }

func (e *UnknownCTEError) Error() string {
	return fmt.Sprintf("imapmsg: unknown Content-Transfer-Encoding %q", e.Encoding)
}

// ErrInvalidData reports a part whose encoding is broken (base64 with
// characters outside its alphabet): Dovecot answers NO for it.
var ErrInvalidData = errors.New("imapmsg: invalid data in MIME part")

// Binary returns BINARY[part] (RFC 3516), as Dovecot builds it
// (index-mail-binary.c): the content of the part with its
// Content-Transfer-Encoding undone; in a multipart or message/rfc822
// every part inside is undone and the rest kept. For the whole message
// (an empty part), the header comes first, its Content-Transfer-Encoding
// replaced by binary when the body was decoded. Line breaks of what is
// not decoded become CRLF; NULs stay. A part that does not exist is empty.
//
// An encoding it does not know is an *UnknownCTEError (NO [UNKNOWN-CTE]);
// broken base64 or quoted-printable is ErrInvalidData (NO [PARSE]), where
// Dovecot answers NO, or for a truncated encoding drops the connection.
func (m *Message) Binary(section []int) ([]byte, error) {
	b, err := m.binary(section)
	if err != nil {
		return nil, err
	}
	return b.out, nil
}

// Literal8 reports whether Dovecot sends BINARY[part] as a literal8
// ("~{n}"): when something in it was decoded or it holds a NUL (or a
// header it read does).
func (m *Message) Literal8(section []int) bool {
	b, err := m.binary(section)
	return err == nil && (b.decoded || b.nuls || bytes.IndexByte(b.out, 0) >= 0)
}

// BinarySize is BINARY.SIZE[part]: the size of Binary(part). Dovecot
// computes it for the whole message at once, so an encoding error in any
// part fails it.
func (m *Message) BinarySize(section []int) (int64, error) {
	if _, err := m.binary(nil); err != nil {
		return 0, err
	}
	b, err := m.binary(section)
	if err != nil {
		return 0, err
	}
	return int64(len(b.out)), nil
}

func (m *Message) binary(section []int) (*binary, error) {
	b := &binary{m: m, out: []byte{}}
	p := m.root
	if len(section) > 0 {
		if p = m.find(section); p == nil {
			return b, nil
		}
	}
	if err := b.part(p, len(section) == 0); err != nil {
		return nil, err
	}
	return b, nil
}

type binary struct {
	m       *Message
	out     []byte
	from    int  // the offset of the message not written yet
	decoded bool // a part was decoded
	nuls    bool // a header read holds a NUL
}

// copyTo writes what remains of the message up to end, as it is but for
// CRLF line breaks.
func (b *binary) copyTo(end int) {
	if end > b.from {
		b.out = append(b.out, crlf(b.m.msg, b.from, end)...)
	}
	b.from = max(b.from, end)
}

func (b *binary) part(p *part, withHeader bool) error {
	cte, raw := b.m.transferEncoding(p.Part)
	switch cte {
	case "7bit", "8bit", "binary", "base64", "quoted-printable":
	default:
		return &UnknownCTEError{Encoding: raw}
	}
	// Only a body decoded changes the header: a leaf's, not empty.
	decoded := (cte == "base64" || cte == "quoted-printable") && len(p.children) == 0 && p.End > p.BodyStart
	b.decoded = b.decoded || decoded
	b.nuls = b.nuls || bytes.IndexByte(b.m.msg[p.Start:p.BodyStart], 0) >= 0
	switch {
	case !withHeader:
		b.from = p.BodyStart
	case decoded:
		b.copyTo(p.Start)
		b.out = b.m.binaryHeader(b.out, p)
		b.from = p.BodyStart
	default:
		b.copyTo(p.BodyStart)
	}
	if len(p.children) > 0 {
		for _, c := range p.children {
			if err := b.part(c, true); err != nil {
				return err
			}
		}
		b.copyTo(p.End)
		return nil
	}
	body := b.m.msg[p.BodyStart:p.End]
	b.from = p.End
	switch cte {
	case "base64":
		dec, err := decodeBase64(body)
		if err != nil {
			return err
		}
		b.out = append(b.out, dec...)
	case "quoted-printable":
		dec, err := decodeQP(body)
		if err != nil {
			return err
		}
		b.out = append(b.out, dec...)
	default:
		b.out = append(b.out, crlf(b.m.msg, p.BodyStart, p.End)...)
	}
	return nil
}

// transferEncoding is p's Content-Transfer-Encoding as Dovecot's message
// decoder reads it: the last such field, lower case ("7bit" when none),
// and the value as written.
func (m *Message) transferEncoding(p *smime.Part) (string, string) {
	cte, raw := "7bit", ""
	m.headers(p, func(h header) bool {
		if h.value == nil || !strings.EqualFold(h.name, "Content-Transfer-Encoding") {
			return true
		}
		rp := rfc822.New(h.value)
		rp.SkipLWSP()
		var tok []byte
		end := rp.MimeToken(&tok) == 0
		raw = string(h.value)
		switch v := strings.ToLower(string(tok)); {
		case !end:
			cte = "unknown" // more than one token
		case v == "7bit", v == "8bit", v == "binary", v == "base64", v == "quoted-printable":
			cte = v
		default:
			cte = "unknown"
		}
		return true
	})
	return cte, raw
}

// binaryHeader writes p's header without its Content-Transfer-Encoding
// fields and with "Content-Transfer-Encoding: binary" before the blank line.
func (m *Message) binaryHeader(out []byte, p *part) []byte {
	block := m.msg[p.Start:p.BodyStart]
	skip := false
	for first := true; len(block) > 0; first = false {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i+1], block[i+1:]
		} else {
			block = nil
		}
		content := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(content) == 0 && bytes.HasSuffix(line, []byte("\n")) {
			out = append(out, "Content-Transfer-Encoding: binary\r\n\r\n"...)
			break
		}
		if first || content[0] != ' ' && content[0] != '\t' {
			name := content
			if i := bytes.IndexByte(content, ':'); i >= 0 {
				name = bytes.TrimRight(content[:i], " \t")
			}
			skip = strings.EqualFold(string(name), "Content-Transfer-Encoding")
		}
		if !skip {
			out = append(out, content...)
			out = append(out, '\r', '\n')
		}
	}
	return out
}

// crlf is msg[start:end] with CRLF line breaks.
func crlf(msg []byte, start, end int) []byte {
	src := msg[start:end]
	out := make([]byte, 0, len(src)+bytes.Count(src, []byte("\n"))/8)
	for i, c := range src {
		if c == '\n' && (i == 0 || src[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// decodeBase64 decodes base64 as Dovecot's binary fetch does: white
// space is skipped; anything outside the alphabet, data after the padding
// or missing padding is an error.
func decodeBase64(b []byte) ([]byte, error) {
	clean := make([]byte, 0, len(b))
	padding := 0
	for _, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == '=':
			padding++
			clean = append(clean, c)
		case padding > 0:
			return nil, ErrInvalidData
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		default:
			return nil, ErrInvalidData
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, err := base64.StdEncoding.Decode(out, clean)
	if err != nil {
		return nil, ErrInvalidData
	}
	return out[:n], nil
}

// decodeQP decodes quoted-printable as Dovecot's binary fetch does: white
// space before a line break goes, a soft line break may have white space
// after its "=", line breaks become CRLF; a broken escape is an error.
func decodeQP(b []byte) ([]byte, error) { return qp(b, false) }

// decodeQPLenient decodes quoted-printable as Dovecot's message decoder
// does for search and previews: a broken escape stays as it is.
func decodeQPLenient(b []byte) []byte {
	out, _ := qp(b, true)
	return out
}

func qp(b []byte, lenient bool) ([]byte, error) {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		line, rest, hasBreak := bytes.Cut(b, []byte("\n"))
		line = bytes.TrimRight(bytes.TrimSuffix(line, []byte("\r")), " \t")
		soft := false
		for i := 0; i < len(line); i++ {
			c := line[i]
			switch {
			case c != '=':
				out = append(out, c)
			case i+2 < len(line) && isHex(line[i+1]) && isHex(line[i+2]):
				out = append(out, unhex(line[i+1])<<4|unhex(line[i+2]))
				i += 2
			case i == len(line)-1 && (hasBreak || lenient):
				soft = true
			case lenient:
				out = append(out, c)
			default:
				return nil, ErrInvalidData
			}
		}
		if hasBreak && !soft {
			out = append(out, '\r', '\n')
		}
		b = rest
	}
	return out, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
