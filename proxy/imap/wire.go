package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// This file is the little of IMAP's wire syntax (RFC 9051 section 4, RFC
// 3501 section 4, RFC 3516 and RFC 7888 for literals) the relay needs: where
// a line ends, whether a literal follows it, and the tokens of the few
// commands and responses it reads. Everything else it copies as bytes.

var (
	// errLineTooLong is a line longer than the side's limit.
	errLineTooLong = errors.New("imap: line too long")
	// errSyntax is input that is not IMAP.
	errSyntax = errors.New("imap: syntax error")
)

// literal is the announcement of a literal at the end of a line.
type literal struct {
	n      int64
	binary bool // ~{n}: may hold NUL (RFC 3516)
	sync   bool // {n}: the sender waits for a continuation before sending it
}

// maxLiteral bounds the size a literal may announce; larger numbers are
// syntax errors, not allocations.
const maxLiteral = 1 << 40

// literalAt reads the literal announced at the end of line, if any. line
// may end in CRLF or LF.
func literalAt(line []byte) (literal, bool) {
	line = trimEOL(line)
	if len(line) < 3 || line[len(line)-1] != '}' {
		return literal{}, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return literal{}, false
	}
	digits := line[open+1 : len(line)-1]
	l := literal{sync: true}
	if d, ok := bytes.CutSuffix(digits, []byte("+")); ok {
		digits, l.sync = d, false
	}
	if len(digits) == 0 || len(digits) > 13 {
		return literal{}, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return literal{}, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n > maxLiteral {
		return literal{}, false
	}
	l.n = n
	l.binary = open > 0 && line[open-1] == '~'
	return l, true
}

// trimEOL removes the line ending: CRLF, or a bare LF.
func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// readLine reads one line, its line ending included, of at most max bytes.
// The slice is the caller's.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// copyLine copies one line to w without holding it whole, and returns its
// last bytes: enough to find a literal announcement.
func copyLine(w io.Writer, br *bufio.Reader) ([]byte, error) {
	var tail []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if _, werr := w.Write(chunk); werr != nil {
			return nil, werr
		}
		tail = append(tail, chunk...)
		if len(tail) > 32 {
			tail = append(tail[:0], tail[len(tail)-32:]...)
		}
		switch {
		case err == nil:
			return tail, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(tail) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// copyN copies exactly n bytes; a stream that ends first is an error.
func copyN(w io.Writer, r io.Reader, n int64) error {
	got, err := io.CopyN(w, r, n)
	if err == nil && got != n || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// scanner reads the tokens of one command or response from a stream of
// lines and literals. Lines are read on demand, so a response can be read
// while its literals stream past.
type scanner struct {
	br      *bufio.Reader
	maxLine int
	line    []byte   // the current line, without its ending
	pos     int      // in line
	end     int      // where the literal announcement begins, or len(line)
	lit     *literal // announced at the end of line, not yet read
}

func newScanner(br *bufio.Reader, maxLine int, first []byte) *scanner {
	s := &scanner{br: br, maxLine: maxLine}
	s.setLine(first)
	return s
}

func (s *scanner) setLine(line []byte) {
	s.line, s.pos, s.lit = trimEOL(line), 0, nil
	s.end = len(s.line)
	if l, ok := literalAt(line); ok {
		s.lit = &l
		s.end = bytes.LastIndexByte(s.line, '{')
		if l.binary {
			s.end--
		}
	}
}

// atEOL reports whether the current line has been read up to a literal
// announcement or its end.
func (s *scanner) atEOL() bool { return s.pos >= s.end }

// peek returns the next byte of the line, 0 at its end, and '{' where a
// literal begins.
func (s *scanner) peek() byte {
	if s.atEOL() {
		if s.lit != nil {
			return '{'
		}
		return 0
	}
	return s.line[s.pos]
}

// sp consumes one space, or fails.
func (s *scanner) sp() error {
	if s.atEOL() || s.line[s.pos] != ' ' {
		return fmt.Errorf("%w: expected a space", errSyntax)
	}
	s.pos++
	return nil
}

// done reports whether nothing is left of the command or response.
func (s *scanner) done() bool { return s.lit == nil && s.pos >= len(s.line) }

// atom reads an atom; list wildcards and backslashes are allowed, as flags
// and mailbox patterns need.
func (s *scanner) atom() (string, error) {
	start := s.pos
	for !s.atEOL() {
		c := s.line[s.pos]
		if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == '{' || c == '"' {
			break
		}
		s.pos++
	}
	if s.pos == start {
		return "", fmt.Errorf("%w: expected an atom", errSyntax)
	}
	return string(s.line[start:s.pos]), nil
}

// quoted reads a quoted string (the opening quote is next).
func (s *scanner) quoted() ([]byte, error) {
	s.pos++
	var b []byte
	for s.pos < len(s.line) {
		c := s.line[s.pos]
		s.pos++
		switch c {
		case '"':
			return b, nil
		case '\\':
			if s.pos >= len(s.line) {
				return nil, fmt.Errorf("%w: unfinished quoted string", errSyntax)
			}
			b = append(b, s.line[s.pos])
			s.pos++
		default:
			b = append(b, c)
		}
	}
	return nil, fmt.Errorf("%w: unfinished quoted string", errSyntax)
}

// literalBytes reads the literal announced at the end of the current line,
// of at most max bytes, and moves on to the line that follows it. cont is
// called first, to ask a client for a synchronising literal.
func (s *scanner) literalBytes(max int64, cont func(literal) error) ([]byte, error) {
	l := s.lit
	if l == nil {
		return nil, fmt.Errorf("%w: expected a literal", errSyntax)
	}
	if l.n > max {
		return nil, errLiteralTooLong
	}
	if cont != nil {
		if err := cont(*l); err != nil {
			return nil, err
		}
	}
	b := make([]byte, l.n)
	if _, err := io.ReadFull(s.br, b); err != nil {
		return nil, unexpectedEOF(err)
	}
	if err := s.nextLine(); err != nil {
		return nil, err
	}
	return b, nil
}

// errLiteralTooLong is a literal over the side's limit.
var errLiteralTooLong = errors.New("imap: literal too long")

// nextLine reads the line that continues the command or response after a
// literal.
func (s *scanner) nextLine() error {
	line, err := readLine(s.br, s.maxLine)
	if err != nil {
		return unexpectedEOF(err)
	}
	s.setLine(line)
	return nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// astring reads an atom, a quoted string or a literal.
func (s *scanner) astring(maxLit int64, cont func(literal) error) ([]byte, error) {
	switch {
	case s.atEOL() && s.lit != nil:
		return s.literalBytes(maxLit, cont)
	case s.peek() == '"':
		return s.quoted()
	}
	a, err := s.atom()
	return []byte(a), err
}

// nstring reads NIL, a quoted string or a literal; nil means NIL.
func (s *scanner) nstring(maxLit int64) ([]byte, error) {
	switch {
	case s.atEOL() && s.lit != nil:
		return s.literalBytes(maxLit, nil)
	case s.peek() == '"':
		return s.quoted()
	}
	a, err := s.atom()
	if err != nil {
		return nil, err
	}
	if !eqFold(a, "NIL") {
		return nil, fmt.Errorf("%w: expected a string or NIL", errSyntax)
	}
	return nil, nil
}

// valueWriter is where copyValue writes: a bufio.Writer, or discard.
type valueWriter interface {
	io.Writer
	io.ByteWriter
	io.StringWriter
}

type discardWriter struct{}

func (discardWriter) Write(b []byte) (int, error)       { return len(b), nil }
func (discardWriter) WriteByte(byte) error              { return nil }
func (discardWriter) WriteString(s string) (int, error) { return len(s), nil }

// copyValue copies one value (atom, number, quoted string, literal, NIL or
// a parenthesised list of them) to w as it appears on the wire. Literals
// are streamed.
func (s *scanner) copyValue(w valueWriter) error {
	depth := 0
	for {
		if s.atEOL() && s.lit == nil {
			return fmt.Errorf("%w: value cut short", errSyntax)
		}
		c := s.peek()
		switch {
		case s.atEOL():
			if err := s.copyLiteral(w); err != nil {
				return err
			}
		case c == '"':
			start := s.pos
			if _, err := s.quoted(); err != nil {
				return err
			}
			w.Write(s.line[start:s.pos])
		case c == '(':
			depth++
			s.pos++
			w.WriteByte('(')
		case c == ')':
			if depth == 0 {
				return fmt.Errorf("%w: unbalanced parenthesis", errSyntax)
			}
			depth--
			s.pos++
			w.WriteByte(')')
		case c == ' ' && depth > 0:
			s.pos++
			w.WriteByte(' ')
			continue
		default:
			start := s.pos
			for !s.atEOL() {
				c := s.line[s.pos]
				if c == ' ' || c == '(' || c == ')' || c == '"' || c == '{' {
					break
				}
				s.pos++
			}
			if s.pos == start {
				return fmt.Errorf("%w: unexpected %q", errSyntax, c)
			}
			w.Write(s.line[start:s.pos])
		}
		if depth == 0 {
			return nil
		}
	}
}

// copyLiteral copies the literal announced at the end of the line, its
// announcement included, and moves on to the next line.
func (s *scanner) copyLiteral(w valueWriter) error {
	l := s.lit
	w.Write(s.line[s.end:])
	w.WriteString("\r\n")
	if err := copyN(w, s.br, l.n); err != nil {
		return err
	}
	return s.nextLine()
}

// skipValue reads one value and throws it away.
func (s *scanner) skipValue() error {
	return s.copyValue(discardWriter{})
}

// eqFold compares ASCII case-insensitively, as IMAP's keywords are.
func eqFold[S ~string | ~[]byte](a S, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if upper(a[i]) != upper(b[i]) {
			return false
		}
	}
	return true
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// appendString writes b as an IMAP string: quoted when it can be, a literal
// otherwise (8-bit bytes, line breaks, quotes at length).
func appendString(dst, b []byte) []byte {
	if quotable(b) {
		dst = append(dst, '"')
		for _, c := range b {
			if c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		}
		return append(dst, '"')
	}
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, "}\r\n"...)
	return append(dst, b...)
}

func quotable(b []byte) bool {
	if len(b) > 1024 {
		return false
	}
	for _, c := range b {
		if c == 0 || c == '\r' || c == '\n' || c >= 0x80 {
			return false
		}
	}
	return true
}
