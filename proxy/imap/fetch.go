package imap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"smimeproxy/proxy"
	"smimeproxy/proxy/imap/imapmsg"
)

// A FETCH that asks for content is the one command whose answer the relay
// rewrites. It runs alone, in three steps:
//
//  1. classify: the proxy's own FETCH of the same set, for each message's
//     UID, size and Content-Type, Content-Disposition and
//     Authentication-Results fields (a few hundred bytes each). It is
//     repeated when new mail was announced during it, so that the client's
//     set means the same messages in step 3.
//  2. open: the S/MIME messages (and those carrying a forged verdict) not
//     in the cache are fetched whole with BODY.PEEK[] and opened, in
//     parallel, into the cache.
//  3. the client's FETCH goes upstream as the client wrote it, so that
//     \Seen, MODSEQ and the rest change exactly as they would directly. Its
//     answers pass through as they come, except that in the answer for an
//     opened message every content item is replaced by the one computed
//     from the opened message; UID, FLAGS, MODSEQ and the rest stay the
//     upstream's. An item the upstream answers NIL (an expunged message)
//     stays NIL.
//
// Own commands are FETCH when the client's is FETCH, and UID FETCH when it
// is UID FETCH: a FETCH cannot bring EXPUNGE responses, which would move
// the sequence numbers the client's FETCH means.

// entry is one message of an intercepted FETCH.
type entry struct {
	seq   uint32
	uid   uint32
	size  int64
	kind  msgKind
	known bool    // kind and size are known
	msg   *opened // nil: served as the upstream sends it
}

// fetchRun is one intercepted FETCH.
type fetchRun struct {
	r      *relay
	stores uint64 // the keystore's and certificate cache's generation, for cache keys
	f      *fetchCmd
	raw    []byte // the client's command, as sent
	mbox   mailbox
	grew   bool // new messages were announced while classifying
	byUID  map[uint32]*entry
	bySeq  map[uint32]*entry
	order  []*entry
	// until ends the waits for memory; zero: imap.timeouts.data from each.
	until time.Time
}

func (r *relay) fetch(tag, name string, raw []byte, f *fetchCmd) error {
	r.mu.Lock()
	mbox := r.mbox
	r.mu.Unlock()
	run := &fetchRun{r: r, f: f, mbox: mbox, raw: raw, stores: r.s.opts.StoresGeneration()}
	verb := "FETCH "
	if f.uid {
		verb = "UID FETCH "
	}
	classified := false
	for range 3 {
		ok, err := run.classify(verb)
		if err != nil {
			return err
		}
		if !ok {
			// The upstream will answer the client's FETCH the same way.
			run.order, run.byUID, run.bySeq = nil, map[uint32]*entry{}, map[uint32]*entry{}
			break
		}
		classified = true
		if !run.grew {
			break
		}
	}
	r.setInterceptor(rewriter{run})
	defer r.setInterceptor(nil)
	if !classified || len(run.order) == 0 {
		c := r.register(tag, name, false)
		c.ownCont = true
		if err := r.send(c, raw); err != nil {
			return err
		}
		_, err := r.wait(c)
		return err
	}
	// The client's FETCH goes upstream whole when its S/MIME messages fit
	// in memory together, and in parts otherwise: runs of messages that do,
	// and each message too large to open on its own. The last part goes
	// under the client's own tag.
	for i := 0; i < len(run.order); {
		seg, err := run.nextSegment(i)
		if err != nil {
			return err
		}
		i += len(seg.entries)
		last := i == len(run.order)
		var st status
		switch {
		case seg.oversize:
			st, err = run.oversize(seg.entries[0], tag, name, last)
		case last && seg.reserved == 0 && len(seg.entries) == len(run.order):
			// Nothing to open: the client's FETCH as it wrote it.
			c := r.register(tag, name, false)
			c.ownCont = true
			if err = r.send(c, raw); err == nil {
				st, err = r.wait(c)
			}
		default:
			st, err = run.part(verb, tag, name, seg, last)
		}
		r.s.opts.Budget.Release(seg.reserved)
		if err != nil {
			return err
		}
		if !last && !st.ok() {
			return r.answer(tag, name, string(st.line))
		}
	}
	return nil
}

