package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"smimeproxy/cms"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

// FETCH goes in passes, and never sends a second upstream command while a
// FETCH is still being read:
//
//  1. When the client asks only for what does not depend on the content
//     (UID, FLAGS, INTERNALDATE), its FETCH is relayed as it is: one
//     upstream FETCH whatever the number of messages.
//  2. Otherwise the messages are first classified from their Content-Type
//     and Content-Disposition fields (BODY.PEEK[HEADER.FIELDS ...], a few
//     hundred bytes each). The upstream's BODYSTRUCTURE is not used for
//     this: a non-compliant one makes go-imap's client drop the connection,
//     and one that lies would hide an S/MIME message. When the client asks
//     for headers only, these fields come with its FETCH, and each answer
//     is held until they are read (fetchHeaders).
//  3. The plain messages' FETCH is relayed, their bodies streamed from the
//     upstream to the client.
//  4. The S/MIME messages not in the cache are fetched whole (BODY[] when
//     the client's request sets \Seen, BODY.PEEK[] otherwise, so that \Seen
//     changes exactly as it would have), opened, and every item is answered
//     from the served message.

// classifyFields are the header fields smime.Classify reads.
var classifyFields = []string{"Content-Type", "Content-Disposition"}

// maxClassifyHeader bounds what is read of those fields per message.
const maxClassifyHeader = 64 << 10

// fetchedMsg is one message of a FETCH that needs its content.
type fetchedMsg struct {
	seq      uint32 // the upstream's
	uid      imap.UID
	kind     smime.Kind
	flags    []imap.Flag // from the classifying pass, when asked for
	newFlags []imap.Flag // after the upstream set \Seen
	date     time.Time
	opened   *openedMessage
}

// needsContent reports whether any item asked for depends on the message's
// content, which an S/MIME message changes.
func needsContent(o *imap.FetchOptions) bool {
	return o.BodyStructure != nil || o.Envelope || o.RFC822Size ||
		len(o.BodySection) > 0 || len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0
}

// setsSeen reports whether the request sets \Seen, as BODY[] and BINARY[]
// without .PEEK do.
func setsSeen(o *imap.FetchOptions) bool {
	for _, bs := range o.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range o.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

// isSMIME reports whether a message of kind k is opened before serving.
func isSMIME(k smime.Kind) bool {
	return k == smime.Encrypted || k == smime.Signed || k == smime.SignedOpaque
}

// classifyHeader says what a message is from its Content-Type and
// Content-Disposition fields, as the upstream returned them. Anything
// unreadable is plain: it is then passed on untouched.
func classifyHeader(b []byte) smime.Kind {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return smime.Plain
	}
	return smime.Classify(h)
}

func (s *imapSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) (err error) {
	defer s.finish("FETCH", &err)
	numSet, ok := s.translate(numSet)
	if !ok {
		// Every message asked for is gone: nothing to answer (RFC 2180 4.1.1).
		return nil
	}
	if !needsContent(opts) {
		return s.relayFetch(w, numSet, opts)
	}
	if headersOnly(opts) {
		return s.fetchHeaders(w, numSet, opts)
	}
	msgs, err := s.classify(numSet, opts)
	if err != nil {
		return err
	}
	var plain imap.UIDSet
	var secure []*fetchedMsg
	for _, m := range msgs {
		if isSMIME(m.kind) {
			secure = append(secure, m)
		} else {
			plain.AddNum(m.uid)
		}
	}
	if len(plain) > 0 {
		if err := s.relayFetch(w, plain, opts); err != nil {
			return err
		}
	}
	if len(secure) > 0 {
		return s.fetchSecure(w, secure, opts)
	}
	return nil
}

// classify is pass 2: the UID and kind of every message asked for, with
// the flags and date an S/MIME message's answer will need.
func (s *imapSession) classify(numSet imap.NumSet, opts *imap.FetchOptions) ([]*fetchedMsg, error) {
	want := &imap.FetchOptions{
		UID:          true,
		Flags:        opts.Flags || setsSeen(opts),
		InternalDate: opts.InternalDate,
		BodySection: []*imap.FetchItemBodySection{{
			Specifier: imap.PartSpecifierHeader, HeaderFields: classifyFields, Peek: true,
		}},
	}
	var out []*fetchedMsg
	_, data := s.timeouts()
	err := s.do("FETCH", data, func(up *imapUpstream, progress func()) error {
		cmd := up.client.Fetch(numSet, want)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			progress()
			m := &fetchedMsg{seq: msg.SeqNum}
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch item := item.(type) {
				case imapclient.FetchItemDataUID:
					m.uid = item.UID
				case imapclient.FetchItemDataFlags:
					m.flags = item.Flags
				case imapclient.FetchItemDataInternalDate:
					m.date = item.Time
				case imapclient.FetchItemDataBodySection:
					if item.Literal == nil {
						continue
					}
					b, err := readLiteral(item.Literal, maxClassifyHeader, progress)
					if err != nil {
						s.abandon(up, cmd)
						return err
					}
					m.kind = classifyHeader(b)
				}
			}
			if m.uid != 0 {
				out = append(out, m)
			}
		}
		return cmd.Close()
	})
	return out, err
}

