package smime

import (
	"bytes"
	"flag"
	"io"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update after checking):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// sevenBitSafeBytewise is sevenBitSafe as it was, a byte at a time: the
// reference FuzzSevenBitSafe holds the faster one to.
func sevenBitSafeBytewise(b []byte) bool {
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

func FuzzSevenBitSafe(f *testing.F) {
	for _, s := range []string{"", "a\r\nb", "a\nb\r\n", "\n", "a\rb", "\r", "gr\xc3\xbc\r\n", "a\x00", strings.Repeat("x", 998) + "\r\n", strings.Repeat("y", 999) + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := sevenBitSafe(b), sevenBitSafeBytewise(b); got != want {
			t.Fatalf("sevenBitSafe(%q) = %v, want %v", b, got, want)
		}
		if safe, crlf := scan7bit(b); safe && crlf != bytes.Equal(toCRLF(b), b) {
			t.Fatalf("scan7bit(%q) says CRLF %v", b, crlf)
		}
	})
}

func TestSevenBitSafe(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", true},
		{"ascii crlf", "a\r\nb\r\n", true},
		{"bare lf", "a\nb\n", true},
		{"8-bit", "gr\xc3\xbc\xc3\x9fe\r\n", false},
		{"nul", "a\x00b", false},
		{"bare cr", "a\rb", false},
		{"trailing cr", "a\r", false},
		{"998 octets", strings.Repeat("x", 998) + "\r\n", true},
		{"999 octets", strings.Repeat("x", 999) + "\r\n", false},
		{"999 octets lf", strings.Repeat("x", 999) + "\n", false},
		{"998 octets and a lone cr", strings.Repeat("x", 998) + "\r\r\n", false},
		{"8-bit after 8 bytes", "abcdefgh\x80", false},
		{"8-bit in a long line", strings.Repeat("abcdefgh", 20) + "\xff" + "\r\n", false},
		{"8-bit in a block of 32", strings.Repeat("a", 50) + "\x80" + strings.Repeat("a", 20) + "\r\n", false},
		{"cr lf cr lf", "\r\n\r\n", true},
		{"del", "\x7f\r\n", true},
	}
	for _, tc := range tests {
		if got := sevenBitSafe([]byte(tc.in)); got != tc.want {
			t.Errorf("sevenBitSafe(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEncodeQP(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" when only the round trip is checked
	}{
		{"plain", "hello\n", "hello\r\n"},
		{"8-bit", "K\xc3\xb6ln\r\n", "K=C3=B6ln\r\n"},
		{"equals", "a=b\n", "a=3Db\r\n"},
		{"trailing space", "end \nend\t\n", "end=20\r\nend=09\r\n"},
		{"leading dash kept", "-- \nAlice\n", "--=20\r\nAlice\r\n"},
		{"dash after soft break", strings.Repeat("a", 73) + "--b\n", strings.Repeat("a", 73) + "=\r\n=2D-b\r\n"},
		{"no final break", "abc", "abc"},
		{"bare cr kept", "a\rb\n", "a=0Db\r\n"},
		{"long line", strings.Repeat("x", 1200) + "\n", ""},
		{"long 8-bit line", strings.Repeat("\xc3\xa4", 700) + "\n", ""},
		{"long line of dashes", strings.Repeat("-", 300) + "\n", ""},
	}
	for _, tc := range tests {
		got := encodeQP([]byte(tc.in))
		if tc.want != "" && string(got) != tc.want {
			t.Errorf("encodeQP(%s) = %q, want %q", tc.name, got, tc.want)
		}
		lines := strings.Split(string(got), "\r\n")
		for i, line := range lines {
			if len(line) > 76 {
				t.Errorf("encodeQP(%s): line of %d characters", tc.name, len(line))
			}
			if i > 0 && strings.HasSuffix(lines[i-1], "=") && strings.HasPrefix(line, "-") {
				t.Errorf("encodeQP(%s): soft break before '-': %q", tc.name, line)
			}
		}
		if !sevenBitSafe(got) || bytes.Contains(toLF(got), []byte("\r")) {
			t.Errorf("encodeQP(%s) is not 7-bit CRLF text", tc.name)
		}
		dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(got)))
		if err != nil {
			t.Fatalf("decode encodeQP(%s): %v", tc.name, err)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(tc.in, "\r\n", "\n"), "\n", "\r\n")
		if string(dec) != want {
			t.Errorf("encodeQP(%s) does not round-trip: %q", tc.name, dec)
		}
	}
}

