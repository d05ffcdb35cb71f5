package proxy

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"smimeproxy/smime"
)

func TestFoldField(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"short; smime=pass", "A-R: short; smime=pass\r\n"},
		{`host.example; smime=fail reason="invalid: the content was altered after signing" body.smime-identifier=alice@example.test`,
			"A-R: host.example; smime=fail\r\n reason=\"invalid: the content was altered after signing\"\r\n body.smime-identifier=alice@example.test\r\n"},
		{"a  b", "A-R: a  b\r\n"},
		{"x\r\nInjected: yes", "A-R: x  Injected: yes\r\n"},
	} {
		if got := foldField("A-R", tc.value); got != tc.want {
			t.Errorf("foldField(%q) =\n%q, want\n%q", tc.value, got, tc.want)
		}
	}
}

func FuzzFoldField(f *testing.F) {
	f.Add(`host; smime=pass reason="valid: signed by someone with a rather long name indeed" body.smime-serial=1234`)
	f.Add(strings.Repeat("word ", 40))
	f.Add(strings.Repeat("x", 200) + " y")
	f.Add("  \"quoted  \\\" string\"   (comment (nested)) ")
	f.Fuzz(func(t *testing.T, value string) {
		got := foldField(authResultsField, value)
		if !strings.HasSuffix(got, "\r\n") {
			t.Fatalf("no CRLF at the end: %q", got)
		}
		lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n")
		for i, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("bare CR or LF in line %q", l)
			}
			if i > 0 && (!strings.HasPrefix(l, " ") || strings.TrimSpace(l) == "") {
				t.Fatalf("continuation line %q is not folding whitespace then text", l)
			}
			// Trailing spaces never start a line of their own.
			if len(strings.TrimRight(l, " ")) > maxLine && strings.Contains(strings.TrimSpace(l), " ") && !strings.Contains(l, `"`) {
				t.Fatalf("line of %d characters could have been folded: %q", len(l), l)
			}
		}
		clean := strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
		if unfolded := strings.ReplaceAll(got, "\r\n", ""); unfolded != authResultsField+": "+clean {
			t.Fatalf("unfolded %q, want %q", unfolded, authResultsField+": "+clean)
		}
	})
}

func TestDropOwnResults(t *testing.T) {
	msg := "Authentication-Results: proxy.example; smime=pass\r\n (forged)\r\n" +
		"Received: x\r\nAuthentication-Results: mx.example; dkim=pass\r\n" +
		"authentication-results: \"proxy.example\"; smime=pass\r\nSubject: hi\r\n\r\n" +
		"Authentication-Results: proxy.example; in the body\r\n"
	want := "Received: x\r\nAuthentication-Results: mx.example; dkim=pass\r\nSubject: hi\r\n\r\n" +
		"Authentication-Results: proxy.example; in the body\r\n"
	if got := string(dropOwnResults([]byte(msg), "proxy.example")); got != want {
		t.Errorf("dropOwnResults =\n%q, want\n%q", got, want)
	}
	clean := []byte("Subject: hi\r\n\r\nbody")
	if got := dropOwnResults(clean, "proxy.example"); &got[0] != &clean[0] {
		t.Error("a message without our field was copied")
	}
}

func FuzzDropOwnResults(f *testing.F) {
	f.Add([]byte("Authentication-Results: p; smime=pass\r\nSubject: x\r\n\r\nbody"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("A: b\n\nc"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := dropOwnResults(msg, "p")
		if end := headerEnd(msg); end >= 0 && !bytes.HasSuffix(out, msg[end:]) {
			t.Fatalf("the body changed: %q -> %q", msg, out)
		}
		if len(out) > len(msg) {
			t.Fatalf("grew: %q -> %q", msg, out)
		}
	})
}

func TestComment(t *testing.T) {
	if got := comment("a (b) \\ c\r\nd"); got != `(a \(b\) \\ cd)` {
		t.Errorf("comment = %q", got)
	}
}

func FuzzClassifyHeader(f *testing.F) {
	for _, h := range []string{
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\n",
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=x\r\n\r\n",
		"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
		"Content-Type: text/plain\r\n\r\n",
		"\r\n",
	} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k := classifyHeader(b)
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
		if err != nil && k != smime.Plain {
			t.Fatalf("an unreadable header classified as %v", k)
		}
		if err == nil && k != smime.Classify(h) {
			t.Fatalf("classifyHeader = %v, Classify = %v", k, smime.Classify(h))
		}
	})
}

// checkStructure fails unless imapserver can write bs.
func checkStructure(t *testing.T, bs imap.BodyStructure) {
	t.Helper()
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs == nil || bs.Extended == nil {
			t.Fatalf("single part without extension data: %#v", bs)
		}
		if bs.MessageRFC822 != nil {
			checkStructure(t, bs.MessageRFC822.BodyStructure)
		}
	case *imap.BodyStructureMultiPart:
		if bs == nil || bs.Extended == nil || len(bs.Children) == 0 {
			t.Fatalf("multipart imapserver cannot write: %#v", bs)
		}
		for _, c := range bs.Children {
			checkStructure(t, c)
		}
	default:
		t.Fatalf("structure %T", bs)
	}
}

func TestSanitizeStructure(t *testing.T) {
	for _, bs := range []imap.BodyStructure{
		nil,
		(*imap.BodyStructureSinglePart)(nil),
		&imap.BodyStructureMultiPart{Subtype: "mixed"},
		&imap.BodyStructureSinglePart{Type: "message", Subtype: "rfc822", MessageRFC822: &imap.BodyStructureMessageRFC822{}},
		&imap.BodyStructureMultiPart{Subtype: "mixed", Children: []imap.BodyStructure{&imap.BodyStructureMultiPart{}}},
	} {
		checkStructure(t, sanitizeStructure(bs))
	}
}

// FuzzOpenedItems computes every item from a served message, as FETCH does
// for an S/MIME message: nothing may panic, and the structure must be one
// imapserver can write.
func FuzzOpenedItems(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "smime", "testdata", "*.eml"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\nno parts at all"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=y\r\n\r\n--y\r\n\r\n--y--"))
	opts := &imap.FetchOptions{
		Envelope:      true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{
			{}, {Specifier: imap.PartSpecifierHeader}, {Specifier: imap.PartSpecifierText},
			{Part: []int{1}}, {Part: []int{2, 1}, Specifier: imap.PartSpecifierMIME},
			{Part: []int{1}, Specifier: imap.PartSpecifierHeader}, {Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}},
			{Partial: &imap.SectionPartial{Offset: 3, Size: 7}},
		},
		BinarySection:     []*imap.FetchItemBinarySection{{Part: []int{1}}, {}},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}},
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := &openedMessage{raw: raw}
		items, err := openedItems(m, opts)
		if err != nil {
			t.Fatalf("openedItems: %v", err)
		}
		checkStructure(t, items.structure)
		if !bytes.Equal(items.body[0], imapserver.ExtractBodySection(bytes.NewReader(raw), &imap.FetchItemBodySection{})) {
			t.Fatal("BODY[] differs from the served bytes")
		}
	})
}