// headersOnly reports whether the request asks for no section but
// headers of the whole message: what a client listing a mailbox asks (the
// fields it shows, the size, the envelope, the structure). The answer for
// one message is then small.
func headersOnly(o *imap.FetchOptions) bool {
	if len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0 {
		return false
	}
	for _, bs := range o.BodySection {
		if bs.Specifier != imap.PartSpecifierHeader || len(bs.Part) > 0 {
			return false
		}
	}
	return true
}

// maxHeld bounds a literal held while its message is classified; a message
// with a larger header is asked for again and streamed.
const maxHeld = 1 << 20

// fetchHeaders answers a headers-only FETCH in one upstream FETCH, which
// also brings the classifying fields: each message's answer is held until
// they say whether to pass it on or to answer from the opened message.
func (s *imapSession) fetchHeaders(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) error {
	cls := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: classifyFields, Peek: true}
	want := *opts
	want.UID = true
	want.BodySection = append(slices.Clone(opts.BodySection), cls)
	var (
		secure []*fetchedMsg
		again  imap.UIDSet
		cut    error
	)
	_, data := s.timeouts()
	err := s.do("FETCH", data, func(up *imapUpstream, progress func()) error {
		cmd := up.client.Fetch(numSet, &want)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			progress()
			h, err := holdMessage(msg, cls, progress)
			if err != nil {
				s.abandon(up, cmd)
				return err
			}
			switch {
			case h.uid == 0:
				continue
			case h.oversize:
				again.AddNum(h.uid)
				continue
			case isSMIME(h.kind):
				m := &fetchedMsg{seq: msg.SeqNum, uid: h.uid, kind: h.kind, date: h.date}
				if opts.Flags {
					m.flags = h.flags
				} else if h.flags != nil {
					// Not asked for, so sent because \Seen changed.
					m.newFlags = h.flags
				}
				secure = append(secure, m)
				continue
			}
			seq := s.view.toClient(msg.SeqNum)
			if seq == 0 {
				continue
			}
			i := 0
			next := func() imapclient.FetchItemData {
				if i == len(h.items) {
					return nil
				}
				i++
				return h.items[i-1]
			}
			if err := relayMessage(w.CreateMessage(seq), next, opts, progress); err != nil {
				cut = s.fatal(err)
				s.abandon(up, cmd)
				return err
			}
		}
		return cmd.Close()
	})
	if cut != nil {
		return cut
	}
	if err != nil {
		return err
	}
	if len(again) > 0 {
		if err := s.relayFetch(w, again, opts); err != nil {
			return err
		}
	}
	if len(secure) > 0 {
		return s.fetchSecure(w, secure, opts)
	}
	return nil
}

// heldMessage is one upstream FETCH response read into memory.
type heldMessage struct {
	items    []imapclient.FetchItemData
	uid      imap.UID
	kind     smime.Kind
	flags    []imap.Flag
	date     time.Time
	oversize bool
}

func holdMessage(msg *imapclient.FetchMessageData, cls *imap.FetchItemBodySection, progress func()) (*heldMessage, error) {
	h := &heldMessage{}
	classified := false
	for item := msg.Next(); item != nil; item = msg.Next() {
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			h.uid = it.UID
		case imapclient.FetchItemDataFlags:
			h.flags = it.Flags
		case imapclient.FetchItemDataInternalDate:
			h.date = it.Time
		case imapclient.FetchItemDataBodySection:
			if it.Literal == nil {
				break
			}
			if it.Literal.Size() > maxHeld {
				h.oversize = true
				continue
			}
			b, err := readLiteral(it.Literal, maxHeld, progress)
			if err != nil {
				return nil, err
			}
			if !classified && it.MatchCommand(cls) {
				h.kind, classified = classifyHeader(b), true
			}
			item = imapclient.FetchItemDataBodySection{Section: it.Section, Literal: heldLiteral{bytes.NewReader(b)}}
		}
		h.items = append(h.items, item)
	}
	return h, nil
}

