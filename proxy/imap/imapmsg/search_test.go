package imapmsg

import (
	"encoding/base64"
	"testing"

	"smimeproxy/smime"
)

// searchMsg has text where SEARCH finds it and where it does not: the
// answers in TestSearcher are the lab's Dovecot's (2.3.19) for the same
// message.
var searchMsg = "From: a@x\r\nSubject: outer =?iso-8859-1?q?gr=FC=DFe?=\r\nX-Folded: first\r\n second-line\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npreamble-word\r\n" +
	"--b\r\nContent-Type: text/plain\r\n\r\nplain-word\r\n" +
	"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("attach-word")) + "\r\n" +
	"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner-subject-word\r\nX-Inner: innerhdr-word\r\n\r\ninner-body-word\r\n" +
	"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>html-word caf=E9 CR=C8ME</p>\r\n" +
	"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("b64-word ÉCOLE")) + "\r\n" +
	"--b--\r\nepilogue-word\r\n"

func TestSearcher(t *testing.T) {
	s := Parse([]byte(searchMsg), nil).Searcher()
	for _, tc := range []struct {
		key, field, needle string
		want               bool
	}{
		{"BODY", "", "preamble-word", false},
		{"BODY", "", "plain-word", true},
		{"BODY", "", "attach-word", false},
		{"BODY", "", "inner-subject-word", false},
		{"BODY", "", "inner-body-word", true},
		{"BODY", "", "html-word", true},
		{"BODY", "", "<p>", true},
		{"BODY", "", "café", true},
		{"BODY", "", "crème", true},
		{"BODY", "", "epilogue-word", false},
		{"BODY", "", "b64-word", true},
		{"BODY", "", "école", true},
		{"BODY", "", "ecole", false},
		{"BODY", "", "content-type", false},
		{"TEXT", "", "innerhdr-word", true},
		{"TEXT", "", "x-inner: innerhdr", true},
		{"TEXT", "", "Content-Type: message", true},
		{"TEXT", "", "content-transfer-encoding: base64", true},
		{"TEXT", "", "outer grü", true},
		{"TEXT", "", "attach-word", false},
		{"HEADER", "Subject", "inner-subject-word", false},
		{"HEADER", "subject", "OUTER", true},
		{"HEADER", "Subject", "grüße", true},
		{"HEADER", "Subject", "GRÜSSE", false},
		{"HEADER", "X-Folded", "first second", true},
		{"HEADER", "X-Folded", "first  second", false},
		{"HEADER", "X-Folded", "", true},
		{"HEADER", "X-Nope", "", false},
		{"HEADER", "From", "a@x", true},
	} {
		var got bool
		needle := Fold(tc.needle)
		switch tc.key {
		case "BODY":
			got = s.Body(needle)
		case "TEXT":
			got = s.Text(needle)
		default:
			got = s.Header(tc.field, needle)
		}
		if got != tc.want {
			t.Errorf("%s %s %q = %v, want %v", tc.key, tc.field, tc.needle, got, tc.want)
		}
	}
}

func TestSearcherCharsets(t *testing.T) {
	for _, tc := range []struct{ name, msg, needle string }{
		{"encoded word, UTF-8", "Subject: =?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte("Überweisung")) + "?=\r\n\r\nx\r\n", "überweisung"},
		{"encoded word, Windows-1252", "Subject: =?windows-1252?q?=93quoted=94?=\r\n\r\nx\r\n", "“quoted”"},
		{"raw UTF-8 in a field", "Subject: naïve\r\n\r\nx\r\n", "NAÏVE"},
		{"ISO-8859-1 body", "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\r\nna\xefve\r\n", "naïve"},
		{"US-ASCII body", "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nPlain Words\r\n", "plain words"},
		{"no Content-Type: text", "Subject: x\r\n\r\nhidden text\r\n", "hidden text"},
		{"unknown charset, ASCII still found", "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\nascii \xf0\xf2\r\n", "ascii"},
	} {
		s := Parse([]byte(tc.msg), nil).Searcher()
		if !s.Header("Subject", Fold(tc.needle)) && !s.Body(Fold(tc.needle)) {
			t.Errorf("%s: %q not found", tc.name, tc.needle)
		}
	}
}

// TestSearcherLimits: text past smime.Limits is not searched, and hostile
// messages are searched without trouble.
func TestSearcherLimits(t *testing.T) {
	deep := "Content-Type: multipart/mixed; boundary=a\r\nMIME-Version: 1.0\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ndeep text\r\n--b--\r\n--a--\r\n"
	if !Parse([]byte(deep), nil).Searcher().Body("deep text") {
		t.Error("text two levels down not found")
	}
	if Parse([]byte(deep), &smime.Limits{MaxDepth: 1, MaxParts: 10, MaxHeaderBytes: 1000}).Searcher().Body("deep text") {
		t.Error("text past MaxDepth searched")
	}
}

// FuzzSearcher: no message makes a Searcher panic.
func FuzzSearcher(f *testing.F) {
	seeds(f)
	f.Add([]byte(searchMsg))
	f.Fuzz(func(t *testing.T, msg []byte) {
		s := Parse(msg, nil).Searcher()
		s.Header("Subject", "x")
		s.Body("x")
		s.Text("")
	})
}