func TestCanonLeaf(t *testing.T) {
	bin := string(bytes.Repeat([]byte{0, 1, 2, 0xff, '\n', '\r'}, 40))
	tests := []struct {
		name     string
		in       string
		wantCTE  string // the Content-Transfer-Encoding after canonicalisation
		wantBody string // "" to skip
	}{
		{"7-bit text kept", "Content-Type: text/plain\n\nhello\nworld\n", "", "hello\r\nworld\r\n"},
		{"bare lf to crlf", "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\na\nb\r\nc\n", "7bit", "a\r\nb\r\nc\r\n"},
		{"8bit label on 7-bit data", "Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\nascii only\n", "7bit", "ascii only\r\n"},
		{"8-bit text to qp", "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nK\xc3\xb6ln\n", "quoted-printable", "K=C3=B6ln\r\n"},
		{"long 7-bit line to qp", "Content-Type: text/plain\n\n" + strings.Repeat("y", 1000) + "\n", "quoted-printable", ""},
		{"binary attachment to base64", "Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n" + bin, "base64", ""},
		{"8-bit html to qp", "Content-Type: text/html; charset=utf-8\n\n<p>\xc3\xa4</p>\n", "quoted-printable", "<p>=C3=A4</p>\r\n"},
		{"broken qp with 8-bit", "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\na=3Db \xc3\xa4\n", "quoted-printable", "a=3Db =C3=A4\r\n"},
		{"base64 with long lines rewrapped", "Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n" + strings.Repeat("QUJD", 300) + "\n", "base64", ""},
		{"base64 kept", "Content-Type: image/png\nContent-Transfer-Encoding: base64\n\nQUJD\nREVG\n", "base64", "QUJD\r\nREVG\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := canonical([]byte(tc.in))
			if err != nil {
				t.Fatalf("canonical(%s): %v", tc.name, err)
			}
			if !sevenBitSafe(out) || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
				t.Errorf("canonical(%s) is not 7-bit CRLF:\n%q", tc.name, out)
			}
			got, err := parseEntity(out, DefaultLimits.MaxHeaderBytes)
			if err != nil {
				t.Fatal(err)
			}
			if cte := transferEncoding(got.header); cte != tc.wantCTE {
				t.Errorf("canonical(%s): Content-Transfer-Encoding %q, want %q", tc.name, cte, tc.wantCTE)
			}
			if tc.wantBody != "" && string(got.body) != tc.wantBody {
				t.Errorf("canonical(%s): body %q, want %q", tc.name, got.body, tc.wantBody)
			}
			// Decoding gives back the original content (text in CRLF form).
			orig, _ := parseEntity([]byte(tc.in), DefaultLimits.MaxHeaderBytes)
			want, _ := decodeBody(orig)
			if ct, _ := mediaType(orig.header); strings.HasPrefix(ct, "text/") {
				want = toCRLF(want)
			}
			dec, err := decodeBody(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dec, want) {
				t.Errorf("canonical(%s): content changed:\n%q\nwant\n%q", tc.name, dec, want)
			}
		})
	}
}

// TestPrepare checks where header fields go and what the signed entity looks
// like, against golden files, for every message in testdata.
func TestPrepare(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.eml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.eml")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".eml")
		t.Run(name, func(t *testing.T) {
			msg, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, err := prepare(msg, nil, 0, NoHeaderProtection)
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			content := p.content()
			if len(content) != p.size {
				t.Errorf("prepare: size %d, content %d bytes", p.size, len(content))
			}
			// Outside: every non-content field, in order, bytes unchanged but for CRLF.
			src, _ := parseEntity(msg, DefaultLimits.MaxHeaderBytes)
			var want [][]byte
			for _, f := range src.fields {
				if !isContentField(f.name) {
					want = append(want, crlfField(f.raw))
				}
			}
			if !bytes.Equal(bytes.Join(p.outer, nil), bytes.Join(want, nil)) {
				t.Errorf("outer fields changed:\n%s", bytes.Join(p.outer, nil))
			}
			// Inside: only content fields, CRLF everywhere, no epilogue.
			in, err := parseEntity(content, DefaultLimits.MaxHeaderBytes)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range in.fields {
				if !isContentField(f.name) {
					t.Errorf("field %s inside the signed entity", f.name)
				}
			}
			if bytes.Count(content, []byte("\n")) != bytes.Count(content, []byte("\r\n")) {
				t.Error("bare LF in the signed entity")
			}
			if bytes.Contains(content, []byte("epilogue")) {
				t.Error("epilogue inside the signed entity")
			}
			if !bytes.Contains(msg, []byte("multipart/signed")) && !sevenBitSafe(content) {
				t.Error("signed entity is not 7-bit safe")
			}
			var b bytes.Buffer
			p.writeOuter(&b, "Content-Type: x-test/wrapper")
			b.WriteString("=== signed entity ===\r\n")
			b.Write(content)
			golden(t, "canon/"+name+".golden", b.Bytes())
		})
	}
}