// heldLiteral is a literal read into memory.
type heldLiteral struct{ *bytes.Reader }

// Size is the literal's whole size, however much was read.
func (l heldLiteral) Size() int64 { return l.Reader.Size() }

// relayFetch passes the upstream's FETCH answer on, item by item; literals
// are copied from one connection to the other as they arrive.
func (s *imapSession) relayFetch(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) error {
	want := *opts
	want.UID = true // to match the answers to the command
	_, data := s.timeouts()
	var cut error
	err := s.do("FETCH", data, func(up *imapUpstream, progress func()) error {
		cmd := up.client.Fetch(numSet, &want)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			progress()
			seq := s.view.toClient(msg.SeqNum)
			if seq == 0 {
				continue
			}
			if err := relayMessage(w.CreateMessage(seq), msg.Next, opts, progress); err != nil {
				// Half an answer is on the wire: the client connection
				// goes, and the upstream's with it, which also lets
				// imapclient's reader finish.
				cut = s.fatal(err)
				s.abandon(up, cmd)
				return err
			}
		}
		return cmd.Close()
	})
	if cut != nil {
		return cut
	}
	return err
}

// relayMessage writes one upstream FETCH response to the client. The
// response is closed in any case: until it is, no other response can be
// written, not even the BYE of a shutdown.
func relayMessage(rw *imapserver.FetchResponseWriter, next func() imapclient.FetchItemData, opts *imap.FetchOptions, progress func()) error {
	if err := relayItems(rw, next, opts, progress); err != nil {
		rw.Close()
		return err
	}
	return rw.Close()
}

func relayItems(rw *imapserver.FetchResponseWriter, next func() imapclient.FetchItemData, opts *imap.FetchOptions, progress func()) error {
	bodyUsed := make([]bool, len(opts.BodySection))
	binUsed := make([]bool, len(opts.BinarySection))
	wroteFlags, wroteStructure := false, false
	for item := next(); item != nil; item = next() {
		switch item := item.(type) {
		case imapclient.FetchItemDataUID:
			if opts.UID {
				rw.WriteUID(item.UID)
			}
		case imapclient.FetchItemDataFlags:
			// Asked for, or sent because \Seen changed: either way the
			// client is to know.
			if !wroteFlags {
				rw.WriteFlags(item.Flags)
				wroteFlags = true
			}
		case imapclient.FetchItemDataInternalDate:
			if opts.InternalDate {
				rw.WriteInternalDate(item.Time)
			}
		case imapclient.FetchItemDataRFC822Size:
			if opts.RFC822Size {
				rw.WriteRFC822Size(item.Size)
			}
		case imapclient.FetchItemDataEnvelope:
			if opts.Envelope {
				rw.WriteEnvelope(item.Envelope)
			}
		case imapclient.FetchItemDataBodyStructure:
			if opts.BodyStructure != nil && !wroteStructure {
				rw.WriteBodyStructure(sanitizeStructure(item.BodyStructure))
				wroteStructure = true
			}
		case imapclient.FetchItemDataBodySection:
			i := nextUnused(opts.BodySection, bodyUsed, item.MatchCommand)
			if i < 0 {
				continue
			}
			bodyUsed[i] = true
			if err := copyLiteral(rw.WriteBodySection(opts.BodySection[i], literalSize(item.Literal)), item.Literal, progress); err != nil {
				return err
			}
		case imapclient.FetchItemDataBinarySection:
			i := nextUnused(opts.BinarySection, binUsed, item.MatchCommand)
			if i < 0 {
				continue
			}
			binUsed[i] = true
			if err := copyLiteral(rw.WriteBinarySection(opts.BinarySection[i], literalSize(item.Literal)), item.Literal, progress); err != nil {
				return err
			}
		case imapclient.FetchItemDataBinarySectionSize:
			rw.WriteBinarySectionSize(&imap.FetchItemBinarySectionSize{Part: item.Part}, item.Size)
		}
	}
	return nil
}

func literalSize(lit imap.LiteralReader) int64 {
	if lit == nil {
		return 0
	}
	return lit.Size()
}

// errTruncated is an upstream literal that ended before its announced
// size: imapclient reports that as a plain EOF.
var errTruncated = errors.New("imap: upstream literal truncated")

