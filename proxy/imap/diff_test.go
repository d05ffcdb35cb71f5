package imap_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"smimeproxy/internal/lab"
)

// The differential tests run the same scripted sessions against the lab's
// Dovecot directly and through the proxy, each run on fresh mailboxes with
// the same messages, and compare what the client received. Only what must
// differ is normalised: the mailboxes' names and UIDVALIDITY, and the
// timings Dovecot writes in its tagged responses.

// fixture is a message put in the mailbox before a script runs.
type fixture struct {
	flags string // e.g. `(\Seen)`; "" for none
	msg   string
}

// step is one move of a script: a command (or, without one, only a wait)
// on one of its sessions.
type step struct {
	s     int    // session
	cmd   string // sent as is once {box}, {box2} and {uidvalidity} are replaced
	until string // a regexp the last response to read matches; default: the command's tagged response
}

type script struct {
	name     string
	sessions int
	fixtures []fixture
	steps    []step
}

// fixedDate gives every fixture the same INTERNALDATE in both runs.
const fixedDate = `"04-Dec-2026 10:00:00 +0000"`

func plainMsg(subject, body string) string {
	return "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: " + subject +
		"\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") +
		"@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body + "\r\n"
}

// runDiff runs sc against Dovecot and through the proxy and compares the
// transcripts.
func runDiff(t *testing.T, e *env, sc script) {
	t.Helper()
	u := e.lab.User(t, "alice")
	direct := runScript(t, e.lab, u, sc, func() *client { return dialDirect(t, e.lab, u) })
	proxied := runScript(t, e.lab, u, sc, func() *client { return e.dialProxy(t, u) })
	for i := range direct {
		if direct[i] != proxied[i] {
			t.Errorf("%s: session %d differs\n--- Dovecot:\n%s\n--- through the proxy:\n%s\n--- first difference at: %s",
				sc.name, i, direct[i], proxied[i], firstDiff(direct[i], proxied[i]))
		}
	}
}

func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	start := max(0, i-60)
	return fmt.Sprintf("%q vs %q", a[start:min(len(a), i+60)], b[start:min(len(b), i+60)])
}

// runScript makes fresh mailboxes with the fixtures, runs the steps on
// sessions made by connect, and returns each session's normalised
// transcript.
func runScript(t *testing.T, l *lab.Lab, u lab.User, sc script, connect func() *client) []string {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	box := "diff-" + hex.EncodeToString(rnd[:])
	box2 := box + "-other"
	setup := dialDirect(t, l, u)
	setup.cmd("c1 CREATE "+box, "")
	setup.cmd("c2 CREATE "+box2, "")
	t.Cleanup(func() {
		c := dialDirect(t, l, u)
		c.cmd("d1 DELETE "+box, "")
		c.cmd("d2 DELETE "+box2, "")
	})
	for i, f := range sc.fixtures {
		flags := ""
		if f.flags != "" {
			flags = f.flags + " "
		}
		setup.cmd(fmt.Sprintf("a%d APPEND %s %s%s %s", i, box, flags, fixedDate, lit(f.msg)), "")
	}
	st := setup.cmd("s STATUS "+box+" (UIDVALIDITY)", "")
	uidv := regexp.MustCompile(`UIDVALIDITY (\d+)`).FindStringSubmatch(strings.Join(st, ""))
	if uidv == nil {
		t.Fatalf("no UIDVALIDITY for %s: %q", box, st)
	}
	st = setup.cmd("s2 STATUS "+box2+" (UIDVALIDITY)", "")
	uidv2 := regexp.MustCompile(`UIDVALIDITY (\d+)`).FindStringSubmatch(strings.Join(st, ""))
	setup.cmd("z LOGOUT", "")

	subst := strings.NewReplacer("{box2}", box2, "{box}", box, "{uidvalidity}", uidv[1])
	sessions := make([]*client, sc.sessions)
	for i := range sessions {
		sessions[i] = connect()
	}
	for _, s := range sc.steps {
		c := sessions[s.s]
		if s.cmd == "" {
			c.expect(s.until)
			continue
		}
		c.cmd(subst.Replace(s.cmd), s.until)
	}
	norm := strings.NewReplacer(box2, "{box2}", box, "{box}", uidv[1], "{uidvalidity}", uidv2[1], "{uidvalidity2}")
	out := make([]string, len(sessions))
	for i, c := range sessions {
		tr := timings.ReplaceAllString(norm.Replace(c.trans.String()), "")
		out[i] = removedCaps.ReplaceAllString(tr, "")
	}
	return out
}

