package imap

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"smimeproxy/proxy/imap/imapmsg"
)

// A SEARCH or SORT whose criteria hold text keys (TEXT, BODY, SUBJECT,
// FROM, TO, CC, BCC, HEADER) would find nothing inside encrypted messages:
// the upstream holds only their ciphertext. The relay answers those keys
// itself for the mailbox's S/MIME messages, from the messages as it serves
// them, and leaves everything else to the upstream. The command runs
// alone, in four steps:
//
//  1. candidates: a SEARCH of the proxy's own for the messages whose
//     Content-Type or Content-Disposition may make them S/MIME.
//  2. each largest part of the criteria without text keys (flags, dates,
//     sizes, sets, MODSEQ, NOT and OR of them) is searched upstream once,
//     among the candidates.
//  3. the candidates whose answer still depends on a text key, newest
//     first, are classified (with the kind cache, as for FETCH), and the
//     S/MIME ones opened through the cache and the memory budget, as FETCH
//     opens them; the criteria are evaluated on each, from step 2's
//     answers and the text of the message as served. imap.search bounds
//     how many are looked into, and for how long; the others keep the
//     upstream's answer, and the client is told with an ALERT.
//  4. the client's command goes upstream with its criteria C made
//     "OR (C) UID <matched> NOT UID <not matched>", so that the upstream
//     numbers, sorts, counts and saves (RETURN) the merged answer as its
//     own. When no message was looked into, the command goes as the client
//     wrote it, and the answer is the upstream's, byte for byte.
//
// Own commands are SEARCH and FETCH when the client's is SEARCH or SORT,
// and their UID forms when it is UID SEARCH or UID SORT: a SEARCH or FETCH
// cannot bring EXPUNGE responses, which would move the sequence numbers
// the client's criteria mean.

// maxSearch bounds a SEARCH or SORT, which the relay reads whole, with its
// literals: the upstream's own line limit (Dovecot's imap_max_line_length,
// past which Dovecot ends the session). The client gets BAD [TOOBIG].
const maxSearch = 64 << 10

// smimeCandidates are criteria that find every message the classifier may
// take for S/MIME (smime.Classify), and perhaps a few more.
const smimeCandidates = "OR HEADER Content-Type pkcs7 OR HEADER Content-Type p7m HEADER Content-Disposition p7m"

// maxSearchGroups bounds the upstream searches of step 2 that one search
// of the client's may cost; criteria that need more are searched by the
// upstream alone, and the client is told.
const maxSearchGroups = 16

// classifyChunk bounds the messages one classifying FETCH names, and
// searchBatch those opened together.
const (
	classifyChunk = 1000
	searchBatch   = 50
)

// search handles SEARCH, UID SEARCH, SORT and UID SORT.
func (r *relay) search(tag, name string, line []byte) error {
	raw, err := r.readWholeMax(line, maxSearch)
	if err != nil {
		if isConnClosed(err) {
			return err
		}
		return r.answer(tag, name, syntaxAnswer(err))
	}
	q, err := parseSearch(raw, line)
	if err == nil && q.update {
		return r.answer(tag, name, "BAD "+refusedCommands["CANCELUPDATE"])
	}
	if err != nil || !r.searchesInside(q) {
		return r.sendWhole(tag, name, raw)
	}
	if err := r.drain(); err != nil {
		return err
	}
	r.mu.Lock()
	mbox := r.mbox
	r.mu.Unlock()
	if mbox.uidValidity == 0 {
		return r.sendWhole(tag, name, raw)
	}
	return r.searchInside(tag, name, raw, q, mbox)
}

// sendWhole sends a command read whole as the client wrote it.
func (r *relay) sendWhole(tag, name string, raw []byte) error {
	c := r.register(tag, name, false)
	c.ownCont = true
	return r.send(c, raw)
}

// searchesInside reports whether the relay looks inside S/MIME messages
// for q: it has text keys in a charset the relay reads, and a SORT only
// where the upstream sorts.
func (r *relay) searchesInside(q *searchCmd) bool {
	_, known := imapmsg.ToUTF8(nil, strings.ToLower(q.charset))
	return r.s.opts.Config.IMAP.Search.MaxMessages > 0 && q.hasText() && known &&
		(!q.sort || hasCap(r.up.caps, "SORT"))
}

