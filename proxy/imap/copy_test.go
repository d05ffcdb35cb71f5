package imap_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smimeproxy/config"
	"smimeproxy/internal/lab"
)

// storedIn waits for the message holding marker in u's mailbox folder
// (Maildir++: ".Sent" for Sent) and returns it as Dovecot stored it.
func storedIn(t *testing.T, l *lab.Lab, u lab.User, folder, marker string) []byte {
	t.Helper()
	dir := filepath.Join(l.Maildir(u.Address), "."+folder)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && bytes.Contains(b, []byte(marker)) {
					return b
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no message with %q in %s", marker, dir)
	return nil
}

func uniq(t *testing.T) string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TestProtectedCopies: a client's plain copy of what it sent, APPENDed to
// Sent, is stored signed and encrypted to the user, a draft encrypted; the
// client gets the upstream's APPENDUID and reads back the bytes it
// appended. A copy the client protected itself, and a message APPENDed
// anywhere else, are stored as they came.
func TestProtectedCopies(t *testing.T) {
	e, p := newSMIMEEnv(t)
	alice := e.lab.User(t, "alice")
	c := e.dialProxy(t, alice)
	for _, tc := range []struct {
		folder, secret string
		want           []string // in what Dovecot stores
		signed         bool
	}{
		{"Sent", "sent-" + uniq(t), []string{"application/pkcs7-mime"}, true},
		{"Drafts", "draft-" + uniq(t), []string{"application/pkcs7-mime"}, false},
	} {
		msg := plainMsg("copy "+tc.secret, "the body says "+tc.secret)
		got := c.cmd("a APPEND "+tc.folder+` (\Seen) `+lit(msg), "")
		mustMatch(t, tc.folder, got, `^a OK \[APPENDUID \d+ \d+\]`)
		stored := storedIn(t, e.lab, alice, tc.folder, "copy "+tc.secret)
		if bytes.Contains(stored, []byte("the body says")) || !bytes.Contains(stored, []byte("application/pkcs7-mime")) {
			t.Errorf("%s holds\n%s", tc.folder, stored)
		}
		c.cmd("s SELECT "+tc.folder, "")
		back := c.cmd("f UID FETCH "+appendUID(t, got)+" (BODY.PEEK[])", "")
		body := literalOf(t, back, "BODY[]")
		field, rest, _ := strings.Cut(body, "\r\nFrom: ")
		if "From: "+rest != msg {
			t.Errorf("%s: read back\n%q\nwant the field then\n%q", tc.folder, body, msg)
		}
		if tc.signed && !strings.Contains(field, "smime=pass") {
			t.Errorf("%s: the copy is not signed by alice: %q", tc.folder, field)
		}
		if !tc.signed && strings.Contains(field, "smime=pass") {
			t.Errorf("%s: the draft is signed: %q", tc.folder, field)
		}
	}

	// The client's own S/MIME, and other mailboxes, as they came.
	own := signed(t, p.alice, plainMsg("own "+uniq(t), "signed by the client"))
	c.cmd("b APPEND Sent "+lit(own), `^b OK`)
	// Dovecot stores lines with LF.
	if stored := storedIn(t, e.lab, alice, "Sent", "signed by the client"); string(stored) != strings.ReplaceAll(own, "\r\n", "\n") {
		t.Errorf("the client's own signed copy was changed")
	}
	box := e.mailbox(t, "alice")
	other := plainMsg("other "+uniq(t), "stays plain")
	c.cmd("c APPEND "+box+" "+lit(other), `^c OK`)
	direct := dialDirect(t, e.lab, alice)
	direct.cmd("a EXAMINE "+box, "")
	if got := literalOf(t, direct.cmd("b FETCH 1 BODY.PEEK[]", ""), "BODY[]"); got != other {
		t.Errorf("an APPEND elsewhere was changed:\n%s", got)
	}
}

func appendUID(t *testing.T, got []string) string {
	t.Helper()
	f := strings.Fields(strings.SplitN(joined(got), "]", 2)[0])
	return f[len(f)-1]
}

// TestProtectedCopyRefused: when the copy cannot be protected and policy
// does not allow it in plain text, the APPEND fails and nothing is stored;
// a message over the size the proxy protects is refused before it is sent.
func TestProtectedCopyRefused(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.Policy.Encrypt = "required"
		c.IMAP.MaxMessageMB = 1
	}})
	alice := e.lab.User(t, "alice")
	c := e.dialProxy(t, alice)
	secret := "refused-" + uniq(t)
	got := c.cmd("a APPEND Drafts "+lit(plainMsg("copy "+secret, "x")), "")
	mustMatch(t, "no key", got, `^a NO \[UNAVAILABLE\] There is no certificate of yours`)
	c.write("b APPEND Sent {2000000}\r\n")
	mustMatch(t, "too large", c.expect(`^b `), `^b NO \[TOOBIG\]`)
	broken := "From: alice@example.test\r\nTo: carol@example.org\r\nno colon here\r\n\r\nbody " + secret + "\r\n"
	mustMatch(t, "broken", c.cmd("c APPEND Sent "+lit(broken), ""), `^c NO \[CANNOT\]`)
	mustMatch(t, "after", c.cmd("d NOOP", ""), `^d OK`)
	for _, folder := range []string{"Sent", "Drafts"} {
		files, _ := filepath.Glob(filepath.Join(e.lab.Maildir(alice.Address), "."+folder, "*", "*"))
		for _, f := range files {
			if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds a message whose APPEND was refused", folder)
			}
		}
	}
}
