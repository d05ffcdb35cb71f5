package imap

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func TestLiteralAt(t *testing.T) {
	for _, tc := range []struct {
		line string
		want literal
		ok   bool
	}{
		{"a APPEND x {12}\r\n", literal{n: 12, sync: true}, true},
		{"a APPEND x {12+}\r\n", literal{n: 12}, true},
		{"a APPEND x ~{7}\r\n", literal{n: 7, binary: true, sync: true}, true},
		{"* 1 FETCH (BINARY[1]<0> ~{10}\r\n", literal{n: 10, binary: true, sync: true}, true},
		{"a APPEND x {12}\n", literal{n: 12, sync: true}, true},
		{"a NOOP\r\n", literal{}, false},
		{"a SEARCH \"{12}\"\r\n", literal{}, false},
		{"a X {}\r\n", literal{}, false},
		{"a X {1a}\r\n", literal{}, false},
		{"a X {99999999999999}\r\n", literal{}, false},
	} {
		got, ok := literalAt([]byte(tc.line))
		if ok != tc.ok || got != tc.want {
			t.Errorf("literalAt(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

// scan makes a scanner over a whole response or command.
func scan(s string) (*scanner, error) {
	br := bufio.NewReader(strings.NewReader(s))
	line, err := readLine(br, 1<<20)
	if err != nil {
		return nil, err
	}
	return newScanner(br, 1<<20, line), nil
}

func TestCopyValue(t *testing.T) {
	for _, v := range []string{
		`NIL`, `42`, `"quoted \" string"`, `(a (b c) "d" NIL)`, "{5}\r\nhe)lo",
		`(("Alice" NIL "alice" "example.test"))`, "(\"x\" {3}\r\na\"b \"y\")", "~{4}\r\n\x00\x01\r\n",
	} {
		sc, err := scan(v + " rest\r\n")
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := sc.copyValue(&b); err != nil {
			t.Errorf("copyValue(%q): %v", v, err)
			continue
		}
		if b.String() != v {
			t.Errorf("copyValue(%q) copied %q", v, b.String())
		}
	}
	for _, v := range []string{`(a (b)`, `"unfinished`, `)`, ``} {
		sc, err := scan(v + "\r\n")
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.copyValue(&bytes.Buffer{}); err == nil {
			t.Errorf("copyValue(%q) accepted it", v)
		}
	}
}

func FuzzCopyValue(f *testing.F) {
	for _, s := range []string{`(a (b c) "d" NIL) x`, "{5}\r\nhello", `"x\"y"`, "~{2}\r\n\x00\x00 ", "((((", "{3}\r\n"} {
		f.Add([]byte(s + "\r\n"))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sc, err := scan(string(in))
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := sc.copyValue(&b); err != nil {
			return
		}
		// What was copied reads back as one value, the same.
		again, err := scan(b.String() + "\r\n")
		if err != nil {
			t.Fatalf("copied %q, which does not read back: %v", b.String(), err)
		}
		var c bytes.Buffer
		if err := again.copyValue(&c); err != nil || c.String() != b.String() {
			t.Fatalf("copied %q, read back as %q, %v", b.String(), c.String(), err)
		}
	})
}

func TestParseFetch(t *testing.T) {
	for _, tc := range []struct {
		cmd     string
		set     string
		content bool
		items   []fetchItem
	}{
		{"a FETCH 1:* (FLAGS UID)", "1:*", false, []fetchItem{{raw: "FLAGS", name: "FLAGS"}, {raw: "UID", name: "UID"}}},
		{"a FETCH 1 FAST", "1", true, []fetchItem{{raw: "FLAGS", name: "FLAGS"}, {raw: "INTERNALDATE", name: "INTERNALDATE"}, {raw: "RFC822.SIZE", name: "RFC822.SIZE"}}},
		{"a FETCH $ BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.100>", "$", true,
			[]fetchItem{{raw: `BODY.PEEK[HEADER.FIELDS (From "To")]<0.100>`, peek: true, name: "BODY", section: `HEADER.FIELDS (From "To")`, hasSect: true, partial: true, count: 100}}},
		{"a FETCH 2 (BINARY.PEEK[1]<5.10> BINARY.SIZE[1] BODY)", "2", true, []fetchItem{
			{raw: "BINARY.PEEK[1]<5.10>", peek: true, name: "BINARY", section: "1", hasSect: true, partial: true, offset: 5, count: 10},
			{raw: "BINARY.SIZE[1]", name: "BINARY.SIZE", section: "1", hasSect: true}, {raw: "BODY", name: "BODY"}}},
		{"a FETCH 1:3 (FLAGS MODSEQ) (CHANGEDSINCE 4)", "1:3", false, []fetchItem{{raw: "FLAGS", name: "FLAGS"}, {raw: "MODSEQ", name: "MODSEQ"}}},
	} {
		sc, err := scan(tc.cmd + "\r\n")
		if err != nil {
			t.Fatal(err)
		}
		commandHead(sc)
		f, err := parseFetch(sc, false)
		if err != nil {
			t.Errorf("parseFetch(%q): %v", tc.cmd, err)
			continue
		}
		if f.set != tc.set || f.needsContent() != tc.content || len(f.items) != len(tc.items) {
			t.Errorf("parseFetch(%q) = %+v", tc.cmd, f)
			continue
		}
		for i := range f.items {
			if f.items[i] != tc.items[i] {
				t.Errorf("parseFetch(%q) item %d = %+v, want %+v", tc.cmd, i, f.items[i], tc.items[i])
			}
		}
	}
	for _, bad := range []string{"a FETCH", "a FETCH 1", "a FETCH 1 (BODY[", "a FETCH 1 BODY[]<1.0>", "a FETCH 1 BODY[]<x>"} {
		sc, err := scan(bad + "\r\n")
		if err != nil {
			t.Fatal(err)
		}
		commandHead(sc)
		if f, err := parseFetch(sc, false); err == nil {
			t.Errorf("parseFetch(%q) = %+v, want an error", bad, f)
		}
	}
}

func FuzzParseFetch(f *testing.F) {
	for _, s := range []string{"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.10>)", "a FETCH 1 ALL", "a FETCH 1 (BODY[1.2.MIME]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sc, err := scan(in + "\r\n")
		if err != nil {
			return
		}
		if _, _, err := commandHead(sc); err != nil {
			return
		}
		parseFetch(sc, false)
	})
}

func TestNumSets(t *testing.T) {
	if got := formatNumSet([]uint32{5, 1, 2, 3, 9, 10, 3}); got != "1:3,5,9:10" {
		t.Errorf("formatNumSet = %q", got)
	}
	got, ok := parseNumSet("3:1,7")
	if !ok || len(got) != 4 || got[0] != 1 || got[3] != 7 {
		t.Errorf("parseNumSet = %v, %v", got, ok)
	}
	if _, ok := parseNumSet("1:4294967295"); ok {
		t.Error("parseNumSet took a range of four billion")
	}
}

func TestFilterCapLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"* CAPABILITY IMAP4rev1 NOTIFY COMPRESS=DEFLATE IDLE\r\n", "* CAPABILITY IMAP4rev1 IDLE\r\n"},
		{"a OK [CAPABILITY IMAP4rev1 URLAUTH URLAUTH=BINARY CATENATE MOVE] Logged in\r\n", "a OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n"},
		{"* OK [UIDNEXT 4] Predicted next UID\r\n", "* OK [UIDNEXT 4] Predicted next UID\r\n"},
	} {
		if got := string(filterCapLine([]byte(tc.in))); got != tc.want {
			t.Errorf("filterCapLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
