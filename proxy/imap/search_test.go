package imap_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

// msgWith is a plain message with a subject, a body and a From of its own.
func msgWith(from, subject, body string) string {
	return strings.Replace(plainMsg(subject, body), "From: Alice <alice@example.test>", "From: "+from, 1)
}

func opaqueSigned(t testing.TB, id *testpki.Identity, msg string) string {
	t.Helper()
	out, err := smime.Sign([]byte(msg), &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, &smime.SignOptions{Opaque: true})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// shiftedMailbox is e.mailbox with a first message expunged, so that
// sequence numbers and UIDs differ by one: msgs[i] has sequence number i+1
// and UID i+2.
func (e *env) shiftedMailbox(t testing.TB, user string, msgs ...string) string {
	t.Helper()
	box := e.mailbox(t, user, append([]string{plainMsg("gone", "expunged")}, msgs...)...)
	c := dialDirect(t, e.lab, e.lab.User(t, user))
	c.cmd("s SELECT "+box, "")
	c.cmd("d STORE 1 +FLAGS.SILENT (\\Deleted)", "")
	c.cmd("x EXPUNGE", `^x OK`)
	return box
}

// untaggedOf is the one untagged response of a command's answer that
// starts with prefix, without its line break.
func untaggedOf(t testing.TB, resp []string, prefix string) string {
	t.Helper()
	var found []string
	for _, r := range resp {
		if strings.HasPrefix(r, prefix) {
			found = append(found, strings.TrimSuffix(r, "\r\n"))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d responses starting %q in\n%s", len(found), prefix, joined(resp))
	}
	return found[0]
}

// mixed is a mailbox of alice's with plain and S/MIME messages, as
// sequence number: UID, what:
//
//	1: 2 plain, "garden", about an oak
//	2: 3 encrypted to alice, "secret plans", the treasure under the oak, café crème; \Flagged
//	3: 4 plain, "treasure map"
//	4: 5 opaque signed by bob, "signed note", the lighthouse
//	5: 6 encrypted to bob alone, "for bob", the lighthouse keeper
func mixed(t *testing.T) (*env, string) {
	e, p := newSMIMEEnv(t)
	box := e.shiftedMailbox(t, "alice",
		msgWith("Alice <alice@example.test>", "garden", "we planted an oak tree"),
		encrypted(t, msgWith("Carol <carol@example.org>", "secret plans", "the treasure is under the old oak\r\nCafé CRÈME"), p.alice),
		msgWith("Dave <dave@example.net>", "treasure map", "a treasure map for sale"),
		opaqueSigned(t, p.bob, msgWith("Bob <bob@example.test>", "signed note", "meet me at the lighthouse")),
		encrypted(t, msgWith("Carol <carol@example.org>", "for bob", "the lighthouse keeper"), p.bob),
	)
	c := dialDirect(t, e.lab, e.lab.User(t, "alice"))
	c.cmd("s SELECT "+box, "")
	c.cmd("f STORE 2 +FLAGS.SILENT (\\Flagged)", "")
	return e, box
}

// TestSearchInsideEncrypted: a word that is only inside an encrypted or
// opaque signed body is found through the proxy, and not by Dovecot.
func TestSearchInsideEncrypted(t *testing.T) {
	e, box := mixed(t)
	alice := e.lab.User(t, "alice")
	direct := dialDirect(t, e.lab, alice)
	direct.cmd("a EXAMINE "+box, "")
	c := e.dialProxy(t, alice)
	c.cmd("a EXAMINE "+box, "")
	for _, tc := range []struct{ cmd, proxy, direct string }{
		{"SEARCH BODY oak", "* SEARCH 1 2", "* SEARCH 1"},
		{"SEARCH BODY lighthouse", "* SEARCH 4", "* SEARCH"},
		{"UID SEARCH BODY oak", "* SEARCH 2 3", "* SEARCH 2"},
		{"UID SEARCH TEXT treasure", "* SEARCH 3 4", "* SEARCH 4"},
	} {
		if got := untaggedOf(t, c.cmd("b "+tc.cmd, ""), "* SEARCH"); got != tc.proxy {
			t.Errorf("through the proxy, %s: %q, want %q", tc.cmd, got, tc.proxy)
		}
		if got := untaggedOf(t, direct.cmd("b "+tc.cmd, ""), "* SEARCH"); got != tc.direct {
			t.Errorf("at Dovecot, %s: %q, want %q", tc.cmd, got, tc.direct)
		}
	}
}

// protectedSubject is an S/MIME message whose real Subject is only in its
// encrypted (or opaque signed) part, under header protection (RFC 9788):
// the outer Subject is "[...]".
func protectedSubject(t testing.TB, p *pki, subject, body string, sign bool) string {
	t.Helper()
	from := "Carol <carol@example.org>"
	if sign {
		from = "Bob <bob@example.test>"
	}
	inner := "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\nSubject: " + subject +
		"\r\nFrom: " + from + "\r\nTo: alice@example.test\r\n\r\n" + body + "\r\n"
	var (
		der      []byte
		err      error
		smimeTyp = "enveloped-data"
	)
	if sign {
		der, err = cms.Sign([]byte(inner), p.bob.Cert, p.bob.Key, nil)
		smimeTyp = "signed-data"
	} else {
		der, err = cms.Encrypt([]byte(inner), []*x509.Certificate{p.alice.Cert}, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return "From: " + from + "\r\nTo: alice@example.test\r\nSubject: [...]\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n" +
		"Message-ID: <" + fmt.Sprint(len(body), subject[:3]) + "@example.org>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=" + smimeTyp + "; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(der) + "\r\n"
}

// TestSearchProtectedSubject: a Subject that is only inside an encrypted
// or opaque signed message is found through the proxy.
func TestSearchProtectedSubject(t *testing.T) {
	e, p := newSMIMEEnv(t)
	sealed := protectedSubject(t, p, "Quarterly numbers", "revenue is up", false)
	o, err := smime.Open([]byte(sealed), &smime.OpenOptions{Keys: []smime.KeyPair{{Cert: p.alice.Cert, Key: p.alice.Key}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(o.Message), "Subject: Quarterly numbers") {
		t.Fatalf("smime.Open does not serve the protected Subject:\n%s", o.Message)
	}
	box := e.mailbox(t, "alice",
		plainMsg("quarterly plans", "plain"),
		sealed,
		protectedSubject(t, p, "Quarterly review", "signed, not sealed", true),
	)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")
	mustMatch(t, "served Subject", c.cmd("b FETCH 2:3 (ENVELOPE)", ""), `"Quarterly numbers"`)
	if got := untaggedOf(t, c.cmd("c SEARCH SUBJECT quarterly", ""), "* SEARCH"); got != "* SEARCH 1 2 3" {
		t.Errorf("SEARCH SUBJECT quarterly: %q, want 1 2 3", got)
	}
	if got := untaggedOf(t, c.cmd("d SEARCH SUBJECT \"[...]\"", ""), "* SEARCH"); got != "* SEARCH" {
		t.Errorf("the outer Subject was searched: %q", got)
	}
	direct := dialDirect(t, e.lab, e.lab.User(t, "alice"))
	direct.cmd("a EXAMINE "+box, "")
	if got := untaggedOf(t, direct.cmd("c SEARCH SUBJECT quarterly", ""), "* SEARCH"); got != "* SEARCH 1" {
		t.Errorf("at Dovecot, SEARCH SUBJECT quarterly: %q, want 1", got)
	}
}

// TestSearchMixed: the merged answers of every form of SEARCH and SORT in
// a mailbox of plain and S/MIME messages.
func TestSearchMixed(t *testing.T) {
	e, box := mixed(t)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT "+box, "")
	for _, tc := range []struct{ cmd, want string }{
		{"SEARCH TEXT treasure", "* SEARCH 2 3"},
		{"SEARCH FLAGGED BODY oak", "* SEARCH 2"},
		{"SEARCH UNFLAGGED BODY oak", "* SEARCH 1"},
		{"SEARCH NOT BODY oak", "* SEARCH 3 4 5"},
		{"SEARCH OR BODY lighthouse FLAGGED", "* SEARCH 2 4"},
		{"SEARCH OR BODY treasure SUBJECT garden", "* SEARCH 1 2 3"},
		{"SEARCH NOT (OR BODY oak BODY lighthouse)", "* SEARCH 3 5"},
		{"SEARCH (FROM carol NOT FLAGGED) OR BODY keeper BODY oak", "* SEARCH"},
		{"SEARCH FROM carol OR BODY keeper BODY oak", "* SEARCH 2"},
		{"SEARCH 2:4 BODY oak", "* SEARCH 2"},
		{"SEARCH UID 2:3 NOT BODY treasure", "* SEARCH 1"},
		{"SEARCH CHARSET UTF-8 BODY " + lit("crème"), "* SEARCH 2"},
		{"SEARCH CHARSET ISO-8859-1 BODY " + lit("CR\xc8ME"), "* SEARCH 2"},
		{"SEARCH HEADER Content-Type pkcs7", "* SEARCH 5"},
		{"SEARCH FUZZY BODY oak", "* SEARCH 1 2"},
		{"UID SEARCH OR BODY lighthouse FLAGGED", "* SEARCH 3 5"},
		{"UID SEARCH SINCE 1-Jan-2000 BODY oak", "* SEARCH 2 3"},
		{"UID SEARCH LARGER 100000 BODY oak", "* SEARCH"},
		{"UID SEARCH RETURN (MIN MAX COUNT ALL) BODY oak", `* ESEARCH (TAG "b") UID MIN 2 MAX 3 ALL 2:3 COUNT 2`},
		{"SEARCH RETURN (COUNT) TEXT treasure", `* ESEARCH (TAG "b") COUNT 2`},
		{"SEARCH RETURN () BODY lighthouse", `* ESEARCH (TAG "b") ALL 4`},
		{"SORT (REVERSE SUBJECT) UTF-8 BODY oak", "* SORT 2 1"},
		{"UID SORT (ARRIVAL) UTF-8 TEXT treasure", "* SORT 3 4"},
		{"UID SORT RETURN (COUNT MAX) (DATE) UTF-8 BODY lighthouse", `* ESEARCH (TAG "b") UID MAX 5 COUNT 1`},
	} {
		resp := c.cmd("b "+tc.cmd, "")
		prefix, _, _ := strings.Cut(tc.want[2:], " ")
		prefix = "* " + prefix
		if got := untaggedOf(t, resp, prefix); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.cmd, got, tc.want)
		}
		mustMatch(t, tc.cmd, resp, `(?m)^b OK`)
	}

	// SAVE keeps the merged answer for $.
	c.cmd("s SEARCH RETURN (SAVE) BODY lighthouse", "")
	if got := untaggedOf(t, c.cmd("f FETCH $ (UID)", ""), "* "); got != "* 4 FETCH (UID 5)" {
		t.Errorf("FETCH $ after SAVE: %q, want message 4", got)
	}
	if got := untaggedOf(t, c.cmd("g UID SEARCH $ BODY lighthouse", ""), "* SEARCH"); got != "* SEARCH 5" {
		t.Errorf("UID SEARCH $ BODY lighthouse: %q", got)
	}
}

// TestSearchBadInput: a search key over the limits gets BAD, and the
// session goes on.
func TestSearchBadInput(t *testing.T) {
	e, box := mixed(t)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT "+box, "")
	huge := strings.Repeat("x", 100<<10)
	c.write(fmt.Sprintf("b SEARCH BODY {%d}\r\n", len(huge)))
	mustMatch(t, "a synchronising literal over the limit", c.expect(`^b `), `^b BAD \[TOOBIG\]`)
	c.write(fmt.Sprintf("c SEARCH BODY {%d+}\r\n%s\r\n", len(huge), huge))
	mustMatch(t, "a LITERAL+ literal over the limit", c.expect(`^c `), `^c BAD \[TOOBIG\]`)
	c.write(fmt.Sprintf("d SEARCH OR BODY {3+}\r\nabc BODY {%d+}\r\n%s TEXT {2+}\r\nxy\r\n", len(huge), huge))
	mustMatch(t, "a second literal over the limit", c.expect(`^d `), `^d BAD \[TOOBIG\]`)
	mustMatch(t, "RETURN (UPDATE)", c.cmd("e SEARCH RETURN (UPDATE) BODY oak", ""), `^e BAD`)
	mustMatch(t, "unknown key", c.cmd("f SEARCH XYZZY BODY oak", ""), `^f BAD`)
	mustMatch(t, "the session after", c.cmd("g SEARCH BODY lighthouse", ""), `(?s)\* SEARCH 4\r\ng OK`)
}

// TestSearchBound: a search over more S/MIME messages than
// imap.search.max_messages looks inside the newest, says so, and leaves
// the others to the upstream.
func TestSearchBound(t *testing.T) {
	p := testPKI(t)
	e := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.Search.MaxMessages = 2 }})
	e.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	var msgs []string
	for i := range 4 {
		msgs = append(msgs, encrypted(t, plainMsg(fmt.Sprintf("secret %d", i), "the needle is here"), p.alice))
	}
	box := e.mailbox(t, "alice", msgs...)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b SEARCH BODY needle", "")
	mustMatch(t, "the alert", got, `(?m)^\* OK \[ALERT\] Search incomplete: 2 encrypted messages were searched only as stored`)
	if s := untaggedOf(t, got, "* SEARCH"); s != "* SEARCH 3 4" {
		t.Errorf("SEARCH BODY needle over the bound: %q, want the newest two", s)
	}
	if n := strings.Count(e.log.String(), "S/MIME message opened"); n != 2 {
		t.Errorf("%d messages opened, want 2", n)
	}
	within := c.cmd("c SEARCH 1:2 SUBJECT secret BODY needle", "")
	mustMatch(t, "within the bound", within, `(?s)\* SEARCH 1 2\r\nc OK`)
	mustNotMatch(t, "within the bound", within, `ALERT`)

	// A time already up leaves every message to the upstream.
	late := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.Search.Timeout = 1 }})
	late.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	lc := late.dialProxy(t, late.lab.User(t, "alice"))
	lc.cmd("a EXAMINE "+box, "")
	got = lc.cmd("b SEARCH BODY needle", "")
	mustMatch(t, "the alert", got, `(?m)^\* OK \[ALERT\] Search incomplete: 4 encrypted messages .* for at most 1ns per search`)
	if s := untaggedOf(t, got, "* SEARCH"); s != "* SEARCH" {
		t.Errorf("SEARCH BODY needle out of time: %q, want Dovecot's answer", s)
	}
}

