package imap

import (
	"container/list"
	"sync"
)

// kindCache remembers what each message is (plain, S/MIME, carrying a
// forged verdict) and its size, which never change for a UID within a
// UIDVALIDITY: a FETCH of messages already met costs the upstream only
// their UIDs, not their headers. It is bounded by its number of entries.
type kindCache struct {
	max int

	mu    sync.Mutex
	order *list.List // of *kindEntry, most recent at the front
	items map[kindKey]*list.Element
}

// kindKey names a message for one user: two users' mailboxes of the same
// name are different mailboxes.
type kindKey struct {
	user        string
	mailbox     string
	uidValidity uint32
	uid         uint32
}

type kindEntry struct {
	key  kindKey
	kind msgKind
	size int64
}

// maxKinds bounds the kind cache: about 100 bytes each.
const maxKinds = 500_000

func newKindCache(max int) *kindCache {
	return &kindCache{max: max, order: list.New(), items: map[kindKey]*list.Element{}}
}

func (c *kindCache) get(k kindKey) (msgKind, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return 0, 0, false
	}
	c.order.MoveToFront(e)
	ke := e.Value.(*kindEntry)
	return ke.kind, ke.size, true
}

func (c *kindCache) put(k kindKey, kind msgKind, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&kindEntry{key: k, kind: kind, size: size})
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Back()).(*kindEntry)
		delete(c.items, old.key)
	}
}

// clear drops everything, as when the proxy's name, which decides what is a
// forged verdict, may have changed.
func (c *kindCache) clear() {
	c.mu.Lock()
	c.order.Init()
	clear(c.items)
	c.mu.Unlock()
}