// copyLiteral streams an upstream literal into the client's; a NIL one
// becomes empty.
func copyLiteral(wc io.WriteCloser, lit imap.LiteralReader, progress func()) error {
	if lit != nil {
		n, err := io.Copy(progressWriter{wc, progress}, lit)
		if err == nil && n != lit.Size() {
			err = errTruncated
		}
		if err != nil {
			wc.Close()
			return fmt.Errorf("imap: copy literal: %w", err)
		}
	}
	return wc.Close()
}

// preallocLimit bounds the memory reserved for a literal on the strength
// of the size the upstream announced; beyond it the buffer grows with what
// actually arrives.
const preallocLimit = 64 << 20

// readLiteral reads up to max bytes of an upstream literal, failing when
// it ends early.
func readLiteral(lit imap.LiteralReader, max int64, progress func()) ([]byte, error) {
	want := min(lit.Size(), max)
	var buf bytes.Buffer
	buf.Grow(int(min(want, preallocLimit)))
	n, err := io.CopyN(&buf, progressReader{lit, progress}, want)
	if err == nil && n != want || errors.Is(err, io.EOF) {
		err = errTruncated
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// fetchSecure is pass 4: S/MIME messages, from the cache or fetched whole
// and opened, then answered from the served message.
func (s *imapSession) fetchSecure(w *imapserver.FetchWriter, msgs []*fetchedMsg, opts *imap.FetchOptions) error {
	seen := setsSeen(opts)
	byUID := make(map[imap.UID]*fetchedMsg, len(msgs))
	var misses, hits imap.UIDSet
	for _, m := range msgs {
		byUID[m.uid] = m
		if o, ok := s.srv.cache.get(s.cacheKey(m.uid)); ok {
			m.opened = o
			hits.AddNum(m.uid)
		} else {
			misses.AddNum(m.uid)
		}
	}
	_, data := s.timeouts()
	if len(misses) > 0 {
		keys, locked := s.decryptionKeys()
		verify := smime.VerifyOptions{
			Roots:         s.opts.Certs.Roots(),
			Intermediates: s.opts.Certs.Intermediates(),
			AllowSHA1:     s.opts.Config.Trust.AllowSHA1,
		}
		want := &imap.FetchOptions{UID: true, Flags: seen, BodySection: []*imap.FetchItemBodySection{{Peek: !seen}}}
		err := s.do("FETCH", data, func(up *imapUpstream, progress func()) error {
			cmd := up.client.Fetch(misses, want)
			for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
				progress()
				var (
					uid   imap.UID
					raw   []byte
					got   bool
					flags []imap.Flag
				)
				for item := msg.Next(); item != nil; item = msg.Next() {
					switch item := item.(type) {
					case imapclient.FetchItemDataUID:
						uid = item.UID
					case imapclient.FetchItemDataFlags:
						flags = item.Flags
					case imapclient.FetchItemDataBodySection:
						if item.Literal == nil {
							continue
						}
						b, err := readLiteral(item.Literal, item.Literal.Size(), progress)
						if err != nil {
							s.abandon(up, cmd)
							return err
						}
						raw, got = b, true
					}
				}
				m := byUID[uid]
				if m == nil || !got {
					continue
				}
				if flags != nil {
					m.newFlags = flags
				}
				m.opened = s.open(uid, raw, keys, locked, &verify)
			}
			return cmd.Close()
		})
		if err != nil {
			return err
		}
	}
	if seen && len(hits) > 0 {
		// The cache spared the body, but the client's request still sets
		// \Seen: a small non-peek section does that upstream.
		want := &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{
			Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Content-Type"},
		}}}
		err := s.do("FETCH", data, func(up *imapUpstream, progress func()) error {
			cmd := up.client.Fetch(hits, want)
			for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
				progress()
				buf, err := msg.Collect()
				if err != nil {
					s.abandon(up, cmd)
					return err
				}
				if m := byUID[buf.UID]; m != nil && buf.Flags != nil {
					m.newFlags = buf.Flags
				}
			}
			return cmd.Close()
		})
		if err != nil {
			return err
		}
	}
	for _, m := range msgs {
		if m.opened == nil {
			continue // expunged meanwhile
		}
		seq := s.view.toClient(m.seq)
		if seq == 0 {
			continue
		}
		if err := s.writeOpened(w.CreateMessage(seq), m, opts); err != nil {
			return s.fatal(err)
		}
	}
	return nil
}

type progressReader struct {
	r        io.Reader
	progress func()
}

