package imap

import (
	"container/list"
	"sync"

	"smimeproxy/proxy"
)

// cacheKey names one opened message for one user. The user is the login
// name exactly as given: two logins never share an entry, even for the same
// message of a shared mailbox, since each opens it with their own keys.
// gen is the generation of the options (policy, keys) it was opened under,
// stores that of the keystore and certificate cache, which other instances
// and the CLI change. A login whose user name is unchecked never shares a
// verified one's entries.
type cacheKey struct {
	gen         uint64
	stores      uint64
	user        string
	verified    bool
	mailbox     string
	uidValidity uint32
	uid         uint32
}

// msgCache holds opened messages in memory, least recently used first out,
// bounded by the bytes of the messages. It is never written to disk.
type msgCache struct {
	max     int64 // bytes; 0 turns the cache off
	metrics *proxy.Metrics

	mu    sync.Mutex
	size  int64
	order *list.List // of *cacheEntry, most recent at the front
	items map[cacheKey]*list.Element
}

type cacheEntry struct {
	key cacheKey
	msg *opened
}

func newMsgCache(maxBytes int64, m *proxy.Metrics) *msgCache {
	return &msgCache{max: maxBytes, metrics: m, order: list.New(), items: map[cacheKey]*list.Element{}}
}

func (c *msgCache) get(k cacheKey) (*opened, bool) {
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
func (c *msgCache) put(k cacheKey, m *opened) {
	n := m.size()
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
	c.size -= ce.msg.size()
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
