package proxy_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestIMAPRelayCommands(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	for i := 1; i <= 3; i++ {
		up.appendMsg(user, "INBOX", mailMessage("alice@example.test", user, fmt.Sprintf("msg %d", i), "body"))
	}
	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN " + user + " pw-" + user)

	for _, tc := range []struct{ cmd, want string }{
		{"NAMESPACE", `* NAMESPACE (("" "/")) NIL NIL`},
		{"CREATE Work", ""},
		{"CREATE Work/Old", ""},
		{"RENAME Work/Old Work/Older", ""},
		{"SUBSCRIBE Work", ""},
		{`LIST "" "*"`, `* LIST (\Subscribed) "/" "Work"`},
		{`LIST "" ""`, `* LIST (\Noselect) "/" ""`},
		{`LSUB "" "*"`, `* LSUB (\Subscribed) "/" "Work"`},
		{`LIST "" (Work Work/*) RETURN (STATUS (MESSAGES UIDNEXT))`, `* STATUS "Work/Older" (MESSAGES 0 UIDNEXT 1)`},
		{"UNSUBSCRIBE Work", ""},
		{"STATUS INBOX (MESSAGES UNSEEN UIDVALIDITY SIZE RECENT)", `* STATUS INBOX (MESSAGES 3 UIDVALIDITY 1 UNSEEN 3 SIZE `},
		{"DELETE Work/Older", ""},
	} {
		untagged := c.expectOK(tc.cmd)
		if tc.want != "" && !containsPrefix(untagged, tc.want) {
			t.Errorf("%s: got %q, want a line starting %q", tc.cmd, untagged, tc.want)
		}
	}

	// The upstream's own refusals reach the client as it worded them.
	for _, tc := range []struct{ cmd, want string }{
		{"SELECT Nowhere", "NO [NONEXISTENT] No such mailbox"},
		{"CREATE INBOX", "NO [ALREADYEXISTS] Mailbox already exists"},
		{"DELETE Nowhere", "NO [NONEXISTENT] No such mailbox"},
	} {
		if _, tagged := c.do(tc.cmd); !strings.HasSuffix(tagged, tc.want) {
			t.Errorf("%s: %q, want %q", tc.cmd, tagged, tc.want)
		}
	}

	// APPEND: the UID is the upstream's.
	msg := mailMessage("carol@example.org", user, "appended", "hello")
	c.send(fmt.Sprintf("a100 APPEND INBOX (\\Flagged) {%d}", len(msg)))
	if resp, _ := c.read(); !strings.HasPrefix(resp, "+") {
		t.Fatalf("APPEND continuation: %q", resp)
	}
	c.conn.Write(msg)
	c.send("")
	resp, err := c.read()
	if err != nil || !strings.HasPrefix(resp, "a100 OK [APPENDUID 1 4]") {
		t.Fatalf("APPEND: %q %v", resp, err)
	}

	c.send(fmt.Sprintf("a101 APPEND Nowhere {%d}", len(msg)))
	c.read()
	c.conn.Write(msg)
	c.send("")
	if resp, _ := c.read(); !strings.HasPrefix(resp, "a101 NO [TRYCREATE]") {
		t.Errorf("APPEND to a missing mailbox: %q", resp)
	}

	untagged := c.expectOK("EXAMINE INBOX")
	for _, want := range []string{"* 4 EXISTS", "* OK [UIDVALIDITY 1]", "* OK [UIDNEXT 5]"} {
		if !containsPrefix(untagged, want) {
			t.Errorf("EXAMINE: %q lacks %q", untagged, want)
		}
	}
	c.expectOK("CLOSE") // read-only: expunges nothing
	untagged = c.expectOK("SELECT INBOX")
	if !containsPrefix(untagged, "* 4 EXISTS") {
		t.Errorf("SELECT: %q", untagged)
	}

	untagged = c.expectOK("UID SEARCH FLAGGED")
	if !containsPrefix(untagged, "* SEARCH 4") {
		t.Errorf("UID SEARCH: %q", untagged)
	}
	untagged = c.expectOK("SEARCH RETURN (MIN MAX COUNT) ALL")
	if !containsPrefix(untagged, "* ESEARCH") || !strings.Contains(untagged[0], "MIN 1 MAX 4 COUNT 4") {
		t.Errorf("ESEARCH: %q", untagged)
	}

	untagged = c.expectOK(`STORE 1 +FLAGS (\Seen)`)
	if !containsMatch(untagged, `^\* 1 FETCH \((UID 1 )?FLAGS \(.*\\Seen.*\)\)`) {
		t.Errorf("STORE: %q", untagged)
	}
	c.expectOK(`STORE 1 +FLAGS.SILENT (\Answered)`)
	untagged = c.expectOK(`UID STORE 2 +FLAGS (\Draft)`)
	if !containsMatch(untagged, `^\* 2 FETCH \(UID 2 FLAGS \(.*\\Draft.*\)\)`) {
		t.Errorf("UID STORE: %q", untagged)
	}

	c.expectOK("CREATE Archive")
	_, tagged := c.do("COPY 1:2 Archive")
	if !strings.Contains(tagged, "OK [COPYUID ") || !strings.HasSuffix(tagged, " 1:2 1:2] COPY completed") {
		t.Errorf("COPY: %q", tagged)
	}
	untagged, tagged = c.do("UID MOVE 3 Archive")
	if !strings.HasSuffix(tagged, "OK UID MOVE completed") || !containsPrefix(untagged, "* OK [COPYUID ") || !containsPrefix(untagged, "* 3 EXPUNGE") {
		t.Errorf("UID MOVE: %q %q", untagged, tagged)
	}

	c.expectOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	untagged = c.expectOK("EXPUNGE")
	if !containsPrefix(untagged, "* 1 EXPUNGE") {
		t.Errorf("EXPUNGE: %q", untagged)
	}
	// Left: UIDs 2 and 4, numbered 1 and 2.
	c.expectOK(`UID STORE 4 +FLAGS.SILENT (\Deleted)`)
	untagged = c.expectOK("UID EXPUNGE 4")
	if !containsPrefix(untagged, "* 2 EXPUNGE") {
		t.Errorf("UID EXPUNGE: %q", untagged)
	}
	untagged = c.expectOK("FETCH 1:* (UID FLAGS)")
	if len(untagged) != 1 || !containsMatch(untagged, `^\* 1 FETCH \(UID 2 FLAGS \(.*\)\)`) {
		t.Errorf("FETCH after expunges: %q", untagged)
	}
	c.expectOK("UNSELECT")
	if _, tagged := c.do("FETCH 1 FLAGS"); !strings.Contains(tagged, "BAD") {
		t.Errorf("FETCH after UNSELECT: %q", tagged)
	}
	untagged, tagged = c.do("LOGOUT")
	if !containsPrefix(untagged, "* BYE") || !strings.Contains(tagged, "OK") {
		t.Errorf("LOGOUT: %q %q", untagged, tagged)
	}

	if got := env.metric(t, "smimeproxy_imap_commands_total", "command", "SELECT", "result", "no"); got != 1 {
		t.Errorf("SELECT refusals counted = %v, want 1", got)
	}
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func containsMatch(lines []string, re string) bool {
	r := regexp.MustCompile(re)
	for _, l := range lines {
		if r.MatchString(l) {
			return true
		}
	}
	return false
}
