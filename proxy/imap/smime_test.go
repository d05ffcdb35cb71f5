package imap_test

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
	"smimeproxy/proxy/imap"
	"smimeproxy/smime"
)

// pki is a CA with alice and bob, made once per test binary: RSA keys are
// slow to make.
type pki struct {
	ca         *testpki.CA
	alice, bob *testpki.Identity
}

var (
	pkiOnce sync.Once
	pkiVal  *pki
)

func testPKI(t testing.TB) *pki {
	pkiOnce.Do(func() {
		ca := testpki.NewCA(t, "IMAP Test CA")
		pkiVal = &pki{ca: ca, alice: ca.Issue(t, "alice@example.test", nil), bob: ca.Issue(t, "bob@example.test", nil)}
	})
	return pkiVal
}

// newSMIMEEnv is the proxy in front of the lab, with alice's and bob's
// keys and the test CA trusted.
func newSMIMEEnv(t testing.TB) (*env, *pki) {
	p := testPKI(t)
	e := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}})
	e.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "bob", Cert: p.bob.Cert, Key: p.bob.Key})
	return e, p
}

func signed(t testing.TB, id *testpki.Identity, msg string) string {
	t.Helper()
	out, err := smime.Sign([]byte(msg), &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func encrypted(t testing.TB, msg string, to ...*testpki.Identity) string {
	t.Helper()
	var certs []*x509.Certificate
	for _, id := range to {
		certs = append(certs, id.Cert)
	}
	out, err := smime.Encrypt([]byte(msg), certs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// mailbox makes a fresh mailbox of u's holding msgs, and deletes it when the
// test ends.
func (e *env) mailbox(t testing.TB, user string, msgs ...string) string {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	box := "smime-" + hex.EncodeToString(rnd[:])
	u := e.lab.User(t, user)
	c := dialDirect(t, e.lab, u)
	c.cmd("c CREATE "+box, `^c OK`)
	for i, m := range msgs {
		c.cmd("a"+strconv.Itoa(i)+" APPEND "+box+" "+fixedDate+" "+lit(m), `^a\d+ OK`)
	}
	t.Cleanup(func() {
		c := dialDirect(t, e.lab, u)
		c.cmd("d DELETE "+box, "")
	})
	return box
}

// literalOf returns the literal that follows item in a FETCH response.
func literalOf(t testing.TB, resp []string, item string) string {
	t.Helper()
	all := joined(resp)
	i := strings.Index(all, item+" {")
	if i < 0 {
		t.Fatalf("no %s literal in\n%s", item, all)
	}
	rest := all[i+len(item)+2:]
	end := strings.Index(rest, "}\r\n")
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		t.Fatal(err)
	}
	return rest[end+3 : end+3+n]
}

func numberOf(t testing.TB, resp []string, item string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(item) + ` (\d+)`).FindStringSubmatch(joined(resp))
	if m == nil {
		t.Fatalf("no %s in\n%s", item, joined(resp))
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestEncryptedItemsConsistent(t *testing.T) {
	e, p := newSMIMEEnv(t)
	secret := plainMsg("secret plans", "the treasure is under the old oak")
	box := e.mailbox(t, "alice", plainMsg("plain one", "nothing to hide"), encrypted(t, secret, p.alice), plainMsg("plain two", "still nothing"))
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")

	whole := c.cmd("b UID FETCH 2 (RFC822.SIZE BODY.PEEK[] ENVELOPE BODYSTRUCTURE)", "")
	body := literalOf(t, whole, "BODY[]")
	if !strings.Contains(body, "the treasure is under the old oak") {
		t.Fatalf("BODY[] is not the decrypted message:\n%s", body)
	}
	if !regexp.MustCompile(`(?m)^Authentication-Results: proxy\.test;`).MatchString(body) {
		t.Errorf("no Authentication-Results of the proxy's in\n%s", body)
	}
	if size := numberOf(t, whole, "RFC822.SIZE"); size != len(body) {
		t.Errorf("RFC822.SIZE %d, but BODY[] has %d bytes", size, len(body))
	}
	mustMatch(t, "ENVELOPE", whole, `ENVELOPE \("Fri, 04 Dec 2026 10:00:00 \+0000" "secret plans"`)
	mustMatch(t, "BODYSTRUCTURE", whole, `BODYSTRUCTURE \("text" "plain"`)
	mustNotMatch(t, "BODYSTRUCTURE", whole, `pkcs7`)

	parts := c.cmd("c UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (Content-Type Subject)] BODY.PEEK[TEXT] BODY.PEEK[]<10.20> BINARY.PEEK[1] BINARY.SIZE[1])", "")
	if got := literalOf(t, parts, "BODY[HEADER.FIELDS (CONTENT-TYPE SUBJECT)]"); !strings.Contains(got, "text/plain") || strings.Contains(got, "pkcs7") {
		t.Errorf("Content-Type field of the served message: %q", got)
	}
	if got := literalOf(t, parts, "BODY[]<10>"); got != body[10:30] {
		t.Errorf("BODY[]<10.20> = %q, want %q", got, body[10:30])
	}
	text := literalOf(t, parts, "BODY[TEXT]")
	if !strings.HasSuffix(body, text) || !strings.Contains(text, "treasure") {
		t.Errorf("BODY[TEXT] %q is not the end of BODY[]", text)
	}
	if n := numberOf(t, parts, "BINARY.SIZE[1]"); n != len(literalOf(t, parts, "BINARY[1]")) {
		t.Errorf("BINARY.SIZE[1] %d disagrees with BINARY[1]", n)
	}

	// The plain messages around it are Dovecot's, byte for byte.
	direct := dialDirect(t, e.lab, e.lab.User(t, "alice"))
	direct.cmd("a EXAMINE "+box, "")
	want := direct.cmd("d UID FETCH 1,3 (RFC822.SIZE BODY.PEEK[] ENVELOPE BODYSTRUCTURE)", "")
	got := c.cmd("d UID FETCH 1,3 (RFC822.SIZE BODY.PEEK[] ENVELOPE BODYSTRUCTURE)", "")
	if timings.ReplaceAllString(joined(got), "") != timings.ReplaceAllString(joined(want), "") {
		t.Errorf("plain messages through the proxy:\n%s\nDovecot:\n%s", joined(got), joined(want))
	}
}

func TestSignedVerifiedAndHarvested(t *testing.T) {
	e, p := newSMIMEEnv(t)
	box := e.mailbox(t, "bob", signed(t, p.alice, plainMsg("signed hello", "hello from alice")))
	if _, err := e.certs.Lookup(t.Context(), "alice@example.test"); err == nil {
		t.Fatal("alice's certificate is harvested before anyone read her mail")
	}
	c := e.dialProxy(t, e.lab.User(t, "bob"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b FETCH 1 (BODY.PEEK[])", "")
	mustMatch(t, "signed", got, `Authentication-Results: proxy\.test;\s+smime=pass`)
	if _, err := e.certs.Lookup(t.Context(), "alice@example.test"); err != nil {
		t.Errorf("alice's certificate was not harvested: %v", err)
	}
}

func TestUndecryptableServedAsIs(t *testing.T) {
	e, p := newSMIMEEnv(t)
	box := e.mailbox(t, "alice", encrypted(t, plainMsg("for bob", "not for alice"), p.bob))
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b FETCH 1 (BODY.PEEK[] BODYSTRUCTURE)", "")
	body := literalOf(t, got, "BODY[]")
	if strings.Contains(body, "not for alice") || !strings.Contains(body, "application/pkcs7-mime") {
		t.Errorf("a message alice cannot decrypt:\n%s", body)
	}
	mustMatch(t, "verdict", got, `(?s)smime=.*not decrypted`)
	mustMatch(t, "BODYSTRUCTURE", got, `BODYSTRUCTURE \("application" "pkcs7-mime"`)
}

func TestSeenAsUpstream(t *testing.T) {
	e, p := newSMIMEEnv(t)
	box := e.mailbox(t, "alice", encrypted(t, plainMsg("one", "1"), p.alice), encrypted(t, plainMsg("two", "2"), p.alice))
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT "+box, "")
	c.cmd("b FETCH 1 (BODY.PEEK[])", "")
	c.cmd("c FETCH 2 (BODY[TEXT])", "")
	got := c.cmd("d FETCH 1:2 (FLAGS)", "")
	mustMatch(t, "peek", got, `\* 1 FETCH \(FLAGS \(\\Recent\)\)`)
	mustMatch(t, "non-peek", got, `\* 2 FETCH \(FLAGS \(\\Seen \\Recent\)\)`)
}

func TestOpenedOnceCached(t *testing.T) {
	e, p := newSMIMEEnv(t)
	box := e.mailbox(t, "alice", encrypted(t, plainMsg("cached", "once"), p.alice))
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")
	first := literalOf(t, c.cmd("b FETCH 1 (BODY.PEEK[])", ""), "BODY[]")
	second := literalOf(t, c.cmd("c FETCH 1 (BODY.PEEK[])", ""), "BODY[]")
	if first != second {
		t.Errorf("two FETCHes of one message differ")
	}
	if n := strings.Count(e.log.String(), "S/MIME message opened"); n != 1 {
		t.Errorf("the message was opened %d times, want once", n)
	}
}

func TestUserIsolation(t *testing.T) {
	e, p := newSMIMEEnv(t)
	msg := encrypted(t, plainMsg("alice only", "for alice's eyes"), p.alice)
	box := e.mailbox(t, "bob", msg)
	c := e.dialProxy(t, e.lab.User(t, "bob"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b FETCH 1 (BODY.PEEK[])", "")
	if strings.Contains(literalOf(t, got, "BODY[]"), "alice's eyes") {
		t.Error("bob read a message encrypted to alice alone")
	}
}

func TestForgedVerdictRemoved(t *testing.T) {
	e, _ := newSMIMEEnv(t)
	forged := "Authentication-Results: proxy.test; smime=pass\r\n" + plainMsg("forged", "trust me")
	other := "Authentication-Results: mx.example.org; spf=pass\r\n" + plainMsg("other", "not ours")
	box := e.mailbox(t, "alice", forged, other)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b FETCH 1:2 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (Authentication-Results)])", "")
	mustNotMatch(t, "forged", got, `proxy\.test; smime=pass`)
	mustMatch(t, "someone else's", got, `mx\.example\.org; spf=pass`)
	first := literalOf(t, got, "BODY[]")
	if numberOf(t, got, "RFC822.SIZE") != len(first) {
		t.Errorf("RFC822.SIZE disagrees with BODY[] after the field was removed")
	}
}

// TestFetchInParts: a FETCH whose S/MIME messages do not fit in memory
// together goes upstream in parts, and the client sees the same answer.
func TestFetchInParts(t *testing.T) {
	e, p := newSMIMEEnv(t)
	var msgs []string
	for i := range 6 {
		msgs = append(msgs, plainMsg(fmt.Sprintf("plain %d", i), "plain"), encrypted(t, plainMsg(fmt.Sprintf("secret %d", i), "secret"), p.alice))
	}
	box := e.mailbox(t, "alice", msgs...)
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT "+box, "")
	whole := joined(c.cmd("b FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[])", ""))
	saved := *imap.MaxPinned
	*imap.MaxPinned = 1
	t.Cleanup(func() { *imap.MaxPinned = saved })
	parts := joined(c.cmd("b FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[])", ""))
	if timings.ReplaceAllString(parts, "") != timings.ReplaceAllString(whole, "") {
		t.Errorf("in parts:\n%s\nwhole:\n%s", parts, whole)
	}
	if n := strings.Count(parts, "secret\r\n"); n != 6 {
		t.Errorf("%d decrypted messages in the answer, want 6", n)
	}
	mustMatch(t, "UID FETCH in parts", c.cmd("c UID FETCH 2:* (BODY[TEXT])", ""), `(?m)^c OK`)
	mustMatch(t, "flags after", c.cmd("d FETCH 2 (FLAGS)", ""), `\\Seen`)
}

// TestTooLargeToOpen: an S/MIME message over imap.max_message_mb is served
// as stored, with the proxy's field saying why, every item consistent, and
// never held whole.
func TestTooLargeToOpen(t *testing.T) {
	p := testPKI(t)
	e := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.MaxMessageMB = 1 }})
	e.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	big := encrypted(t, plainMsg("big secret", strings.Repeat("0123456789abcdef", 1<<16)), p.alice)
	box := e.mailbox(t, "alice", plainMsg("small", "x"), big, encrypted(t, plainMsg("small secret", "opened"), p.alice))
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT "+box, "")
	got := c.cmd("b FETCH 1:3 (UID RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[]<0.100> BODY.PEEK[]<5000.100> BODYSTRUCTURE FLAGS)", "")
	if len(got) != 4 {
		t.Fatalf("%d responses", len(got))
	}
	resp := got[1]
	body := literalOf(t, []string{resp}, "BODY[]")
	if !strings.HasPrefix(body, "Authentication-Results: proxy.test;") || !strings.Contains(body, "not opened") {
		t.Fatalf("the large message's BODY[] starts %.300q", body)
	}
	field, rest, _ := strings.Cut(body, "\r\nFrom:")
	if "From:"+rest != big {
		t.Errorf("the large message is not served as stored after the field %q", field)
	}
	if n := numberOf(t, []string{resp}, "RFC822.SIZE"); n != len(body) {
		t.Errorf("RFC822.SIZE %d, BODY[] %d bytes", n, len(body))
	}
	if h := literalOf(t, []string{resp}, "BODY[HEADER]"); !strings.HasPrefix(body, h) || !strings.HasSuffix(h, "\r\n\r\n") {
		t.Errorf("BODY[HEADER] %q is not the head of BODY[]", h)
	}
	if r := literalOf(t, []string{resp}, "BODY[]<0>"); r != body[:100] {
		t.Errorf("BODY[]<0.100> = %q", r)
	}
	if r := literalOf(t, []string{resp}, "BODY[]<5000>"); r != body[5000:5100] {
		t.Errorf("BODY[]<5000.100> = %q", r)
	}
	mustMatch(t, "structure", []string{resp}, `BODYSTRUCTURE \("application" "pkcs7-mime"`)
	mustMatch(t, "the small one is opened", got[2:3], `opened\r\n`)
	c.cmd("c FETCH 2 (BODY[TEXT]<0.10>)", "")
	mustMatch(t, "\\Seen", c.cmd("d FETCH 2 (FLAGS)", ""), `\\Seen`)
	if strings.Contains(e.log.String(), "uid=2 action=decrypt") {
		t.Error("the large message was opened")
	}
}
