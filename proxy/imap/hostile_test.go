package imap_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"smimeproxy/internal/hostile"
)

// hostileItems are asked of each hostile message, one FETCH at a time.
var hostileItems = []string{
	"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (Subject From)]",
	"BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]<0.100>", "BODY.PEEK[]", "BODY.PEEK[1]", "BINARY.PEEK[1]", "BINARY.SIZE[1]", "PREVIEW",
}

// hostileDeadline bounds each answer: the work is linear in the message and
// bounded by smime.Limits, so a second is ample; minutes meant the
// quadratic description this test was written for.
const hostileDeadline = 10 * time.Second

// TestHostileMail: messages an outside sender can make to break a mailbox
// (MIME nested 100,000 deep, empty multiparts, CMS with absurd lengths, BER
// nested 100,000 deep, megabyte headers), stored by the lab's Dovecot, are
// fetched item by item through the proxy: every FETCH is answered, the
// session stays, and the work stops when the client goes.
func TestHostileMail(t *testing.T) {
	e, _ := newSMIMEEnv(t)
	cases := hostile.Messages()
	var msgs []string
	for _, c := range cases {
		msgs = append(msgs, string(c.Msg))
	}
	box := e.mailbox(t, "alice", msgs...)
	alice := e.lab.User(t, "alice")
	c := e.dialProxy(t, alice)
	c.timeout = hostileDeadline
	c.cmd("a EXAMINE "+box, "")
	n := 0
	for i, hc := range cases {
		var slowest time.Duration
		for _, item := range hostileItems {
			n++
			start := time.Now()
			got := joined(c.cmd(fmt.Sprintf("h%d UID FETCH %d (%s)", n, i+1, item), ""))
			slowest = max(slowest, time.Since(start))
			if !strings.Contains(got, fmt.Sprintf("h%d OK", n)) && !strings.Contains(got, fmt.Sprintf("h%d NO", n)) {
				t.Errorf("%s, %s: %.300q", hc.Name, item, got)
			}
		}
		t.Logf("%s (%d bytes): slowest item %v", hc.Name, len(hc.Msg), slowest.Round(time.Millisecond))
	}
	mustMatch(t, "a search inside every hostile message", c.cmd("s SEARCH OR TEXT needle SUBJECT needle", ""), `(?m)^s OK`)
	mustMatch(t, "the session after every hostile message", c.cmd("z NOOP", ""), `^z OK`)

	// A client that asks for everything and goes: the proxy stops working
	// for it.
	gone := e.dialProxy(t, alice)
	gone.cmd("a EXAMINE "+box, "")
	gone.write("b FETCH 1:* (BODYSTRUCTURE ENVELOPE BODY.PEEK[])\r\n")
	time.Sleep(100 * time.Millisecond)
	gone.conn.Close()
	time.Sleep(2 * time.Second)
	before := cpuTime(t)
	time.Sleep(2 * time.Second)
	if used := cpuTime(t) - before; used > time.Second {
		t.Errorf("the proxy used %v of CPU in the 2s after its client left", used)
	}
}

// cpuTime is the CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