func (p progressReader) Read(b []byte) (int, error) {
	p.progress()
	return p.r.Read(b)
}

func (s *imapSession) cacheKey(uid imap.UID) cacheKey {
	return cacheKey{gen: s.gen, user: s.user, mailbox: s.mbox.name, uidValidity: s.mbox.uidValidity, uid: uid}
}

// writeOpened answers every item from the served message: sizes, envelope,
// structure and sections all come from the same bytes. UID, flags and date
// are the upstream's.
func (s *imapSession) writeOpened(rw *imapserver.FetchResponseWriter, m *fetchedMsg, opts *imap.FetchOptions) error {
	items, err := openedItems(m.opened, opts)
	if err != nil {
		// A message that go-message cannot take apart still gets its
		// flags; the log says why its content is missing.
		s.log.Error("IMAP cannot answer from an opened message", "uid", m.uid, "err", err)
	}
	if opts.UID {
		rw.WriteUID(m.uid)
	}
	flags, changed := m.flags, false
	if m.newFlags != nil {
		changed = !sameFlags(m.flags, m.newFlags)
		flags = m.newFlags
	}
	if opts.Flags || changed {
		rw.WriteFlags(flags)
	}
	if opts.InternalDate {
		rw.WriteInternalDate(m.date)
	}
	if items == nil {
		return rw.Close()
	}
	if opts.RFC822Size {
		rw.WriteRFC822Size(int64(len(m.opened.raw)))
	}
	if opts.Envelope {
		rw.WriteEnvelope(items.envelope)
	}
	if opts.BodyStructure != nil {
		rw.WriteBodyStructure(items.structure)
	}
	for i, bs := range opts.BodySection {
		if err := writeBytes(rw.WriteBodySection(bs, int64(len(items.body[i]))), items.body[i]); err != nil {
			rw.Close()
			return err
		}
	}
	for i, bs := range opts.BinarySection {
		if err := writeBytes(rw.WriteBinarySection(bs, int64(len(items.binary[i]))), items.binary[i]); err != nil {
			rw.Close()
			return err
		}
	}
	for i, bs := range opts.BinarySectionSize {
		rw.WriteBinarySectionSize(bs, items.binarySize[i])
	}
	return rw.Close()
}

// contentItems are the content items of one answer, computed before a byte
// of it is written.
type contentItems struct {
	envelope   *imap.Envelope
	structure  imap.BodyStructure
	body       [][]byte
	binary     [][]byte
	binarySize []uint32
}

// openedItems computes the content items asked for from m. go-message is
// not known to panic on any input, but the answer must not die with the
// connection if it ever does.
func openedItems(m *openedMessage, opts *imap.FetchOptions) (items *contentItems, err error) {
	defer func() {
		if v := recover(); v != nil {
			items, err = nil, fmt.Errorf("imap: extracting items: panic: %v", v)
		}
	}()
	items = &contentItems{}
	if opts.Envelope {
		items.envelope = m.Envelope()
	}
	if opts.BodyStructure != nil {
		items.structure = m.Structure()
	}
	for _, bs := range opts.BodySection {
		items.body = append(items.body, imapserver.ExtractBodySection(bytes.NewReader(m.raw), bs))
	}
	for _, bs := range opts.BinarySection {
		items.binary = append(items.binary, imapserver.ExtractBinarySection(bytes.NewReader(m.raw), bs))
	}
	for _, bs := range opts.BinarySectionSize {
		items.binarySize = append(items.binarySize, imapserver.ExtractBinarySectionSize(bytes.NewReader(m.raw), bs))
	}
	return items, nil
}

func writeBytes(wc io.WriteCloser, b []byte) error {
	if _, err := wc.Write(b); err != nil {
		wc.Close()
		return err
	}
	return wc.Close()
}

func sameFlags(a, b []imap.Flag) bool {
	if len(a) != len(b) {
		return false
	}
	for _, f := range a {
		if !slices.ContainsFunc(b, func(g imap.Flag) bool { return strings.EqualFold(string(f), string(g)) }) {
			return false
		}
	}
	return true
}

// decryptionKeys are the keys of the addresses the logged-in user may read
// for, and no one else's. locked reports a keystore that holds no key
// usable now.
func (s *imapSession) decryptionKeys() (keys []userKey, locked bool) {
	if s.opts.Keys.Locked() {
		return nil, true
	}
	for _, addr := range s.opts.Policy.Addresses(s.user) {
		kps, err := s.opts.Keys.DecryptionKeys(addr)
		if err != nil {
			if errors.Is(err, keystore.ErrLocked) {
				return nil, true
			}
			continue // no identity for this address
		}
		for _, kp := range kps {
			keys = append(keys, userKey{addr: addr, key: smime.KeyPair{Cert: kp.Cert, Key: kp.Key}})
		}
	}
	return keys, false
}

