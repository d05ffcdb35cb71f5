package proxy

import (
	"fmt"
	"slices"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// recordWriter records what flush writes, as the client would see it.
type recordWriter struct{ got []string }

func (r *recordWriter) WriteExpunge(n uint32) error {
	r.got = append(r.got, fmt.Sprintf("%d EXPUNGE", n))
	return nil
}

func (r *recordWriter) WriteNumMessages(n uint32) error {
	r.got = append(r.got, fmt.Sprintf("%d EXISTS", n))
	return nil
}

func (r *recordWriter) WriteMailboxFlags(flags []imap.Flag) error {
	r.got = append(r.got, fmt.Sprintf("FLAGS %v", flags))
	return nil
}

func (r *recordWriter) WriteMessageFlags(n uint32, uid imap.UID, flags []imap.Flag) error {
	r.got = append(r.got, fmt.Sprintf("%d FETCH %d %v", n, uid, flags))
	return nil
}

func TestMailboxViewTranslates(t *testing.T) {
	v := newMailboxView()
	v.reset(true, 10)
	// The upstream expunged 3, then 3 again (what was 4), then 8 (was 10),
	// and a new message arrived: it has 8, the client still knows of 10.
	for _, u := range []update{{kind: updateExpunge, num: 3}, {kind: updateExpunge, num: 3}, {kind: updateExpunge, num: 8}, {kind: updateExists, num: 8}} {
		v.push(u)
	}
	v.push(update{kind: updateMessageFlags, num: 2, uid: 20, flags: []imap.Flag{imap.FlagSeen}})
	for client, want := range map[uint32]uint32{1: 1, 2: 2, 3: 0, 4: 0, 5: 3, 9: 7, 10: 0} {
		v.mu.Lock()
		got := v.toUpstreamLocked(client)
		v.mu.Unlock()
		if got != want {
			t.Errorf("toUpstream(%d) = %d, want %d", client, got, want)
		}
		if want != 0 {
			if back := v.toClient(want); back != client {
				t.Errorf("toClient(%d) = %d, want %d", want, back, client)
			}
		}
	}
	if got := v.toClient(8); got != 0 {
		t.Errorf("toClient(8) = %d for a message the client does not know", got)
	}
	for _, tc := range []struct {
		in   imap.SeqSet
		want string
		ok   bool
	}{
		{imap.SeqSet{{Start: 1, Stop: 10}}, "1:7", true},
		{imap.SeqSet{{Start: 3, Stop: 4}}, "", false},
		{imap.SeqSet{{Start: 4, Stop: 0}}, "3:*", true},
		{imap.SeqSet{{Start: 0, Stop: 0}}, "*", true},
		{imap.SeqSet{{Start: 10, Stop: 5}}, "3:7", true},
	} {
		got, ok := v.seqSetToUpstream(tc.in)
		if ok != tc.ok || (ok && got.String() != tc.want) {
			t.Errorf("seqSetToUpstream(%v) = %v %v, want %s %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}

	// No EXPUNGE during FETCH: the flags before it pass, the rest waits.
	var w recordWriter
	v2 := newMailboxView()
	v2.reset(true, 5)
	v2.push(update{kind: updateMessageFlags, num: 5, uid: 50})
	v2.push(update{kind: updateExpunge, num: 1})
	v2.push(update{kind: updateExists, num: 6})
	if ok, err := v2.flush(&w, false); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := v2.flush(&w, true); !ok || err != nil {
		t.Fatal(ok, err)
	}
	want := []string{"5 FETCH 50 []", "1 EXPUNGE", "6 EXISTS"}
	if !slices.Equal(w.got, want) {
		t.Errorf("flush wrote %q, want %q", w.got, want)
	}

	// Updates that do not add up end the session.
	v3 := newMailboxView()
	v3.reset(true, 2)
	v3.push(update{kind: updateExpunge, num: 3})
	if ok, _ := v3.flush(&w, true); ok {
		t.Error("an EXPUNGE beyond the mailbox was accepted")
	}
	// Nothing is queued outside a selection.
	v3.reset(false, 0)
	v3.push(update{kind: updateExists, num: 1})
	if len(v3.queue) != 0 {
		t.Error("an update was queued with no mailbox selected")
	}
}

func FuzzMailboxView(f *testing.F) {
	f.Add(uint32(10), []byte{0, 3, 0, 3, 1, 12, 3, 5})
	f.Add(uint32(1), []byte{0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, count uint32, ops []byte) {
		count %= 1000
		v := newMailboxView()
		v.reset(true, count)
		upstream := count // what the upstream has, following the queue
		for i := 0; i+1 < len(ops); i += 2 {
			switch n := uint32(ops[i+1]); ops[i] % 3 {
			case 0:
				if n >= 1 && n <= upstream {
					v.push(update{kind: updateExpunge, num: n})
					upstream--
				}
			case 1:
				upstream += n % 4
				v.push(update{kind: updateExists, num: upstream})
			case 2:
				v.push(update{kind: updateMessageFlags, num: n})
			}
		}
		for c := uint32(1); c <= count; c++ {
			v.mu.Lock()
			u := v.toUpstreamLocked(c)
			v.mu.Unlock()
			if u > upstream {
				t.Fatalf("client %d maps to %d beyond the upstream's %d", c, u, upstream)
			}
			if u != 0 && v.toClient(u) != c {
				t.Fatalf("client %d -> upstream %d -> client %d", c, u, v.toClient(u))
			}
		}
		var w recordWriter
		if ok, err := v.flush(&w, true); !ok || err != nil {
			t.Fatalf("consistent updates rejected: %v %v", ok, err)
		}
		if v.count != upstream {
			t.Fatalf("after flush the client knows %d messages, the upstream has %d", v.count, upstream)
		}
	})
}
