package rfc822

import (
	"slices"
	"testing"
)

func TestMediaType(t *testing.T) {
	tests := []struct {
		in, typ, sub string
		params       []Param
		ok           bool
	}{
		{"text/plain", "text", "plain", nil, true},
		{" TEXT/Html ; Charset=\"utf-8\"", "TEXT", "Html", []Param{{"Charset", "utf-8"}}, true},
		{"text/plain (comment); charset=us-ascii (c)", "text", "plain", []Param{{"charset", "us-ascii"}}, true},
		{"multipart/mixed;\r\n boundary=\"a b\"", "multipart", "mixed", []Param{{"boundary", "a b"}}, true},
		{"text", "text", "", nil, false},
		{"text/", "", "", nil, false},
		{"/plain", "", "", nil, false},
		{"text/plain garbage", "", "", nil, false},
		{"a/b; x*0=\"1\"; x*1=\"2\"; y*=utf-8''%C3%A4", "a", "b", []Param{{"x", "12"}, {"y*", "utf-8''%C3%A4"}}, true},
		{"a/b; x*0*=utf-8''a; x*1=%", "a", "b", []Param{{"x*", "utf-8''a%25"}}, true},
		{"a/b; x*0=1; x*2=3", "a", "b", []Param{{"x*0", "1"}, {"x*2", "3"}}, true},
		{"a/b; name==?utf-8?q?x?=; other=y", "a", "b", []Param{{"name", "=?utf-8?q?x?="}, {"other", "y"}}, true},
		{"a/b;; ;c=d; =e", "a", "b", []Param{{"c", "d"}, {"", "e"}}, true},
	}
	for _, tc := range tests {
		typ, sub, params, ok := MediaType([]byte(tc.in))
		if typ != tc.typ || sub != tc.sub || !slices.Equal(params, tc.params) || ok != tc.ok {
			t.Errorf("MediaType(%q) = %q %q %q %v, want %q %q %q %v", tc.in, typ, sub, params, ok, tc.typ, tc.sub, tc.params, tc.ok)
		}
	}
}

func TestPhraseAndComments(t *testing.T) {
	var comment []byte
	p := New([]byte(`(a (nested) comment) "quoted \"x\"" atom. more <x@y>`))
	p.Comment = &comment
	if p.SkipLWSP() != 1 || string(comment) != "a (nested) comment" {
		t.Fatalf("comment %q", comment)
	}
	var phrase []byte
	if ret := p.Phrase(&phrase); ret != 1 || string(phrase) != `quoted "x" atom. more` || p.Peek() != '<' {
		t.Errorf("Phrase = %d %q, next %q", ret, phrase, p.Peek())
	}
}

// FuzzMediaType: no value makes the parser panic or loop, and each call
// moves forward.
func FuzzMediaType(f *testing.F) {
	for _, s := range []string{"text/plain; charset=utf-8", "multipart/mixed; boundary=\"x\"", "a/b; x*0*=utf-8''a; x*1=b",
		"(c (d)) a/b", "a/b; n=\"\\\"", "text"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		MediaType(v)
		p := New(v)
		p.ReplaceNUL = true
		var s []byte
		for !p.AtEnd() {
			pos := p.Pos()
			switch p.Peek() {
			case '"':
				p.QuotedString(&s)
			case '@':
				p.Domain(&s)
			default:
				if p.Phrase(&s) < 0 || p.Pos() == pos {
					p.Skip()
				}
			}
			if p.Pos() <= pos && !p.AtEnd() {
				t.Fatalf("no progress at %d in %q", pos, v)
			}
		}
	})
}