// part sends the client's FETCH for the messages of seg, after opening its
// S/MIME ones: under the client's command as written when seg is all of it.
func (run *fetchRun) part(verb, tag, name string, seg segment, last bool) (status, error) {
	r := run.r
	if err := run.open(verb, seg.entries); err != nil {
		return status{}, err
	}
	partTag, cmd := tag, run.raw
	if !last || len(seg.entries) != len(run.order) {
		var nums []uint32
		for _, e := range seg.entries {
			nums = append(nums, run.num(e))
		}
		if !last {
			partTag = r.up.tag()
		}
		cmd = concat([]byte(partTag), run.raw[len(tag):run.f.setAt], []byte(formatNumSet(nums)), run.raw[run.f.setEnd:])
	}
	c := r.register(partTag, name, !last)
	c.ownCont = true
	if err := r.send(c, cmd); err != nil {
		return status{}, err
	}
	st, err := r.wait(c)
	for _, e := range seg.entries {
		e.msg = nil
	}
	return st, err
}

// maxPinned bounds the S/MIME messages one FETCH holds opened at once, in
// bytes of the messages as stored.
var maxPinned int64 = 64 << 20

// openCost is the memory opening a message of n bytes takes at its peak:
// the message, its CMS content decoded, the content decrypted and the
// message served.
func openCost(n int64) int64 { return 4 * n }

// segment is a run of messages of one FETCH that go upstream together.
type segment struct {
	entries  []*entry
	oversize bool  // one message too large to open
	reserved int64 // of the memory budget, for opening its messages
}

// nextSegment takes the messages from order[i] on that can be opened
// together: within maxPinned, and within what the memory budget grants.
// A first message the budget cannot grant now is waited for; one it could
// never grant is served like one over imap.max_message_mb.
func (run *fetchRun) nextSegment(i int) (segment, error) {
	r := run.r
	budget := r.s.opts.Budget
	if e := run.order[i]; e.kind != kindPlain && e.size > r.maxOpen {
		return segment{entries: []*entry{e}, oversize: true}, nil
	}
	var (
		seg    segment
		pinned int64
	)
	for _, e := range run.order[i:] {
		if e.kind != kindPlain && e.size > r.maxOpen {
			break
		}
		if e.kind != kindPlain && e.msg == nil {
			if k, ok := run.key(e.uid); ok {
				e.msg, _ = r.s.p.cache.get(k)
			}
		}
		if e.kind != kindPlain && e.msg == nil {
			cost := openCost(e.size)
			if len(seg.entries) > 0 && pinned+e.size > maxPinned {
				break
			}
			if !budget.TryAcquire(cost) {
				if len(seg.entries) > 0 {
					break
				}
				until := run.until
				if until.IsZero() {
					until = time.Now().Add(r.s.opts.Config.IMAP.Timeouts.Data.D())
				}
				ctx, cancel := context.WithDeadline(r.s.ctx, until)
				err := budget.Acquire(ctx, cost)
				cancel()
				if errors.Is(err, proxy.ErrOverBudget) {
					return segment{entries: []*entry{e}, oversize: true}, nil
				}
				if err != nil {
					return seg, fmt.Errorf("imap: waiting for memory to open a message: %w", err)
				}
			}
			seg.reserved += cost
			pinned += e.size
		}
		seg.entries = append(seg.entries, e)
	}
	return seg, nil
}

// forwardRenumbering passes on a response that changes the numbering, with
// the flag updates held before it, which use the numbering before it.
func (r *relay) forwardRenumbering(line []byte) error {
	if err := r.flushHeld(); err != nil {
		return err
	}
	return r.forward(line)
}

// key is the cache key of a message of this run; ok is false when the
// mailbox is not known well enough to cache by.
func (run *fetchRun) key(uid uint32) (cacheKey, bool) {
	s := run.r.s
	k := cacheKey{gen: s.gen, stores: run.stores, user: run.r.user, verified: run.r.verified,
		mailbox: run.mbox.name, uidValidity: run.mbox.uidValidity, uid: uid}
	return k, run.mbox.uidValidity != 0 && uid != 0
}

func (run *fetchRun) add(e *entry) {
	run.order = append(run.order, e)
	run.bySeq[e.seq] = e
	if e.uid != 0 {
		run.byUID[e.uid] = e
	}
}