// canonical is an entity in canonical form, as prepare writes the content.
func canonical(in []byte) ([]byte, error) {
	e, err := parseEntity(in, DefaultLimits.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	c := &canon{buf: in, lim: DefaultLimits}
	if err := c.entity(e, Walk(in, nil).Root); err != nil {
		return nil, err
	}
	return bytes.Join(c.out, nil), nil
}

func TestParseEntity(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		fields []string
		body   string
		err    bool
	}{
		{"crlf", "A: 1\r\nB: 2\r\n\r\nbody", []string{"A: 1\r\n", "B: 2\r\n"}, "body", false},
		{"lf folded", "A: 1\n continued\nB: 2\n\nbody\n", []string{"A: 1\n continued\n", "B: 2\n"}, "body\n", false},
		{"no header", "\r\nbody", nil, "body", false},
		{"no body", "A: 1\r\n", []string{"A: 1\r\n"}, "", false},
		{"space before colon", "Subject : x\n\n", []string{"Subject : x\n"}, "", false},
		{"continuation first", " A: 1\n\n", nil, "", true},
		{"no colon", "From alice Mon Jan 1\nA: 1\n\n", nil, "", true},
	}
	for _, tc := range tests {
		e, err := parseEntity([]byte(tc.in), DefaultLimits.MaxHeaderBytes)
		if tc.err != (err != nil) {
			t.Errorf("parseEntity(%s) error = %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		var got []string
		for _, f := range e.fields {
			got = append(got, string(f.raw))
		}
		if strings.Join(got, "|") != strings.Join(tc.fields, "|") || string(e.body) != tc.body {
			t.Errorf("parseEntity(%s) = %q, body %q; want %q, body %q", tc.name, got, e.body, tc.fields, tc.body)
		}
	}
}

func TestDecodeBase64(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"crlf lines", "SGVs\r\nbG8=\r\n", "Hello"},
		{"lf lines", "SGVs\nbG8=\n", "Hello"},
		{"spaces and tabs", " SGVs \tbG8=  ", "Hello"},
		{"no padding", "SGVsbG8", "Hello"},
		{"text after padding", "SGVsbG8=\r\n-- \r\nfooter", "Hello"},
		{"stray characters", "SG*Vs!bG8", "Hello"},
		{"lone sextet", "SGVsbG8xQ", "Hello1"},
	}
	for _, tc := range tests {
		got, err := decodeBase64([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("decodeBase64(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// TestBase64Lines: base64 written in pieces of any size is what
// appendBase64 writes of the whole.
func TestBase64Lines(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, n := range []int{0, 1, 56, 57, 58, 114, 1000, 3000} {
		for _, piece := range []int{1, 3, 56, 57, 58, 200, 4096} {
			var b bytes.Buffer
			w := &base64Lines{b: &b}
			for rest := data[:n]; len(rest) > 0; {
				k := min(piece, len(rest))
				if m, err := w.Write(rest[:k]); m != k || err != nil {
					t.Fatalf("Write = %d, %v", m, err)
				}
				rest = rest[k:]
			}
			w.finish()
			if want := appendBase64(nil, data[:n]); !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%d bytes in pieces of %d:\n%s\nwant\n%s", n, piece, b.Bytes(), want)
			}
			if got := base64Len(n); got != len(b.Bytes()) {
				t.Errorf("base64Len(%d) = %d, want %d", n, got, len(b.Bytes()))
			}
		}
	}
}
