package imapmsg

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"unicode/utf8"

	"smimeproxy/internal/hostile"
	"smimeproxy/smime"
)

func TestParseSection(t *testing.T) {
	tests := []struct {
		spec string
		want Section
		err  bool
	}{
		{spec: "", want: Section{}},
		{spec: "1", want: Section{Part: []int{1}}},
		{spec: "1.2.3", want: Section{Part: []int{1, 2, 3}}},
		{spec: "header", want: Section{Specifier: "HEADER"}},
		{spec: "2.TEXT", want: Section{Part: []int{2}, Specifier: "TEXT"}},
		{spec: "1.MIME", want: Section{Part: []int{1}, Specifier: "MIME"}},
		{spec: `HEADER.FIELDS (From "Subject" x-a)`, want: Section{Specifier: "HEADER.FIELDS", Fields: []string{"FROM", "SUBJECT", "X-A"}}},
		{spec: `3.header.fields.not (To)`, want: Section{Part: []int{3}, Specifier: "HEADER.FIELDS.NOT", Fields: []string{"TO"}}},
		{spec: `HEADER.FIELDS ("a\"b")`, want: Section{Specifier: "HEADER.FIELDS", Fields: []string{`A"B`}}},
		{spec: "MIME", err: true},
		{spec: "0", err: true},
		{spec: "1.", err: true},
		{spec: "1..2", err: true},
		{spec: "1.FOO", err: true},
		{spec: "HEADER.FIELDS ()", err: true},
		{spec: "HEADER.FIELDS From", err: true},
		{spec: "HEADER.FIELDS (From  To)", err: true},
		{spec: `HEADER.FIELDS ("open)`, err: true},
		{spec: "HEADER.FIELDS ({3}\r\nabc)", err: true},
		{spec: "99999999999999999999", err: true},
	}
	for _, tc := range tests {
		got, err := ParseSection(tc.spec)
		if tc.err {
			if err == nil {
				t.Errorf("ParseSection(%q) = %+v, want an error", tc.spec, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got.Part, tc.want.Part) || got.Specifier != tc.want.Specifier || !slices.Equal(got.Fields, tc.want.Fields) {
			t.Errorf("ParseSection(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":              `""`,
		"plain":         `"plain"`,
		`a "b" \ c`:     `"a \"b\" \\ c"`,
		`"""""`:         "{5}\r\n\"\"\"\"\"",
		"caf\u00e9":     "{5}\r\ncaf\u00e9",
		"line\r\nbreak": "{11}\r\nline\r\nbreak",
	} {
		if got := string(AppendString(nil, in)); got != want {
			t.Errorf("AppendString(%q) = %q, want %q", in, got, want)
		}
	}
}

// imapValue returns what follows one IMAP value (NIL, a number, a quoted
// string, a literal or a parenthesised list of values) at the start of b,
// or false when b does not begin with one.
func imapValue(b []byte) ([]byte, bool) {
	switch {
	case len(b) == 0:
		return nil, false
	case bytes.HasPrefix(b, []byte("NIL")):
		return b[3:], true
	case b[0] >= '0' && b[0] <= '9':
		i := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return b[i:], true
	case b[0] == '"':
		for i := 1; i < len(b); i++ {
			switch c := b[i]; {
			case c == '\\' && i+1 < len(b) && (b[i+1] == '"' || b[i+1] == '\\'):
				i++
			case c == '"':
				return b[i+1:], true
			case c == '\r' || c == '\n' || c == 0 || c >= 0x80 || c == '\\':
				return nil, false
			}
		}
		return nil, false
	case b[0] == '{':
		end := bytes.Index(b, []byte("}\r\n"))
		if end < 0 {
			return nil, false
		}
		n, err := strconv.Atoi(string(b[1:end]))
		if err != nil || end+3+n > len(b) {
			return nil, false
		}
		return b[end+3+n:], true
	case b[0] == '(':
		b = b[1:]
		for first := true; ; first = false {
			if len(b) > 0 && b[0] == ')' {
				return b[1:], true
			}
			if !first {
				if len(b) == 0 || b[0] != ' ' {
					// Dovecot writes nested lists without a space between.
					if len(b) == 0 || b[0] != '(' {
						return nil, false
					}
				} else {
					b = b[1:]
				}
			}
			var ok bool
			if b, ok = imapValue(b); !ok {
				return nil, false
			}
		}
	}
	return nil, false
}

// listLen is how many values the list at the start of b holds.
func listLen(b []byte) int {
	n := 0
	b = b[1:]
	for len(b) > 0 && b[0] != ')' {
		b = bytes.TrimPrefix(b, []byte(" "))
		b, _ = imapValue(b)
		n++
	}
	return n
}

// checkSyntax fails when an item of m is not one IMAP value.
func checkSyntax(t *testing.T, m *Message) {
	t.Helper()
	for name, v := range map[string][]byte{"ENVELOPE": m.Envelope(), "BODYSTRUCTURE": m.BodyStructure(true), "BODY": m.BodyStructure(false)} {
		if rest, ok := imapValue(v); !ok || len(rest) > 0 || v[0] != '(' {
			t.Fatalf("%s is not one IMAP list: %q", name, v)
		}
	}
	if n := listLen(m.Envelope()); n != 10 {
		t.Fatalf("ENVELOPE has %d fields: %q", n, m.Envelope())
	}
	if p := m.Preview(); !utf8.ValidString(p) || utf8.RuneCountInString(p) > previewChars+1 {
		t.Fatalf("PREVIEW %q", p)
	}
	if m.Size() < int64(len(m.msg)) {
		t.Fatalf("RFC822.SIZE %d for %d bytes", m.Size(), len(m.msg))
	}
}

// seeds are the messages of testdata and the small hostile ones.
func seeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.eml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range hostile.Messages() {
		if len(c.Msg) < 4096 {
			f.Add(c.Msg)
		}
	}
}

// FuzzParse: no message makes any item panic, and every item is valid
// IMAP syntax.
func FuzzParse(f *testing.F) {
	seeds(f)
	lim := &smime.Limits{MaxDepth: 8, MaxParts: 64, MaxHeaderBytes: 4096}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, l := range []*smime.Limits{nil, lim} {
			m := Parse(msg, l)
			checkSyntax(t, m)
			for _, p := range append([][]int{nil, {1}, {2, 1}, {9}}, m.paths()...) {
				for _, spec := range []string{"", "HEADER", "TEXT", "MIME", "HEADER.FIELDS (SUBJECT FROM)", "HEADER.FIELDS.NOT (SUBJECT)"} {
					if spec == "MIME" && len(p) == 0 {
						continue
					}
					s := Section{Part: p, Specifier: spec}
					if spec == "HEADER.FIELDS (SUBJECT FROM)" || spec == "HEADER.FIELDS.NOT (SUBJECT)" {
						s, _ = ParseSection(spec)
						s.Part = p
					}
					if b := m.Section(s); bytes.IndexByte(b, 0) >= 0 {
						t.Fatalf("BODY[%v %s] holds a NUL", p, spec)
					}
				}
				if b, err := m.Binary(p); err == nil {
					if n, err := m.BinarySize(p); err == nil && n != int64(len(b)) {
						t.Fatalf("BINARY.SIZE[%v] = %d, BINARY has %d bytes", p, n, len(b))
					}
				}
				_ = m.Literal8(p)
			}
		}
	})
}

// FuzzParseSection: what ParseSection accepts names a valid section, and
// nothing makes it panic.
func FuzzParseSection(f *testing.F) {
	for _, s := range []string{"", "1", "1.2.MIME", "HEADER", "2.TEXT", `HEADER.FIELDS (From "Subject")`, "HEADER.FIELDS.NOT (a b c)", "1.", "MIME"} {
		f.Add(s)
	}
	m := Parse([]byte("Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n"), nil)
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSection(spec)
		if err != nil {
			return
		}
		if slices.Contains(s.Part, 0) || s.Specifier == "MIME" && len(s.Part) == 0 ||
			(s.Specifier == "HEADER.FIELDS" || s.Specifier == "HEADER.FIELDS.NOT") != (len(s.Fields) > 0) {
			t.Fatalf("ParseSection(%q) = %+v", spec, s)
		}
		_ = m.Section(s)
	})
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// describe asks for every item a client syncing the message would.
func describe(msg []byte) {
	m := Parse(msg, nil)
	_, _, _, _ = m.Envelope(), m.BodyStructure(true), m.BodyStructure(false), m.Preview()
	_ = m.Section(Section{Specifier: "HEADER"})
}