// expunged follows an EXPUNGE: the messages after it move down by one.
func (run *fetchRun) expunged(seq uint32) {
	bySeq := make(map[uint32]*entry, len(run.bySeq))
	for _, e := range run.order {
		switch {
		case e.seq == seq:
			e.seq = 0
		case e.seq > seq:
			e.seq--
		}
		if e.seq != 0 {
			bySeq[e.seq] = e
		}
	}
	run.bySeq = bySeq
}

// vanished follows a VANISHED (RFC 7162): the UIDs are gone, and the
// messages after each move down by one.
func (run *fetchRun) vanished(line []byte) {
	set := trimEOL(line)
	if i := bytes.LastIndexByte(set, ' '); i >= 0 {
		set = set[i+1:]
	}
	uids, ok := parseNumSet(string(set))
	if !ok || bytes.Contains(line, []byte("(EARLIER)")) {
		return
	}
	for _, u := range uids {
		e := run.byUID[u]
		if e == nil {
			// Not one of ours: ours above it still move down.
			for _, x := range run.order {
				if x.uid > u && x.seq > 0 {
					x.seq--
				}
			}
			continue
		}
		if e.seq > 0 {
			run.expunged(e.seq)
		}
	}
	run.bySeq = map[uint32]*entry{}
	for _, e := range run.order {
		if e.seq != 0 {
			run.bySeq[e.seq] = e
		}
	}
}

// parseNumSet reads a set of numbers without "*", as VANISHED gives them.
func parseNumSet(s string) ([]uint32, bool) {
	var out []uint32
	for _, part := range strings.Split(s, ",") {
		lo, hi, rng := strings.Cut(part, ":")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return nil, false
		}
		b := a
		if rng {
			if b, err = strconv.ParseUint(hi, 10, 32); err != nil {
				return nil, false
			}
		}
		if a > b {
			a, b = b, a
		}
		if b-a > 1<<20 {
			return nil, false
		}
		for n := a; n <= b; n++ {
			out = append(out, uint32(n))
		}
	}
	return out, true
}

// formatNumSet writes numbers as a sequence set, runs as ranges.
func formatNumSet(nums []uint32) string {
	nums = slices.Clone(nums)
	slices.Sort(nums)
	nums = slices.Compact(nums)
	var b strings.Builder
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(nums[i]), 10))
		if j > i {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(nums[j]), 10))
		}
		i = j + 1
	}
	return b.String()
}

// classify learns each message of the set: its UID (the proxy's own FETCH
// of the same set), then, for those the kind cache does not know, its
// size and classifying fields (a FETCH of them alone). ok is false when the
// upstream refused the set.
func (run *fetchRun) classify(verb string) (bool, error) {
	r := run.r
	run.byUID, run.bySeq, run.order, run.grew = map[uint32]*entry{}, map[uint32]*entry{}, nil, false
	st, err := r.own(verb+run.f.set+" (UID)", classifier{run: run})
	if err != nil || !st.ok() {
		return false, err
	}
	var unknown []uint32
	for _, e := range run.order {
		if k, ok := run.kindKey(e.uid); ok {
			if kind, size, hit := r.s.p.kinds.get(k); hit {
				e.kind, e.size, e.known = kind, size, true
				continue
			}
		}
		unknown = append(unknown, run.num(e))
	}
	if len(unknown) == 0 {
		return true, nil
	}
	st, err = r.own(verb+formatNumSet(unknown)+" (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS ("+classifyFields+")])", classifier{run: run, headers: true})
	if err != nil || !st.ok() {
		return false, err
	}
	for _, e := range run.order {
		if !e.known {
			continue
		}
		if k, ok := run.kindKey(e.uid); ok {
			r.s.p.kinds.put(k, e.kind, e.size)
		}
	}
	return true, nil
}

// num is e's number as the client's command numbers messages: its UID
// for a UID FETCH, else its sequence number.
func (run *fetchRun) num(e *entry) uint32 {
	if run.f.uid {
		return e.uid
	}
	return e.seq
}

// kindKey is the kind cache's key of a message of this run; ok is false
// when the mailbox is not known well enough to cache by.
func (run *fetchRun) kindKey(uid uint32) (kindKey, bool) {
	return kindKey{user: run.r.user, mailbox: run.mbox.name, uidValidity: run.mbox.uidValidity, uid: uid},
		run.mbox.uidValidity != 0 && uid != 0
}

