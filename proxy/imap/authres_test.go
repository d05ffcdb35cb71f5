package imap

import (
	"bytes"
	"strings"
	"testing"

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
			if i > 0 && (!strings.HasPrefix(l, " ") || strings.Trim(l, " \t") == "") {
				t.Fatalf("continuation line %q is not folding whitespace then text", l)
			}
			// Trailing spaces never start a line of their own.
			if len(strings.TrimRight(l, " ")) > maxFieldLine && strings.Contains(strings.TrimSpace(l), " ") && !strings.Contains(l, `"`) {
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

func TestClassifyHeader(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   msgKind
	}{
		{"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\n", kindSMIME},
		{"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=x\r\n\r\n", kindSMIME},
		{"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n", kindSMIME},
		{"Content-Type: text/plain\r\n\r\n", kindPlain},
		{"Content-Type: text/plain\r\nAuthentication-Results: proxy.test; smime=pass\r\n\r\n", kindForged},
		{"Authentication-Results: other.test; smime=pass\r\n\r\n", kindPlain},
		{"\r\n", kindPlain},
		{"not a header\r\n\r\n", kindPlain},
	} {
		if got := classifyHeader([]byte(tc.header), "proxy.test"); got != tc.want {
			t.Errorf("classifyHeader(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// TestAuthResultsHeaderProtection: the comment says the header was
// protected, encrypted or not, and names only the values RFC 9788 and the
// older scheme define.
func TestAuthResultsHeaderProtection(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    smime.Opened
		want string
	}{
		{"encrypted", smime.Opened{Encrypted: true, Decrypted: true, HeaderProtection: "cipher"},
			"proxy.test; smime=none (encrypted; header protected, hp=cipher)"},
		{"signed only", smime.Opened{HeaderProtection: "clear"}, "proxy.test; smime=none (header protected, hp=clear)"},
		{"older scheme", smime.Opened{HeaderProtection: "v1"}, "proxy.test; smime=none (header protected, protected-headers=v1)"},
		{"none", smime.Opened{}, "proxy.test; smime=none"},
		{"not decrypted", smime.Opened{Encrypted: true}, "proxy.test; smime=none reason=\"not decrypted\" (encrypted; not decrypted)"},
	} {
		if got := authResults("proxy.test", &tc.o, nil, ""); got != tc.want {
			t.Errorf("authResults(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