// TestLinear: describing twice the nesting or parts costs about twice the
// memory, not four times (issue 9, point 2); BenchmarkDescribe measures
// the time.
func TestLinear(t *testing.T) {
	for _, tc := range []struct {
		name string
		gen  func(int) []byte
		n    int
	}{
		{"signed nested", hostile.SignedNested, 10000},
		{"nested messages", hostile.NestedMessages, 10000},
		{"parts", hostile.ManyParts, 5000},
	} {
		small, large := tc.gen(tc.n), tc.gen(2*tc.n)
		a := allocated(func() { describe(small) })
		b := allocated(func() { describe(large) })
		t.Logf("%s: %d bytes allocated for %d, %d for %d (x%.2f)", tc.name, a, tc.n, b, 2*tc.n, float64(b)/float64(a))
		if float64(b) > 2.5*float64(a) {
			t.Errorf("%s: twice as many allocate x%.2f", tc.name, float64(b)/float64(a))
		}
	}
}

// BenchmarkDescribe describes the hostile nested messages (1,000 to 100,000
// levels): the time per byte stays the same.
func BenchmarkDescribe(b *testing.B) {
	for _, levels := range []int{1000, 10000, 100000} {
		msg := hostile.SignedNested(levels)
		b.Run(fmt.Sprintf("%dk", levels/1000), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				describe(msg)
			}
		})
	}
}

// TestLimits: limits left zero take their defaults; past MaxDepth a
// container is described as Dovecot describes it past its own limit.
func TestLimits(t *testing.T) {
	msg := hostile.Nested(4)
	if a, b := Parse(msg, &smime.Limits{MaxParts: 50}).Envelope(), Parse(msg, nil).Envelope(); !bytes.Equal(a, b) {
		t.Errorf("with MaxParts alone the envelope is %q, want %q", a, b)
	}
	got := Parse(msg, &smime.Limits{MaxDepth: 2}).BodyStructure(false)
	if want := `(("application" "octet-stream" ("boundary" "b000001") NIL NIL "7bit" 136) "mixed")`; string(got) != want {
		t.Errorf("BODY past MaxDepth = %s, want %s", got, want)
	}
}