// mailboxChange passes on an EXPUNGE, VANISHED or EXISTS that arrives
// during one of the run's commands, keeping the run's entries in step with
// it; ok is false for any other response, which is the caller's.
func (run *fetchRun) mailboxChange(kind string, num uint32, line []byte) (ok bool, err error) {
	switch kind {
	case "EXPUNGE":
		run.expunged(num)
	case "VANISHED":
		run.vanished(line)
	case "EXISTS":
	default:
		return false, nil
	}
	return true, run.r.forwardRenumbering(line)
}

// classifier reads the answers to the classifying FETCHes: first the UIDs,
// then, with headers, the size and classifying fields of messages met in
// the first.
type classifier struct {
	run     *fetchRun
	headers bool
}

func (c classifier) untagged(kind string, num uint32, line []byte) error {
	run := c.run
	if kind == "EXISTS" {
		run.grew = true
	}
	if ok, err := run.mailboxChange(kind, num, line); ok {
		return err
	}
	var (
		size   int64
		header []byte
		mine   bool
	)
	uid, err := run.r.ownResponse(line, func(name string, hasSect bool, sc *scanner) (bool, error) {
		var err error
		switch {
		case c.headers && name == "RFC822.SIZE":
			var v string
			if v, err = sc.atom(); err == nil {
				size, err = strconv.ParseInt(v, 10, 64)
			}
		case c.headers && name == "BODY" && hasSect:
			header, err = sc.nstring(maxClassifyHeader)
			if err == errLiteralTooLong {
				// Too much header to read: not a message anyone wrote.
				header, err = nil, sc.skipValue()
			}
		default:
			return false, nil
		}
		mine = true
		return true, err
	})
	if err != nil || uid == 0 {
		return err
	}
	if !c.headers {
		if run.byUID[uid] == nil {
			run.add(&entry{seq: num, uid: uid})
		}
		return nil
	}
	e := run.byUID[uid]
	if e == nil || !mine {
		return nil
	}
	e.size, e.known = size, true
	e.kind = classifyHeader(header, authservID(run.r.s.opts.Config.ServerName))
	return nil
}

// maxClassifyHeader bounds the classifying fields read per message.
const maxClassifyHeader = 64 << 10

// ownResponse reads an untagged FETCH answer to one of the proxy's own
// commands, and returns the UID it gives. take is given every other item
// and claims the ones the proxy asked for. Whatever else the upstream put
// in the answer (a flag that changed meanwhile) is the client's, and is
// kept for it, with the UID.
func (r *relay) ownResponse(line []byte, take func(name string, hasSect bool, sc *scanner) (bool, error)) (uint32, error) {
	open := indexFold(line, " FETCH (")
	if open < 0 {
		return 0, r.forward(line)
	}
	sc := newScanner(r.up.br, maxUpstreamLine, line)
	sc.pos = open + len(" FETCH (")
	var (
		rest   bytes.Buffer
		others int
		uid    uint32
	)
	for first := true; sc.peek() != ')'; first = false {
		if sc.atEOL() && sc.lit == nil {
			return 0, fmt.Errorf("%w: FETCH answer cut short", errSyntax)
		}
		if !first {
			if err := sc.sp(); err != nil {
				return 0, err
			}
		}
		start := sc.pos
		name, _, hasSect, _, err := itemName(sc)
		if err != nil {
			return 0, err
		}
		nameText := string(sc.line[start:sc.pos])
		if err := sc.sp(); err != nil {
			return 0, err
		}
		un := strings.ToUpper(name)
		if un == "UID" {
			v, err := sc.atom()
			if err != nil {
				return 0, err
			}
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%w: UID %q", errSyntax, v)
			}
			uid = uint32(n)
			appendItem(&rest, nameText, []byte(v))
			continue
		}
		claimed, err := take(un, hasSect, sc)
		if err != nil {
			return 0, err
		}
		if claimed {
			continue
		}
		if rest.Len() > 0 {
			rest.WriteByte(' ')
		}
		rest.WriteString(nameText + " ")
		if err := sc.copyValue(&rest); err != nil {
			return 0, err
		}
		others++
	}
	if others > 0 {
		head := line[:open+len(" FETCH (")]
		r.hold(concat(head, rest.Bytes(), []byte(")\r\n")))
	}
	return uid, nil
}

func appendItem(b *bytes.Buffer, name string, value []byte) {
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(name)
	b.WriteByte(' ')
	b.Write(value)
}

