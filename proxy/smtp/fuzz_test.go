package smtp

import (
	"bufio"
	"bytes"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/policy"
	"smimeproxy/smime"
)

// The fuzz tests cover what the proxy itself parses of client input: the
// SASL responses, the OAuth user, and the header edit that strips
// overrides and re-encodes the Subject.

func FuzzLoginServer(f *testing.F) {
	f.Add([]byte(nil), []byte("alice"), []byte("pw"), false)
	f.Add([]byte("alice"), []byte("pw"), []byte("more"), true)
	f.Add([]byte{}, []byte{0}, []byte("pw\x00"), true)
	f.Fuzz(func(t *testing.T, r1, r2, r3 []byte, ir bool) {
		var user, pass string
		calls := 0
		l := &loginServer{auth: func(_, u, p string) error { user, pass = u, p; calls++; return nil }}
		if !ir {
			r1 = nil
		}
		for _, r := range [][]byte{r1, r2, r3} {
			if _, done, _ := l.Next(r); done {
				break
			}
		}
		if calls > 1 {
			t.Fatalf("auth called %d times", calls)
		}
		if calls == 1 && (user == "" || !utf8.ValidString(user) || strings.ContainsRune(user, 0) || strings.ContainsRune(pass, 0)) {
			t.Fatalf("auth called with user %q, password %q", user, pass)
		}
	})
}

func FuzzPlainServer(f *testing.F) {
	f.Add([]byte("\x00alice\x00pw"))
	f.Add([]byte("admin\x00alice\x00pw"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		calls := 0
		p := &plainServer{auth: func(id, u, pw string) error {
			calls++
			if u == "" || !utf8.ValidString(u) || strings.ContainsRune(u+id+pw, 0) {
				t.Fatalf("auth called with %q, %q, %q", id, u, pw)
			}
			return nil
		}}
		_, done, _ := p.Next(resp)
		if !done || calls > 1 {
			t.Fatalf("PLAIN(%q): done %v after %d calls", resp, done, calls)
		}
	})
}

func FuzzTokenLogin(f *testing.F) {
	f.Add(true, []byte("n,a=alice@example.com,\x01auth=Bearer x\x01\x01"))
	f.Add(true, []byte("y,a=a=2Cb=3Dc,\x01"))
	f.Add(false, []byte("user=alice@example.com\x01auth=Bearer x\x01\x01"))
	f.Fuzz(func(t *testing.T, bearer bool, resp []byte) {
		mech := mechXOAuth2
		if bearer {
			mech = mechOAuthBearer
		}
		login, ok := tokenLogin(mech, resp)
		if ok && (login == "" || !utf8.ValidString(login) || strings.ContainsAny(login, "\x00\x01")) {
			t.Fatalf("tokenLogin(%s, %q) = %q", mech, resp, login)
		}
	})
}

// FuzzEditHeader: the edited header has no Bcc or override field, one
// Subject at most, the same body, and a Subject that decodes to what the
// tags left of the original (or, when that would join text into an encoded
// word of a subject that cannot be decoded, the original Subject).
func FuzzEditHeader(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "smime", "testdata", "*.eml"))
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"Subject: [encrypt] Contract\r\nBcc: x@example.org\r\nX-SMIME-Policy: sign\r\n\r\nbody\r\n",
		"Subject: =?utf-8?q?=5Bnosign=5D_Gr=C3=BC=C3=9Fe?=\r\n\r\n",
		"Subject: =?utf-8?b?W3BsYWluXSDwn5iA?= [sign]\r\n =?iso-8859-1?q?caf=E9?=\r\n\r\n",
		"Subject: [sign] =?x-unknown?q?abc?=\r\nSubject: second\r\n\r\n",
		"Subject: [plain] a =?b\r\n\r\n",
		"Subject: [encrypt]\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
		if err != nil {
			return
		}
		subject, decoded := decodeSubject(h.Get("Subject"))
		_, stripped := policy.ParseOverride(subject, "")
		_, out, err := editHeader(msg, h, true)
		if err != nil {
			return
		}
		oh, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("the edited header cannot be read: %v\n%q", err, out)
		}
		if oh.Has("Bcc") || oh.Has(policy.OverrideHeader) {
			t.Fatalf("Bcc or %s left in %q", policy.OverrideHeader, out)
		}
		if !bytes.Equal(body(msg), body(out)) {
			t.Fatalf("the body changed:\n%q\n%q", msg, out)
		}
		if stripped == subject {
			return
		}
		if n := len(oh.Values("Subject")); n != 1 {
			t.Fatalf("%d Subject fields in %q", n, out)
		}
		got, want := oh.Get("Subject"), strings.Join(strings.Fields(stripped), " ")
		if !decoded && !sameWordMarkers(subject, stripped) {
			want = h.Get("Subject") // taking the tag out would make an encoded word
		}
		if decoded || strings.ContainsAny(stripped, "\r\n\x00") {
			if needsEncoding(stripped) {
				want = stripped
			}
			got, err = new(mime.WordDecoder).DecodeHeader(got)
		}
		if err != nil || got != want {
			t.Fatalf("Subject %q comes out as %q (%v), want %q", oh.Get("Subject"), got, err, want)
		}
	})
}

// body is what follows the header fields of msg.
func body(msg []byte) []byte {
	n := 0
	_, _ = smime.EditHeader(msg, func(_ string, raw []byte) []byte { n += len(raw); return raw })
	return msg[n:]
}