// TestSearchProtectedDraft: a draft the proxy stored encrypted is found by
// its words through the proxy, as it was before it was protected.
func TestSearchProtectedDraft(t *testing.T) {
	e, _ := newSMIMEEnv(t)
	alice := e.lab.User(t, "alice")
	c := e.dialProxy(t, alice)
	id, secret := uniq(t), "plan-"+uniq(t)
	got := c.cmd("a APPEND Drafts "+lit(plainMsg("draft "+id, "the plan is "+secret)), "")
	mustMatch(t, "APPEND", got, `^a OK \[APPENDUID \d+ \d+\]`)
	uid := appendUID(t, got)
	t.Cleanup(func() {
		c := dialDirect(t, e.lab, alice)
		c.cmd("s SELECT Drafts", "")
		c.cmd("d UID STORE "+uid+" +FLAGS.SILENT (\\Deleted)", "")
		c.cmd("x UID EXPUNGE "+uid, "")
	})
	if stored := storedIn(t, e.lab, alice, "Drafts", "<draft."+id+"@example.test>"); bytes.Contains(stored, []byte(secret)) {
		t.Fatal("the draft is stored in plain text")
	}
	c.cmd("s SELECT Drafts", "")
	if s := untaggedOf(t, c.cmd("b UID SEARCH BODY "+secret, ""), "* SEARCH"); s != "* SEARCH "+uid {
		t.Errorf("UID SEARCH BODY in Drafts through the proxy: %q, want UID %s", s, uid)
	}
	direct := dialDirect(t, e.lab, alice)
	direct.cmd("s EXAMINE Drafts", "")
	if s := untaggedOf(t, direct.cmd("b UID SEARCH BODY "+secret, ""), "* SEARCH"); s != "* SEARCH" {
		t.Errorf("UID SEARCH BODY in Drafts at Dovecot: %q, want nothing", s)
	}
}
