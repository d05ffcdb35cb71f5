package proxy

import (
	"bufio"
	"bytes"
	"container/list"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

// cacheKey names one opened message for one user. The user is the login
// name exactly as given: two logins never share an entry, even for the same
// message of a shared mailbox, since each opens it with their own keys.
// gen is the generation of the options (policy, keys) it was opened under.
type cacheKey struct {
	gen         uint64
	user        string
	mailbox     string
	uidValidity uint32
	uid         imap.UID
}

// openedMessage is a message as the client is served it: the transformed
// bytes, and what is derived from them once.
type openedMessage struct {
	raw []byte

	once      sync.Once
	envelope  *imap.Envelope
	structure imap.BodyStructure
}

func (m *openedMessage) derive() {
	m.once.Do(func() {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(m.raw)))
		if err == nil {
			m.envelope = imapserver.ExtractEnvelope(h)
		} else {
			m.envelope = &imap.Envelope{}
		}
		m.structure = sanitizeStructure(imapserver.ExtractBodyStructure(bytes.NewReader(m.raw)))
	})
}

// Envelope is the ENVELOPE of the served message.
func (m *openedMessage) Envelope() *imap.Envelope { m.derive(); return m.envelope }

// Structure is the BODYSTRUCTURE of the served message.
func (m *openedMessage) Structure() imap.BodyStructure { m.derive(); return m.structure }

// msgCache holds opened messages in memory, least recently used first out,
// bounded by the bytes of the messages. It is never written to disk.
type msgCache struct {
	max     int64 // bytes; 0 turns the cache off
	metrics *Metrics

	mu    sync.Mutex
	size  int64
	order *list.List // of *cacheEntry, most recent at the front
	items map[cacheKey]*list.Element
}

type cacheEntry struct {
	key cacheKey
	msg *openedMessage
}

func newMsgCache(maxBytes int64, m *Metrics) *msgCache {
	return &msgCache{max: maxBytes, metrics: m, order: list.New(), items: map[cacheKey]*list.Element{}}
}

func (c *msgCache) get(k cacheKey) (*openedMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		c.metrics.CacheMisses.Inc()
		return nil, false
	}
	c.metrics.CacheHits.Inc()
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).msg, true
}

// put stores m, evicting the least recently used until it fits. A message
// larger than the whole cache is not kept.
func (c *msgCache) put(k cacheKey, m *openedMessage) {
	n := int64(len(m.raw))
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.removeLocked(e)
	}
	for c.size+n > c.max {
		c.removeLocked(c.order.Back())
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, msg: m})
	c.size += n
	c.metrics.CacheBytes.Set(float64(c.size))
}

func (c *msgCache) removeLocked(e *list.Element) {
	ce := c.order.Remove(e).(*cacheEntry)
	delete(c.items, ce.key)
	c.size -= int64(len(ce.msg.raw))
	c.metrics.CacheBytes.Set(float64(c.size))
}

// clear drops everything, as when the policy changed whose keys may open what.
func (c *msgCache) clear() {
	c.mu.Lock()
	c.order.Init()
	clear(c.items)
	c.size = 0
	c.metrics.CacheBytes.Set(0)
	c.mu.Unlock()
}

// sanitizeStructure makes a body structure safe for imapserver to write: it
// panics on a multipart without parts, on missing extension data and on a
// message/rfc822 part without a structure, all of which a damaged message or
// a non-compliant upstream can produce.
func sanitizeStructure(bs imap.BodyStructure) imap.BodyStructure {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs == nil {
			break
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureSinglePartExt{}
		}
		if m := bs.MessageRFC822; m != nil {
			m.BodyStructure = sanitizeStructure(m.BodyStructure)
		}
		return bs
	case *imap.BodyStructureMultiPart:
		if bs == nil {
			break
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureMultiPartExt{}
		}
		for i, c := range bs.Children {
			bs.Children[i] = sanitizeStructure(c)
		}
		if len(bs.Children) == 0 {
			// What a multipart without a readable part looks like to a
			// reader: one empty part.
			bs.Children = []imap.BodyStructure{emptyTextPart()}
		}
		return bs
	}
	return emptyTextPart()
}

func emptyTextPart() *imap.BodyStructureSinglePart {
	return &imap.BodyStructureSinglePart{
		Type: "text", Subtype: "plain", Encoding: "7bit",
		Text:     &imap.BodyStructureText{},
		Extended: &imap.BodyStructureSinglePartExt{},
	}
}
