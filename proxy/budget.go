package proxy

import (
	"context"
	"errors"
	"sync"
)

// ErrOverBudget: a reservation larger than the whole memory budget, which
// could never be granted.
var ErrOverBudget = errors.New("proxy: larger than the whole memory budget")

// Budget is the memory both proxies may hold messages in
// (memory_budget_mb): each reserves the bytes a message will cost before it
// holds it, and releases them when done; what does not fit gets a temporary
// failure instead of memory. One Budget is shared by both proxies.
//
// Reservations are granted in order: a large one waiting in Acquire is not
// overtaken by smaller ones that came later, so it cannot starve.
type Budget struct {
	metrics *Metrics

	mu      sync.Mutex
	total   int64
	used    int64
	waiters []*budgetWaiter // Acquire calls waiting, oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when granted, or refused with err
	err   error
}

// NewBudget makes a budget of total bytes, shown in m
// (memory_budget_bytes, memory_budget_used_bytes, memory_budget_refused_total).
func NewBudget(total int64, m *Metrics) *Budget {
	b := &Budget{metrics: m, total: total}
	m.BudgetBytes.Set(float64(total))
	return b
}

// Total is the size of the budget in bytes.
func (b *Budget) Total() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// SetTotal changes the size of the budget. Reservations already granted
// stay, even beyond a smaller total; new ones wait until they fit.
func (b *Budget) SetTotal(total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total = total
	b.metrics.BudgetBytes.Set(float64(total))
	b.grant()
}

// TryAcquire reserves n bytes if they fit now, and reports whether it did.
// It never overtakes a waiting Acquire.
func (b *Budget) TryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) > 0 || b.used+n > b.total {
		b.metrics.BudgetRefused.Inc()
		return false
	}
	b.take(n)
	return true
}

// Acquire reserves n bytes, waiting until they fit or ctx ends. It fails
// at once with ErrOverBudget when n exceeds the whole budget.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if n > b.total {
		b.mu.Unlock()
		b.metrics.BudgetRefused.Inc()
		return ErrOverBudget
	}
	if len(b.waiters) == 0 && b.used+n <= b.total {
		b.take(n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return w.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // decided meanwhile: give back what was granted
		if w.err != nil {
			return w.err
		}
		b.used -= n
		b.metrics.BudgetUsed.Set(float64(b.used))
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	b.grant()
	b.metrics.BudgetRefused.Inc()
	return ctx.Err()
}

// Release gives back n bytes reserved earlier.
func (b *Budget) Release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.metrics.BudgetUsed.Set(float64(b.used))
	b.grant()
}

// take reserves n; b.mu is held.
func (b *Budget) take(n int64) {
	b.used += n
	b.metrics.BudgetUsed.Set(float64(b.used))
}

// grant wakes the waiters that fit, oldest first, and refuses those that
// no longer could (SetTotal made the budget smaller); b.mu is held.
func (b *Budget) grant() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		switch {
		case w.n > b.total:
			w.err = ErrOverBudget
			b.metrics.BudgetRefused.Inc()
		case b.used+w.n > b.total:
			return
		default:
			b.take(w.n)
		}
		b.waiters = b.waiters[1:]
		close(w.ready)
	}
}
