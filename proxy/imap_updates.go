package proxy

import (
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// updateKind is what one unilateral response from the upstream reports.
type updateKind int

const (
	updateExpunge      updateKind = iota // * n EXPUNGE
	updateExists                         // * n EXISTS
	updateMailboxFlags                   // * FLAGS (...)
	updateMessageFlags                   // * n FETCH (FLAGS (...))
)

type update struct {
	kind  updateKind
	num   uint32 // sequence number (expunge, message flags) or message count (exists)
	uid   imap.UID
	flags []imap.Flag
}

// updateWriter is what the client side offers to write unilateral data:
// imapserver's UpdateWriter.
type updateWriter interface {
	WriteExpunge(seqNum uint32) error
	WriteNumMessages(n uint32) error
	WriteMailboxFlags(flags []imap.Flag) error
	WriteMessageFlags(seqNum uint32, uid imap.UID, flags []imap.Flag) error
}

// mailboxView keeps the client's view of the selected mailbox in step with
// the upstream's. The upstream's EXISTS, EXPUNGE and FLAGS responses are
// queued in the order they arrived and written to the client only where
// IMAP allows them (never an EXPUNGE during FETCH, STORE or SEARCH), so that
// sequence numbers mean the same message to the client as they did to the
// upstream when it sent them. Until then, sequence numbers in commands and
// responses are translated across the expunges still queued. Nothing here is
// proportional to the mailbox: only the queue and a message count are kept.
type mailboxView struct {
	mu     sync.Mutex
	active bool   // a mailbox is selected and its SELECT has completed
	count  uint32 // messages the client knows of
	queue  []update
	// broken is set when the upstream's updates contradict each other; the
	// client must then be disconnected, since its numbering can no longer be
	// trusted to name the right messages.
	broken bool
	notify chan struct{} // wakes an IDLE; capacity 1
}

func newMailboxView() *mailboxView {
	return &mailboxView{notify: make(chan struct{}, 1)}
}

// reset starts a new selection (active) or ends it; queued updates belong to
// the previous mailbox and are dropped.
func (v *mailboxView) reset(active bool, count uint32) {
	v.mu.Lock()
	v.active, v.count, v.queue, v.broken = active, count, nil, false
	v.mu.Unlock()
}

func (v *mailboxView) push(u update) {
	v.mu.Lock()
	if !v.active {
		v.mu.Unlock()
		return
	}
	v.queue = append(v.queue, u)
	v.mu.Unlock()
	select {
	case v.notify <- struct{}{}:
	default:
	}
}

// handler is the imapclient's unilateral data handler feeding v.
func (v *mailboxView) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seqNum uint32) { v.push(update{kind: updateExpunge, num: seqNum}) },
		Mailbox: func(data *imapclient.UnilateralDataMailbox) {
			if data.NumMessages != nil {
				v.push(update{kind: updateExists, num: *data.NumMessages})
			}
			if data.Flags != nil {
				v.push(update{kind: updateMailboxFlags, flags: data.Flags})
			}
		},
		// imapclient calls this on a goroutine of its own, with the items
		// still to be read; only flag changes matter to the client.
		Fetch: func(msg *imapclient.FetchMessageData) {
			u := update{kind: updateMessageFlags, num: msg.SeqNum}
			seen := false
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch item := item.(type) {
				case imapclient.FetchItemDataFlags:
					u.flags, seen = item.Flags, true
				case imapclient.FetchItemDataUID:
					u.uid = item.UID
				}
			}
			if seen {
				v.push(u)
			}
		},
	}
}

// toUpstreamLocked maps a client sequence number to the upstream's, or 0
// when the upstream has already expunged that message.
func (v *mailboxView) toUpstreamLocked(seq uint32) uint32 {
	for _, u := range v.queue {
		if u.kind != updateExpunge {
			continue
		}
		switch {
		case seq == u.num:
			return 0
		case seq > u.num:
			seq--
		}
	}
	return seq
}

// toClient maps an upstream sequence number to the client's, or 0 when the
// client does not know that message yet (its EXISTS is still queued).
func (v *mailboxView) toClient(seq uint32) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := len(v.queue) - 1; i >= 0; i-- {
		if u := v.queue[i]; u.kind == updateExpunge && seq >= u.num {
			seq++
		}
	}
	if seq == 0 || seq > v.count {
		return 0
	}
	return seq
}

// seqSetToUpstream translates a client's sequence set. Each range keeps the
// messages of it that the upstream still has; "*" stays "*". ok is false
// when none of the messages named remains.
func (v *mailboxView) seqSetToUpstream(set imap.SeqSet) (out imap.SeqSet, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.hasExpungeLocked() {
		return set, len(set) > 0
	}
	for _, r := range set {
		start, stop := r.Start, r.Stop
		if start == 0 || (stop != 0 && start > stop) {
			start, stop = stop, start
		}
		// start is now the lower bound, or 0 for "*:*".
		if start == 0 {
			out = append(out, imap.SeqRange{Start: 0, Stop: 0})
			continue
		}
		lo := v.firstSurvivorLocked(start, stop)
		if lo == 0 {
			continue
		}
		hi := uint32(0) // "*"
		if stop != 0 {
			hi = v.lastSurvivorLocked(start, stop)
		}
		out = append(out, imap.SeqRange{Start: lo, Stop: hi})
	}
	return out, len(out) > 0
}

func (v *mailboxView) hasExpungeLocked() bool {
	for _, u := range v.queue {
		if u.kind == updateExpunge {
			return true
		}
	}
	return false
}

// firstSurvivorLocked returns the upstream number of the first client
// message in [start, stop] (stop 0: no upper bound) that the upstream still
// has. The search is bounded by the number of queued expunges.
func (v *mailboxView) firstSurvivorLocked(start, stop uint32) uint32 {
	for seq := start; stop == 0 || seq <= stop; seq++ {
		if up := v.toUpstreamLocked(seq); up != 0 {
			return up
		}
		if seq == ^uint32(0) {
			break
		}
	}
	return 0
}

func (v *mailboxView) lastSurvivorLocked(start, stop uint32) uint32 {
	for seq := stop; seq >= start && seq > 0; seq-- {
		if up := v.toUpstreamLocked(seq); up != 0 {
			return up
		}
	}
	return 0
}

// flush writes the queued updates in order. With allowExpunge false it stops
// at the first EXPUNGE, which waits for a command that allows it. It returns
// false when the upstream's updates no longer add up; the session must then
// end.
func (v *mailboxView) flush(w updateWriter, allowExpunge bool) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.broken {
		return false, nil
	}
	for len(v.queue) > 0 {
		u := v.queue[0]
		var err error
		switch u.kind {
		case updateExpunge:
			if !allowExpunge {
				return true, nil
			}
			if u.num == 0 || u.num > v.count {
				v.broken = true
				return false, nil
			}
			err = w.WriteExpunge(u.num)
			v.count--
		case updateExists:
			if u.num < v.count {
				v.broken = true
				return false, nil
			}
			if u.num > v.count {
				err = w.WriteNumMessages(u.num)
				v.count = u.num
			}
		case updateMailboxFlags:
			err = w.WriteMailboxFlags(u.flags)
		case updateMessageFlags:
			// Flags of a message the client does not know yet arrive with
			// its FETCH later.
			if u.num != 0 && u.num <= v.count {
				err = w.WriteMessageFlags(u.num, u.uid, u.flags)
			}
		}
		v.queue = v.queue[1:]
		if err != nil {
			return true, err
		}
	}
	return true, nil
}