// searchRun is one search of the client's, looked inside S/MIME messages.
type searchRun struct {
	r      *relay
	q      *searchCmd
	mbox   mailbox
	stores uint64
	verb   string // SEARCH or UID SEARCH, and a space
	fverb  string // FETCH or UID FETCH, and a space

	root   *cond
	groups []string          // the criteria of step 2, as sent upstream
	member []map[uint32]bool // the candidates each group matched, by number
	max    int               // imap.search.max_messages
	until  time.Time         // imap.search.timeout from the start
	start  time.Time

	candidates  int
	searched    int    // messages looked into
	notSearched int    // messages a bound left to the upstream
	bound       string // the bound that did, for the client
	matched     []uint32
	unmatched   []uint32
}

func (r *relay) searchInside(tag, name string, raw []byte, q *searchCmd, mbox mailbox) error {
	cfg := r.s.opts.Config.IMAP.Search
	sr := &searchRun{r: r, q: q, mbox: mbox, stores: r.s.opts.StoresGeneration(),
		verb: "SEARCH ", fverb: "FETCH ", max: cfg.MaxMessages, start: time.Now()}
	sr.until = sr.start.Add(cfg.Timeout.D())
	if q.uid {
		sr.verb, sr.fverb = "UID SEARCH ", "UID FETCH "
	}
	sr.root = sr.and(q.keys)
	if err := sr.run(); err != nil {
		return err
	}
	if sr.candidates > 0 {
		r.log.Info("IMAP search looked inside S/MIME messages", "action", "search", "candidates", sr.candidates,
			"searched", sr.searched, "not_searched", sr.notSearched, "dur_ms", time.Since(sr.start).Milliseconds())
	}
	if sr.notSearched > 0 {
		if err := r.forward([]byte(sr.alert())); err != nil {
			return err
		}
	}
	cmd := raw
	if len(sr.matched)+len(sr.unmatched) > 0 {
		cmd = q.rewritten(sr.matched, sr.unmatched)
	}
	return r.sendWhole(tag, name, cmd)
}

// alert tells the client that a bound left messages to the upstream.
func (sr *searchRun) alert() string {
	return fmt.Sprintf("* OK [ALERT] Search incomplete: %d encrypted messages were searched only as stored, not inside, "+
		"because the mail proxy %s; narrow the search (by date, for example) to search inside them\r\n", sr.notSearched, sr.bound)
}

// run does steps 1 to 3. An error is the session's end; everything else
// the upstream refuses leaves the search to the upstream.
func (sr *searchRun) run() error {
	cands, ok, err := sr.numbers(smimeCandidates)
	if err != nil || !ok || len(cands) == 0 {
		return err
	}
	sr.candidates = len(cands)
	if len(sr.groups) > maxSearchGroups {
		sr.notSearched, sr.bound = len(cands), "searches inside only for simpler criteria"
		return nil
	}
	for _, g := range sr.groups {
		nums, ok, err := sr.numbers(smimeCandidates + " " + g)
		if err != nil || !ok {
			return err
		}
		set := make(map[uint32]bool, len(nums))
		for _, n := range nums {
			set[n] = true
		}
		sr.member = append(sr.member, set)
	}
	var need []uint32
	for _, n := range cands {
		if _, known := sr.root.eval(n, sr.member, nil); !known {
			need = append(need, n)
		}
	}
	slices.Sort(need)
	slices.Reverse(need)
	found, err := sr.classify(need)
	if err != nil {
		return err
	}
	return sr.look(found)
}

// classify finds the S/MIME messages among need, newest first, up to the
// bound.
func (sr *searchRun) classify(need []uint32) ([]*entry, error) {
	var found []*entry
	i := 0
	for i < len(need) && len(found) < sr.max && !sr.late() {
		n := min(len(need)-i, sr.max-len(found), classifyChunk)
		run := sr.fetchRun()
		run.f.set = formatNumSet(need[i : i+n])
		i += n
		ok, err := run.classify(sr.fverb)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // expunged meanwhile: nothing to look into
		}
		for _, e := range run.order {
			if e.kind == kindSMIME {
				found = append(found, e)
			}
		}
	}
	if i < len(need) {
		sr.leftOut(len(need) - i)
	}
	return found, nil
}

