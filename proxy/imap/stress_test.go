package imap_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// view is what one session knows of the mailbox, as a client keeps it:
// the UID of each sequence number, from EXISTS, EXPUNGE and FETCH.
type view struct {
	uids []uint32 // 0: not learnt yet
}

var (
	existsRE  = regexp.MustCompile(`^\* (\d+) EXISTS\r\n`)
	expungeRE = regexp.MustCompile(`^\* (\d+) EXPUNGE\r\n`)
	fetchRE   = regexp.MustCompile(`^\* (\d+) FETCH \(`)
	uidRE     = regexp.MustCompile(`^\* \d+ FETCH \((?:[^{]*?[ (])?UID (\d+)`)
)

// learn follows one response; it returns an error when the response
// contradicts what the session knew.
func (v *view) learn(resp string) error {
	if m := existsRE.FindStringSubmatch(resp); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n < len(v.uids) {
			return fmt.Errorf("EXISTS %d after %d messages without EXPUNGE", n, len(v.uids))
		}
		for len(v.uids) < n {
			v.uids = append(v.uids, 0)
		}
		return nil
	}
	if m := expungeRE.FindStringSubmatch(resp); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n < 1 || n > len(v.uids) {
			return fmt.Errorf("EXPUNGE %d of %d messages", n, len(v.uids))
		}
		v.uids = slices.Delete(v.uids, n-1, n)
		return nil
	}
	if m := fetchRE.FindStringSubmatch(resp); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n < 1 || n > len(v.uids) {
			return fmt.Errorf("FETCH %d of %d messages: %.100q", n, len(v.uids), resp)
		}
		if u := uidRE.FindStringSubmatch(resp); u != nil {
			uid, _ := strconv.ParseUint(u[1], 10, 32)
			switch {
			case v.uids[n-1] == 0:
				v.uids[n-1] = uint32(uid)
			case v.uids[n-1] != uint32(uid):
				return fmt.Errorf("message %d has UID %d, but was UID %d", n, uid, v.uids[n-1])
			}
		}
	}
	return nil
}

// TestStress runs 8 sessions on one mailbox through the proxy: appends of
// plain and encrypted mail, flag changes, expunges and fetches, at once. No
// session may be ended by the proxy, no session's numbering may disagree
// with what it was told, every session must end up with the mailbox as a
// direct session sees it, and every encrypted message must be opened the
// same in every session. SMIMEPROXY_STRESS sets the duration (default 5s).
func TestStress(t *testing.T) {
	e, p := newSMIMEEnv(t)
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SMIMEPROXY_STRESS")); err == nil {
		dur = d
	}
	var initial []string
	for i := range 10 {
		initial = append(initial, plainMsg(fmt.Sprintf("plain %d", i), "plain body"))
		initial = append(initial, encrypted(t, plainMsg(fmt.Sprintf("secret %d", i), "secret body"), p.alice))
	}
	box := e.mailbox(t, "alice", initial...)
	u := e.lab.User(t, "alice")
	var extra []string
	for i := range 8 {
		extra = append(extra, encrypted(t, plainMsg(fmt.Sprintf("late secret %d", i), "late secret body"), p.alice))
	}

	var (
		mu     sync.Mutex
		bodies = map[uint32]string{} // UID: the BODY[] first seen of an encrypted message
	)
	seen := func(t *testing.T, resp string) {
		if !strings.Contains(resp, "BODY[] {") || !strings.Contains(resp, "secret body") {
			return
		}
		u := uidRE.FindStringSubmatch(resp)
		if u == nil {
			return
		}
		uid, _ := strconv.ParseUint(u[1], 10, 32)
		body := resp[strings.Index(resp, "}\r\n")+3:]
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := bodies[uint32(uid)]; ok && prev != body {
			t.Errorf("UID %d opened differently in two sessions", uid)
		}
		bodies[uint32(uid)] = body
	}

	var (
		wg     sync.WaitGroup
		finals [8]func()
		want   []uint32
	)
	deadline := time.Now().Add(dur)
	for s := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(s), 7))
			c := e.dialProxy(t, u)
			v := &view{}
			n := 0
			do := func(cmd string) {
				n++
				tag := fmt.Sprintf("s%d.%d", s, n)
				for _, resp := range c.cmd(tag+" "+cmd, "") {
					if strings.HasPrefix(resp, "* BYE") {
						t.Errorf("session %d ended by the proxy: %q", s, resp)
					}
					if err := v.learn(resp); err != nil {
						t.Errorf("session %d, %s %s: %v", s, tag, cmd, err)
					}
					seen(t, resp)
				}
			}
			do("SELECT " + box)
			for time.Now().Before(deadline) {
				switch r := rng.IntN(10); {
				case r == 0 && s < len(extra):
					do("APPEND " + box + " " + lit(extra[s]))
				case r == 1:
					do("APPEND " + box + " " + lit(plainMsg(fmt.Sprintf("s%d n%d", s, n), "appended")))
				case r == 2 && len(v.uids) > 2:
					do(fmt.Sprintf("STORE %d +FLAGS (\\Deleted)", 1+rng.IntN(len(v.uids))))
				case r == 3:
					do("EXPUNGE")
				case r == 4 && len(v.uids) > 0:
					do(fmt.Sprintf("STORE %d %sFLAGS ($Mark%d)", 1+rng.IntN(len(v.uids)), []string{"+", "-"}[rng.IntN(2)], rng.IntN(3)))
				case r == 5:
					do("FETCH 1:* (UID FLAGS)")
				case r == 6 && len(v.uids) > 0:
					do(fmt.Sprintf("FETCH %d:* (UID RFC822.SIZE ENVELOPE BODY.PEEK[])", 1+rng.IntN(len(v.uids))))
				case r == 7:
					do("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject Content-Type)])")
				default:
					do("NOOP")
				}
			}
			t.Logf("session %d: %d commands, %d messages in view", s, n, len(v.uids))
			finals[s] = func() {
				do("NOOP")
				do("FETCH 1:* (UID)")
				if !slices.Equal(v.uids, want) {
					t.Errorf("session %d ends with UIDs %v; Dovecot has %v", s, v.uids, want)
				}
			}
		})
	}
	wg.Wait()
	// Quiet now: every session must agree with Dovecot exactly.
	direct := dialDirect(t, e.lab, u)
	direct.cmd("a EXAMINE "+box, "")
	m := regexp.MustCompile(`(?m)^\* SEARCH([ \d]*)\r$`).FindStringSubmatch(joined(direct.cmd("b UID SEARCH ALL", "")))
	if m == nil {
		t.Fatal("no SEARCH answer from Dovecot")
	}
	for _, f := range strings.Fields(m[1]) {
		n, _ := strconv.ParseUint(f, 10, 32)
		want = append(want, uint32(n))
	}
	for _, f := range finals {
		if f != nil {
			f()
		}
	}
	if len(bodies) == 0 {
		t.Error("no encrypted message was fetched")
	}
	for uid, b := range bodies {
		if !strings.Contains(b, "smime=") {
			t.Errorf("UID %d served without the proxy's verdict", uid)
		}
	}
}