// open fetches whole and opens the messages of entries that need it,
// several at once.
func (run *fetchRun) open(verb string, entries []*entry) error {
	var need []uint32
	for _, e := range entries {
		if e.kind == kindPlain || e.msg != nil || e.size > run.r.maxOpen {
			continue
		}
		need = append(need, run.num(e))
	}
	if len(need) == 0 {
		return nil
	}
	p := &prefetcher{run: run, op: run.r.newOpener(), jobs: make(chan job)}
	for range runtime.GOMAXPROCS(0) {
		p.wg.Go(p.work)
	}
	_, err := run.r.own(verb+formatNumSet(need)+" (UID BODY.PEEK[])", p)
	close(p.jobs)
	p.wg.Wait()
	return err
}

// prefetcher reads the whole messages and hands them to its workers.
type prefetcher struct {
	run  *fetchRun
	op   *opener
	jobs chan job
	wg   sync.WaitGroup
}

type job struct {
	e   *entry
	raw []byte
}

func (p *prefetcher) work() {
	for j := range p.jobs {
		k, _ := p.run.key(j.e.uid)
		j.e.msg = p.op.open(k, j.raw, j.e.kind)
	}
}

func (p *prefetcher) untagged(kind string, num uint32, line []byte) error {
	run := p.run
	if ok, err := run.mailboxChange(kind, num, line); ok {
		return err
	}
	var raw []byte
	got := false
	uid, err := run.r.ownResponse(line, func(name string, hasSect bool, sc *scanner) (bool, error) {
		if name != "BODY" || !hasSect {
			return false, nil
		}
		b, err := sc.nstring(run.r.maxOpen)
		if err == errLiteralTooLong {
			return true, sc.skipValue()
		}
		raw, got = b, b != nil
		return true, err
	})
	if err != nil || !got {
		return err
	}
	e := run.byUID[uid]
	if e == nil {
		e = run.bySeq[num]
	}
	if e == nil || e.kind == kindPlain {
		return nil
	}
	p.jobs <- job{e: e, raw: raw}
	return nil
}

// rewriter passes the answers to the client's FETCH on, rewriting the
// content items of the opened messages.
type rewriter struct{ run *fetchRun }

func (w rewriter) untagged(kind string, num uint32, line []byte) error {
	run := w.run
	if ok, err := run.mailboxChange(kind, num, line); ok {
		return err
	}
	r := run.r
	open := indexFold(line, " FETCH (")
	if open < 0 {
		return r.forward(line)
	}
	sc := newScanner(r.up.br, maxUpstreamLine, line)
	sc.pos = open + len(" FETCH (")
	r.s.wmu.Lock()
	defer r.s.wmu.Unlock()
	out := r.s.bw
	out.Write(line[:sc.pos])
	var (
		e       *entry
		decided bool
		uid     uint32
		used    = make([]bool, len(run.f.items))
	)
	for first := true; sc.peek() != ')'; first = false {
		if sc.atEOL() && sc.lit == nil {
			return fmt.Errorf("%w: FETCH answer cut short", errSyntax)
		}
		if !first {
			if err := sc.sp(); err != nil {
				return err
			}
			out.WriteByte(' ')
		}
		start := sc.pos
		name, sect, hasSect, partial, err := itemName(sc)
		if err != nil {
			return err
		}
		out.Write(sc.line[start:sc.pos])
		if err := sc.sp(); err != nil {
			return err
		}
		out.WriteByte(' ')
		un := strings.ToUpper(name)
		if un == "UID" {
			vstart := sc.pos
			v, err := sc.atom()
			if err != nil {
				return err
			}
			n, _ := strconv.ParseUint(v, 10, 32)
			uid = uint32(n)
			out.Write(sc.line[vstart:sc.pos])
			continue
		}
		if !contentItems[un] {
			if err := sc.copyValue(out); err != nil {
				return err
			}
			continue
		}
		if !decided {
			e, decided = run.find(num, uid), true
		}
		if e == nil || e.msg == nil || sc.peekNIL() {
			if err := sc.copyValue(out); err != nil {
				return err
			}
			continue
		}
		list := sc.peek() == '('
		if err := sc.skipValue(); err != nil {
			return err
		}
		run.value(out, e.msg, un, sect, hasSect, partial, list, used)
	}
	sc.pos++
	out.WriteString(")\r\n")
	return nil
}