// timings are Dovecot's "(0.001 + 0.000 + 0.001 secs)".
var timings = regexp.MustCompile(` \(\d+\.\d+( \+ \d+\.\d+)* secs\)`)

// removedCaps are the capabilities the proxy does not pass on, by design
// (see caps.go), of those the lab's Dovecot offers.
var removedCaps = regexp.MustCompile(` (LOGIN-REFERRALS|URL-PARTIAL|CATENATE|NOTIFY|CONTEXT=SEARCH)\b`)

func TestDiffPlain(t *testing.T) {
	e := newEnv(t, envOptions{})
	three := []fixture{
		{msg: plainMsg("one", "first message")},
		{flags: `(\Seen)`, msg: plainMsg("two", "second message")},
		{flags: `(\Flagged $Work)`, msg: plainMsg("three", "third message")},
	}
	routed := fixture{msg: "From: Alice <alice@example.test>\r\nTo: Bob <@relay.example.org,@b.example:bob@example.test>, " +
		"Friends: carol@example.org, \"Dave\" <dave@example.net>;\r\nCc: undisclosed-recipients:;\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n" +
		"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <routed@example.test>\r\nIn-Reply-To: <x@y>\r\n\r\nrouted\r\n"}
	p := testPKI(t)
	secret := fixture{msg: encrypted(t, plainMsg("secret", "hidden"), p.alice)}
	for _, sc := range []script{
		{name: "select and recent", sessions: 1, fixtures: three, steps: []step{
			{cmd: "a SELECT {box}"},
			{cmd: "b FETCH 1:* (FLAGS)"},
			{cmd: "c SEARCH NEW"},
			{cmd: "d SEARCH RECENT UNSEEN"},
			{cmd: "e STATUS {box2} (MESSAGES RECENT UNSEEN UIDNEXT UIDVALIDITY)"},
			{cmd: "f EXAMINE {box}"},
			{cmd: "g LOGOUT"},
		}},
		{name: "fetch content", sessions: 1, fixtures: three, steps: []step{
			{cmd: "a EXAMINE {box}"},
			{cmd: "b FETCH 1:* (UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)"},
			{cmd: "c UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[TEXT]<0.5>)"},
			{cmd: "d FETCH * (UID)"},
			{cmd: "e FETCH 2 (BINARY.PEEK[1]<0.10> BINARY.SIZE[1])"},
			{cmd: "f FETCH 1:2 FAST"},
			{cmd: "g FETCH 3 BODY[]"},
		}},
		{name: "append forms", sessions: 1, steps: []step{
			{cmd: "a SELECT {box}"},
			{cmd: "b APPEND {box} (\\Seen) " + fixedDate + " " + binLitPlus("Subject: b\r\n\r\nx\x00y\r\n")},
			{cmd: "c APPEND {box} " + lit("Subject: c\r\n\r\ny\r\n")},
			{cmd: "d APPEND {box} " + fixedDate + " " + litPlus("Subject: d\r\n\r\nz\r\n") + " " + fixedDate + " " + litPlus("Subject: e\r\n\r\nw\r\n")},
			{cmd: "e NOOP"},
			{cmd: "f UID FETCH 1:* (FLAGS BODY.PEEK[])"},
		}},
		{name: "list and lsub", sessions: 1, steps: []step{
			{cmd: "a LIST \"\" ({box} {box2})"},
			{cmd: "b LIST (SUBSCRIBED) \"\" \"*\" RETURN (CHILDREN)"},
			{cmd: "c LSUB \"\" {box}*"},
			{cmd: "d LIST \"\" \"&Jjo-bad&-\""},
			{cmd: "e SELECT \"&Jjo\""},
			{cmd: "f SEARCH (FROM"},
			{cmd: "g FETCH"},
			{cmd: "h NOSUCHCOMMAND"},
		}},
		{name: "keywords and permanentflags", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "a SELECT {box}"},
			{s: 1, cmd: "a SELECT {box}"},
			{s: 1, cmd: "b STORE 1 +FLAGS (NewKeyword)"},
			{s: 0, cmd: "b NOOP"},
			{s: 0, cmd: "c FETCH 1 (FLAGS)"},
			{s: 1, cmd: "c STORE 2 -FLAGS (\\Seen)"},
			{s: 0, cmd: "d CHECK"},
			{s: 1, cmd: "d EXPUNGE"},
		}},
		{name: "condstore and qresync", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "a ENABLE QRESYNC"},
			{s: 0, cmd: "b SELECT {box} (CONDSTORE)"},
			{s: 0, cmd: "c FETCH 1:* (UID FLAGS MODSEQ)"},
			{s: 1, cmd: "a SELECT {box}"},
			{s: 1, cmd: "b STORE 1 +FLAGS (\\Answered)"},
			{s: 1, cmd: "c STORE 3 +FLAGS (\\Deleted)"},
			{s: 1, cmd: "d EXPUNGE"},
			{s: 0, cmd: "d NOOP"},
			{s: 0, cmd: "e UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"},
			{s: 0, cmd: "f UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)"},
			{s: 0, cmd: "g UNSELECT"},
			{s: 0, cmd: "h SELECT {box} (QRESYNC ({uidvalidity} 1 1:3))"},
			{s: 0, cmd: "i UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[]<0.20>) (CHANGEDSINCE 1)"},
		}},
		{name: "sort thread esearch", sessions: 1, fixtures: three, steps: []step{
			{cmd: "a EXAMINE {box}"},
			{cmd: "b SORT (SUBJECT REVERSE DATE) UTF-8 ALL"},
			{cmd: "c UID SORT RETURN (MIN MAX COUNT) (ARRIVAL) UTF-8 ALL"},
			{cmd: "d THREAD REFERENCES UTF-8 ALL"},
			{cmd: "e SEARCH RETURN (MIN MAX COUNT ALL) ALL"},
			{cmd: "f UID SEARCH RETURN (SAVE) SUBJECT two"},
			{cmd: "g FETCH $ (UID ENVELOPE)"},
			{cmd: "h SEARCH CHARSET UTF-8 SUBJECT " + lit("thr")},
		}},
		{name: "search with text keys", sessions: 1, fixtures: append(three, routed), steps: []step{
			{cmd: "a SEARCH BODY message"},
			{cmd: "b SELECT {box}"},
			{cmd: "c SEARCH BODY message"},
			{cmd: "d UID SEARCH TEXT \"third\" UNSEEN"},
			{cmd: "e SEARCH OR SUBJECT one NOT (FROM alice BODY second)"},
			{cmd: "f SEARCH HEADER Message-ID routed TO bob CC \"\" BCC x"},
			{cmd: "g SEARCH CHARSET UTF-8 SUBJECT " + lit("café")},
			{cmd: "h SEARCH CHARSET KOI8-R BODY x"},
			{cmd: "i SEARCH CHARSET NO-SUCH BODY x"},
			{cmd: "j UID SEARCH RETURN (MIN MAX COUNT ALL) BODY message"},
			{cmd: "k SEARCH RETURN (SAVE) TEXT first"},
			{cmd: "l FETCH $ (UID FLAGS)"},
			{cmd: "m SORT (REVERSE SUBJECT) UTF-8 BODY message"},
			{cmd: "n UID SORT RETURN (COUNT) (ARRIVAL) US-ASCII OR BODY first TEXT third"},
			{cmd: "o SEARCH 2:* FUZZY BODY message"},
			{cmd: "p SEARCH MODSEQ 1 BODY message"},
			{cmd: "q SEARCH BODY"},
			{cmd: "r SEARCH BODY message)"},
			{cmd: "s SEARCH (BODY message"},
			{cmd: "t SEARCH NOSUCHKEY message"},
			{cmd: "u SORT (SUBJECT) BODY message"},
			{cmd: "v SEARCH RETURN (PARTIAL 1:2) BODY message"},
			{cmd: "w SEARCH SUBJECT " + litPlus("thr") + " BODY " + lit("third")},
			{cmd: "x SEARCH YOUNGER 100000000 SENTBEFORE \"1-Jan-2030\" BODY message"},
		}},
		{name: "idle while another session appends and expunges", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "a SELECT {box}"},
			{s: 1, cmd: "a SELECT {box}"},
			{s: 0, cmd: "b IDLE", until: `^\+`},
			{s: 1, cmd: "b APPEND {box} " + lit(plainMsg("four", "fourth"))},
			{s: 0, until: `^\* 4 EXISTS`},
			{s: 1, cmd: "c STORE 2 +FLAGS (\\Deleted)"},
			{s: 1, cmd: "d EXPUNGE"},
			{s: 0, until: `^\* 2 EXPUNGE`},
			{s: 0, cmd: "DONE", until: `^b OK`},
			{s: 0, cmd: "c FETCH 1:* (UID FLAGS)"},
		}},
		{name: "fetch of a message another session just expunged", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "a SELECT {box}"},
			{s: 1, cmd: "a SELECT {box}"},
			{s: 1, cmd: "b STORE 2 +FLAGS (\\Deleted)"},
			{s: 1, cmd: "c EXPUNGE"},
			{s: 0, cmd: "b FETCH 2 (BODY[] FLAGS)"},
			{s: 0, cmd: "c FETCH 1:3 (UID RFC822.SIZE)"},
			{s: 0, cmd: "d NOOP"},
			{s: 0, cmd: "e FETCH 1:* (UID)"},
		}},
		{name: "source routes and groups", sessions: 1, fixtures: []fixture{routed}, steps: []step{
			{cmd: "a EXAMINE {box}"},
			{cmd: "b FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (To)])"},
		}},
		{name: "fetch answers before expunges", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "a SELECT {box}"},
			{s: 1, cmd: "a SELECT {box}"},
			{s: 1, cmd: "b STORE 1:2 +FLAGS (\\Deleted)"},
			{s: 1, cmd: "c EXPUNGE"},
			{s: 0, cmd: "b UID FETCH 1:* (UID FLAGS)"},
			{s: 0, cmd: "c FETCH 1:* (UID)"},
		}},
		{name: "S/MIME messages in the set", sessions: 1, fixtures: []fixture{three[0], secret, three[1], secret}, steps: []step{
			{cmd: "a SELECT {box}"},
			{cmd: "b STORE 1:* +FLAGS (\\Flagged)"},
			{cmd: "c UID STORE 2:4 -FLAGS.SILENT (\\Flagged)"},
			{cmd: "d SEARCH FLAGGED"},
			{cmd: "e UID SEARCH HEADER Content-Type pkcs7"},
			{cmd: "f COPY 1:* {box2}"},
			{cmd: "g UID MOVE 3:4 {box2}"},
			{cmd: "h FETCH 1:* (UID FLAGS INTERNALDATE)"},
			{cmd: "i STATUS {box2} (MESSAGES UIDNEXT)"},
		}},
		{name: "thunderbird", sessions: 2, fixtures: three, steps: []step{
			{s: 0, cmd: "1 capability"},
			{s: 0, cmd: "2 ID (\"name\" \"Thunderbird\" \"version\" \"153.0\")"},
			{s: 0, cmd: "3 select \"{box}\""},
			{s: 0, cmd: "4 UID fetch 1:* (FLAGS)"},
			{s: 0, cmd: "5 UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])"},
			{s: 0, cmd: "6 IDLE", until: `^\+`},
			{s: 1, cmd: "a APPEND {box} " + lit(plainMsg("four", "fourth"))},
			{s: 0, until: `^\* 4 EXISTS`},
			{s: 0, cmd: "DONE", until: `^6 OK`},
			{s: 0, cmd: "7 UID fetch 4:* (FLAGS)"},
			{s: 0, cmd: "8 UID fetch 4 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID Content-Type)])"},
			{s: 0, cmd: "9 UID fetch 4 (UID RFC822.SIZE BODY.PEEK[]<0.65536>)"},
			{s: 0, cmd: "10 UID store 4 +FLAGS (\\Seen)"},
			{s: 0, cmd: "11 UID store 4 -FLAGS (\\Seen)"},
			{s: 0, cmd: "12 UID fetch 4 (UID RFC822.SIZE BODY.PEEK[]<10.65536>)"},
			{s: 0, cmd: "13 APPEND \"{box2}\" (\\Seen) UTF8 (" + litPlus("Subject: caf\xc3\xa9\r\n\r\nsent\r\n") + ")"},
			{s: 0, cmd: "14 noop"},
		}},
	} {
		t.Run(sc.name, func(t *testing.T) { runDiff(t, e, sc) })
	}
}