// look opens the messages of found, newest first, and evaluates the
// criteria on each, until the time is up.
func (sr *searchRun) look(found []*entry) error {
	r := sr.r
	slices.SortFunc(found, func(a, b *entry) int { return cmp.Compare(b.uid, a.uid) })
	run := sr.fetchRun()
	run.until = sr.until
	for _, e := range found {
		run.add(e)
	}
	for i := 0; i < len(found); {
		if sr.late() {
			sr.leftOut(len(found) - i)
			return nil
		}
		// A segment of at most searchBatch messages, so that the time is
		// looked at often.
		run.order = found[:min(len(found), i+searchBatch)]
		seg, err := run.nextSegment(i)
		if err != nil {
			if r.s.ctx.Err() == nil && sr.late() {
				sr.leftOut(len(found) - i)
				return nil
			}
			return err
		}
		i += len(seg.entries)
		if !seg.oversize {
			err = run.open(sr.fverb, seg.entries)
		}
		for _, e := range seg.entries {
			if e.msg == nil {
				continue // too large to open, or gone: the upstream's answer stands
			}
			sr.searched++
			if v, _ := sr.root.eval(sr.number(e), sr.member, e.msg.describe().Searcher()); v {
				sr.matched = append(sr.matched, e.uid)
			} else {
				sr.unmatched = append(sr.unmatched, e.uid)
			}
			e.msg = nil
		}
		r.s.opts.Budget.Release(seg.reserved)
		if err != nil {
			return err
		}
	}
	return nil
}

// late reports whether the time for looking inside is up.
func (sr *searchRun) late() bool { return time.Now().After(sr.until) }

// leftOut counts n messages a bound left to the upstream, and names the
// bound.
func (sr *searchRun) leftOut(n int) {
	sr.notSearched += n
	if sr.late() {
		sr.bound = "searches inside for at most " + sr.r.s.opts.Config.IMAP.Search.Timeout.D().String() + " per search"
	} else {
		sr.bound = "searches inside at most " + strconv.Itoa(sr.max) + " messages per search"
	}
}

// fetchRun is a run of the FETCH machinery for this search's own FETCHes.
func (sr *searchRun) fetchRun() *fetchRun {
	return &fetchRun{r: sr.r, f: &fetchCmd{uid: sr.q.uid}, mbox: sr.mbox, stores: sr.stores,
		byUID: map[uint32]*entry{}, bySeq: map[uint32]*entry{}}
}

// number is a message's number in the client's numbering.
func (sr *searchRun) number(e *entry) uint32 {
	if sr.q.uid {
		return e.uid
	}
	return e.seq
}

// numbers runs a SEARCH of the proxy's own, in the client's numbering. ok
// is false when the upstream refused it.
func (sr *searchRun) numbers(criteria string) (nums []uint32, ok bool, err error) {
	cmd := sr.verb
	if hasCap(sr.r.up.caps, "ESEARCH") {
		cmd += "RETURN (ALL) "
	}
	a := &searchAnswer{r: sr.r}
	st, err := sr.r.own(cmd+criteria, a)
	if err != nil || !st.ok() || a.bad {
		return nil, false, err
	}
	return a.nums, true, nil
}

// searchAnswer reads the answer to a SEARCH of the proxy's own: the
// numbers of its SEARCH or ESEARCH response.
type searchAnswer struct {
	r    *relay
	nums []uint32
	bad  bool // a response the relay could not read
}

func (a *searchAnswer) untagged(kind string, _ uint32, line []byte) error {
	switch kind {
	case "SEARCH":
		// * SEARCH 2 3 5 (MODSEQ 9)
		for _, f := range bytes.Fields(trimEOL(line))[2:] {
			if f[0] == '(' {
				break
			}
			n, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				a.bad = true
				return nil
			}
			a.nums = append(a.nums, uint32(n))
		}
		return nil
	case "ESEARCH":
		// * ESEARCH (TAG "spx1") UID ALL 2:3,5
		fields := bytes.Fields(trimEOL(line))
		for i, f := range fields {
			if eqFold(f, "ALL") && i+1 < len(fields) {
				nums, ok := parseResultSet(string(fields[i+1]))
				a.nums, a.bad = nums, !ok
			}
		}
		return nil
	case "FETCH":
		// A flag update: the client's, at the end of its command.
		_, err := a.r.ownResponse(line, func(string, bool, *scanner) (bool, error) { return false, nil })
		return err
	case "EXPUNGE", "VANISHED", "EXISTS":
		return a.r.forwardRenumbering(line)
	}
	return a.r.forward(line)
}

// maxResults bounds the numbers of one answer to an own SEARCH: a
// mailbox's messages, many times over.
const maxResults = 1 << 24