// open opens one S/MIME message for the logged-in user and caches what the
// client is to be served: the message decrypted, verified and unwrapped
// where that worked, as it was otherwise, always with the field that says
// what was found.
func (s *imapSession) open(uid imap.UID, raw []byte, keys []userKey, locked bool, verify *smime.VerifyOptions) *openedMessage {
	start := time.Now()
	authserv := authservID(s.opts.Config.ServerName)
	pairs := make([]smime.KeyPair, len(keys))
	for i, k := range keys {
		pairs[i] = k.key
	}
	o, err := smime.Open(raw, &smime.OpenOptions{Keys: pairs, Verify: *verify})
	var served []byte
	action, result := "verify", "error"
	if err != nil {
		// Not even an RFC 5322 message: served as it is, saying so.
		v := (&smime.Opened{}).AuthenticationResults(authserv) + " " + comment("not a readable message")
		served = append([]byte(foldField(authResultsField, v)), raw...)
		s.metrics.Opened.WithLabelValues(action, result).Inc()
	} else {
		field := foldField(authResultsField, authResults(authserv, o, keys, locked))
		served = serveOpened(field, o.Message, authserv)
		action, result = s.record(o, locked)
	}
	om := &openedMessage{raw: served}
	if !locked {
		s.srv.cache.put(s.cacheKey(uid), om)
	}
	attrs := []any{"uid", uid, "action", action, "result", result, "bytes", len(raw),
		"dur_ms", time.Since(start).Milliseconds()}
	if o != nil && o.Encrypted && len(o.Recipients) > 0 {
		attrs = append(attrs, "cipher", o.Cipher.String())
	}
	if o != nil && len(o.Signatures) > 0 {
		statuses := make([]string, len(o.Signatures))
		for i, sig := range o.Signatures {
			statuses[i] = sig.Status.String()
		}
		attrs = append(attrs, "signatures", strings.Join(statuses, ","))
	}
	s.log.Info("S/MIME message opened", attrs...)
	return om
}

// record counts what Open found and harvests the certificates of signers
// whose signature verified and whose chain validated. It returns the action
// and result for the log line.
func (s *imapSession) record(o *smime.Opened, locked bool) (action, result string) {
	action, result = "verify", "none"
	if o.Encrypted {
		action, result = "decrypt", decryptResult(o, locked)
		s.metrics.Opened.WithLabelValues("decrypt", result).Inc()
	}
	for i, sig := range o.Signatures {
		r := verifyResult(sig.Status)
		s.metrics.Opened.WithLabelValues("verify", r).Inc()
		if !o.Encrypted && i == 0 {
			result = r
		}
		if sig.Status != smime.StatusValid || sig.Signer == nil {
			continue
		}
		if err := s.opts.Certs.Harvest(sig.Signer, sig.EncryptionCert, sig.SigningTime, sig.Capabilities); err != nil {
			s.log.Warn("harvesting a signer's certificate failed", "err", err)
			continue
		}
		s.metrics.Harvested.Inc()
	}
	return action, result
}

func decryptResult(o *smime.Opened, locked bool) string {
	var unsup *cms.UnsupportedError
	switch {
	case o.Decrypted:
		return "ok"
	case locked:
		return "locked"
	case errors.Is(o.DecryptErr, cms.ErrNoRecipient):
		return "no_key"
	case errors.Is(o.DecryptErr, cms.ErrDecrypt):
		return "failed"
	case errors.As(o.DecryptErr, &unsup):
		return "unsupported"
	}
	return "malformed"
}

func verifyResult(st smime.Status) string {
	if st == smime.StatusValid {
		return "ok"
	}
	return strings.ReplaceAll(st.String(), "-", "_")
}

// authservID names this proxy in the fields it adds: the configured
// server_name, else the host name.
func authservID(serverName string) string {
	if serverName != "" {
		return serverName
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// nextUnused returns the index of the first section the client asked for that
// matches and has not been answered yet, or -1: a client may ask for the same
// section twice, and each request gets its own answer.
func nextUnused[T any](asked []T, used []bool, matches func(T) bool) int {
	for i, a := range asked {
		if !used[i] && matches(a) {
			return i
		}
	}
	return -1
}