// find is the entry an answer is for: by UID when the answer gave it
// before its content, else by sequence number.
func (run *fetchRun) find(seq, uid uint32) *entry {
	if uid != 0 {
		return run.byUID[uid]
	}
	return run.bySeq[seq]
}

// peekNIL reports whether the next value is NIL.
func (s *scanner) peekNIL() bool {
	rest := s.line[s.pos:s.end]
	if len(rest) < 3 || !eqFold(rest[:3], "NIL") {
		return false
	}
	return len(rest) == 3 || rest[3] == ' ' || rest[3] == ')'
}

// value writes one content item of an opened message. list says the
// upstream answered PREVIEW or SNIPPET in its older form, (FUZZY text).
func (run *fetchRun) value(w valueWriter, m *opened, name, sect string, hasSect bool, partial string, list bool, used []bool) {
	d := m.describe()
	switch name {
	case "RFC822.SIZE":
		w.WriteString(strconv.FormatInt(m.size(), 10))
	case "RFC822":
		writeLiteral(w, m.raw, false)
	case "RFC822.HEADER":
		writeLiteral(w, d.Section(imapmsg.Section{Specifier: "HEADER"}), false)
	case "RFC822.TEXT":
		writeLiteral(w, d.Section(imapmsg.Section{Specifier: "TEXT"}), false)
	case "ENVELOPE":
		w.Write(d.Envelope())
	case "BODYSTRUCTURE":
		w.Write(d.BodyStructure(true))
	case "PREVIEW", "SNIPPET":
		p := imapmsg.AppendString(nil, d.Preview())
		if list {
			p = concat([]byte("(FUZZY "), p, []byte(")"))
		}
		w.Write(p)
	case "BODY":
		if !hasSect {
			w.Write(d.BodyStructure(false))
			return
		}
		sec, err := imapmsg.ParseSection(sect)
		if err != nil {
			w.WriteString("NIL")
			return
		}
		writeLiteral(w, run.partial(d.Section(sec), "BODY", sect, partial, used), false)
	case "BINARY", "BINARY.SIZE":
		// Content that cannot be decoded is NIL, as Dovecot answers it.
		sec, err := imapmsg.ParseSection(sect)
		if err != nil {
			w.WriteString("NIL")
			return
		}
		if name == "BINARY.SIZE" {
			n, err := d.BinarySize(sec.Part)
			if err != nil {
				w.WriteString("NIL")
				return
			}
			w.WriteString(strconv.FormatInt(n, 10))
			return
		}
		b, err := d.Binary(sec.Part)
		if err != nil {
			w.WriteString("NIL")
			return
		}
		writeLiteral(w, run.partial(b, "BINARY", sect, partial, used), d.Literal8(sec.Part))
	default:
		w.WriteString("NIL")
	}
}

// partial cuts b to the range the client asked for, found by the origin
// the upstream echoed ("<o>").
func (run *fetchRun) partial(b []byte, name, sect, origin string, used []bool) []byte {
	want, _ := imapmsg.ParseSection(sect)
	var off int64 = -1
	if origin != "" {
		n, err := strconv.ParseInt(strings.Trim(origin, "<>"), 10, 64)
		if err != nil {
			return b
		}
		off = n
	}
	for i, it := range run.f.items {
		if used[i] || it.name != name || !it.hasSect {
			continue
		}
		got, err := imapmsg.ParseSection(it.section)
		if err != nil || !sameSection(got, want) {
			continue
		}
		if !it.partial && off < 0 {
			used[i] = true
			return b
		}
		if it.partial && it.offset == off {
			used[i] = true
			if off >= int64(len(b)) {
				return nil
			}
			return b[off:min(int64(len(b)), off+it.count)]
		}
	}
	return b
}

func sameSection(a, b imapmsg.Section) bool {
	return slices.Equal(a.Part, b.Part) && a.Specifier == b.Specifier &&
		slices.EqualFunc(a.Fields, b.Fields, strings.EqualFold)
}

// writeLiteral writes b as a literal; literal8 writes it as ~{n}, for
// BINARY content as Dovecot marks it (RFC 3516).
func writeLiteral(w valueWriter, b []byte, literal8 bool) {
	if literal8 {
		w.WriteByte('~')
	}
	w.WriteByte('{')
	w.WriteString(strconv.Itoa(len(b)))
	w.WriteString("}\r\n")
	w.Write(b)
}