// parseResultSet reads ESEARCH's ALL, a set of numbers without "*", of at
// most maxResults numbers.
func parseResultSet(s string) ([]uint32, bool) {
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, rng := strings.Cut(part, ":")
		a, err1 := strconv.ParseUint(lo, 10, 32)
		b, err2 := a, error(nil)
		if rng {
			b, err2 = strconv.ParseUint(hi, 10, 32)
		}
		if err1 != nil || err2 != nil {
			return nil, false
		}
		total += int(max(a, b)-min(a, b)) + 1
		if total > maxResults {
			return nil, false
		}
	}
	return parseNumSet(s)
}

// cond is the criteria as the relay evaluates them for one message: the
// parts without text keys are the upstream's answers (step 2), the text
// keys are matched against the message as served.
type cond struct {
	op     condOp
	kids   []*cond
	group  int    // condGroup: the index of its answer
	key    string // condText: BODY, TEXT, or HEADER for a field
	field  string // condText with HEADER: the field's name
	needle string // condText: folded
}

type condOp uint8

const (
	condAnd condOp = iota
	condOr
	condNot
	condGroup
	condText
)

// and makes a list of keys one cond: its keys without text keys are one
// group, searched upstream together.
func (sr *searchRun) and(keys []*searchKey) *cond {
	c := &cond{op: condAnd}
	var plain []*searchKey
	for _, k := range keys {
		if k.hasText() {
			c.kids = append(c.kids, sr.node(k))
		} else {
			plain = append(plain, k)
		}
	}
	if len(plain) > 0 {
		c.kids = append(c.kids, sr.group(plain))
	}
	return c
}

// node makes a cond of a key that holds text keys.
func (sr *searchRun) node(k *searchKey) *cond {
	switch k.name {
	case "(":
		return sr.and(k.kids)
	case "OR":
		return &cond{op: condOr, kids: []*cond{sr.one(k.kids[0]), sr.one(k.kids[1])}}
	case "NOT":
		return &cond{op: condNot, kids: []*cond{sr.one(k.kids[0])}}
	case "FUZZY":
		return sr.one(k.kids[0])
	}
	value := k.args[len(k.args)-1]
	text, _ := imapmsg.ToUTF8(value, strings.ToLower(sr.q.charset))
	c := &cond{op: condText, key: k.name, needle: imapmsg.Fold(text)}
	switch k.name {
	case "HEADER":
		c.field = string(k.args[0])
	case "BODY", "TEXT":
	default:
		c.key, c.field = "HEADER", k.name
	}
	return c
}

func (sr *searchRun) one(k *searchKey) *cond {
	if k.hasText() {
		return sr.node(k)
	}
	return sr.group([]*searchKey{k})
}

func (sr *searchRun) group(keys []*searchKey) *cond {
	sr.groups = append(sr.groups, string(appendCriteria(nil, keys)))
	return &cond{op: condGroup, group: len(sr.groups) - 1}
}

// eval is c's value for the message numbered num, whose text s holds (nil
// when it is not opened). known is false when the value depends on text
// that s does not give.
func (c *cond) eval(num uint32, member []map[uint32]bool, s *imapmsg.Searcher) (v, known bool) {
	switch c.op {
	case condGroup:
		return member[c.group][num], true
	case condText:
		if s == nil {
			return false, false
		}
		return c.match(s), true
	case condNot:
		v, known := c.kids[0].eval(num, member, s)
		return !v, known
	case condOr:
		known = true
		for _, k := range c.kids {
			v, kk := k.eval(num, member, s)
			if kk && v {
				return true, true
			}
			known = known && kk
		}
		return false, known
	}
	known = true
	for _, k := range c.kids {
		v, kk := k.eval(num, member, s)
		if kk && !v {
			return false, true
		}
		known = known && kk
	}
	return known, known
}

func (c *cond) match(s *imapmsg.Searcher) bool {
	switch {
	case c.key == "HEADER":
		return s.Header(c.field, c.needle)
	case c.needle == "":
		return true
	case c.key == "BODY":
		return s.Body(c.needle)
	}
	return s.Text(c.needle)
}

// rewritten is the command with its criteria C made
// "OR (C) UID <matched> NOT UID <unmatched>", a part left out when it has
// no message.
func (q *searchCmd) rewritten(matched, unmatched []uint32) []byte {
	b := []byte(q.prefix)
	if len(matched) > 0 {
		b = append(b, "OR ("...)
		b = appendCriteria(b, q.keys)
		b = append(b, ") UID "...)
		b = append(b, formatNumSet(matched)...)
	} else {
		b = appendCriteria(b, q.keys)
	}
	if len(unmatched) > 0 {
		b = append(b, " NOT UID "...)
		b = append(b, formatNumSet(unmatched)...)
	}
	return append(b, "\r\n"...)
}
