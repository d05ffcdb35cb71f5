package smime

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestStripLegacyText(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"one field", "Subject: Hi\r\n\r\nText.\r\n", "Text.\r\n", true},
		{"several, LF", "Subject: Hi\nKeywords: a, b\n\nText.\n", "Text.\n", true},
		{"blank line only", "\r\nText.\r\n", "Text.\r\n", true},
		{"empty text after", "Subject: Hi\r\n\r\n", "", true},
		{"no blank line", "Subject: Hi\r\nText.", "", false},
		{"not a field line", "Dear Bob,\r\n\r\nText.\r\n", "", false},
		{"space in the name", "Sub ject: Hi\r\n\r\nText.\r\n", "", false},
		{"empty", "", "", false},
	} {
		got, ok := stripLegacyText([]byte(tc.in))
		if ok != tc.ok || ok && string(got) != tc.want {
			t.Errorf("stripLegacyText(%s) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStripLegacyHTML(t *testing.T) {
	const elem = `<div class="header-protection-legacy-display"><pre>Subject: Hi</pre></div>`
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"after body", "<html><body>" + elem + "\r\n<p>x</p></body></html>", "<html><body><p>x</p></body></html>", true},
		{"first of two classes, nested div", `<div class="a header-protection-legacy-display"><div>x</div></div><p>y</p>`, "<p>y</p>", true},
		{"the first only", elem + elem, elem, true},
		{"in a comment", "<!-- " + elem + " --><p>x</p>", "", false},
		{"class as text", "<p>header-protection-legacy-display</p>", "", false},
		{"unclosed", `<div class="header-protection-legacy-display"><pre>x`, "", false},
	} {
		got, ok := stripLegacyHTML([]byte(tc.in))
		if ok != tc.ok || ok && string(got) != tc.want {
			t.Errorf("stripLegacyHTML(%s) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestWithParams(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		params    [][2]string
		want      string
		ok        bool
	}{
		{"appended", "Content-Type: text/plain; charset=us-ascii\r\n", [][2]string{{"hp", "cipher"}},
			"Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n", true},
		{"folded when long", "Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes\r\n", [][2]string{{"hp", "cipher"}, {"hp-legacy-display", "1"}},
			"Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes;\r\n hp=\"cipher\"; hp-legacy-display=\"1\"\r\n", true},
		{"folded field, LF", "Content-Type: multipart/mixed;\n\tboundary=\"b\"\n", [][2]string{{"hp", "clear"}},
			"Content-Type: multipart/mixed;\r\n\tboundary=\"b\"; hp=\"clear\"\r\n", true},
		{"replaced", "Content-type: text/plain; charset=us-ascii; hp=clear\r\n", [][2]string{{"hp", "cipher"}},
			"Content-type: text/plain; charset=us-ascii; hp=cipher\r\n", true},
		{"replaced, unreadable", "Content-Type: text/plain; hp=a; hp=b\r\n", [][2]string{{"hp", "cipher"}}, "", false},
	} {
		got, ok := withParams([]byte(tc.raw), tc.params...)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("withParams(%s) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzLegacyDisplay: the element the writer puts in, the reader takes out
// again, leaving the text as it was, whatever the text.
func FuzzLegacyDisplay(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.eml")
	for _, name := range files {
		f.Add(readTestdata(f, filepath.Base(name)))
	}
	for _, s := range []string{"<html><body><p>x</p></body></html>", "<BODY bgcolor=white>x", "<script><body></script><body>", "<!--<body>--><p>", "<body", ""} {
		f.Add([]byte(s))
	}
	lines := []legacyLine{{"Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= <&>"}, {"Keywords", "a, b"}}
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, ok := stripLegacyText(append(legacyText(lines, true), doc...))
		if !ok || !bytes.Equal(got, doc) {
			t.Fatalf("text: stripLegacyText(legacyText + %q) = %q, %v", doc, got, ok)
		}
		if strings.Contains(string(doc), legacyDisplayClass) {
			_, _ = stripLegacyHTML(doc)
			return
		}
		with := insertHTML(doc, legacyHTML(lines))
		got, ok = stripLegacyHTML(with)
		if !ok || !bytes.Equal(got, doc) {
			t.Fatalf("html: stripLegacyHTML(%q) = %q, %v; want %q", with, got, ok, doc)
		}
	})
}
