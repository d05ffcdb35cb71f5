package proxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"smimeproxy/proxy"
)

func TestBudgetTryAcquire(t *testing.T) {
	m := newMetrics()
	b := proxy.NewBudget(100, m.Metrics)
	if !b.TryAcquire(60) || !b.TryAcquire(40) {
		t.Fatal("TryAcquire within the budget refused")
	}
	if b.TryAcquire(1) {
		t.Fatal("TryAcquire beyond the budget granted")
	}
	if got := m.value(t, "smimeproxy_memory_budget_used_bytes"); got != 100 {
		t.Errorf("memory_budget_used_bytes = %v, want 100", got)
	}
	b.Release(40)
	if !b.TryAcquire(30) {
		t.Error("TryAcquire after a release refused")
	}
	if b.TryAcquire(101) {
		t.Error("TryAcquire of more than the whole budget granted")
	}
	for name, want := range map[string]float64{"smimeproxy_memory_budget_bytes": 100, "smimeproxy_memory_budget_used_bytes": 90, "smimeproxy_memory_budget_refused_total": 2} {
		if got := m.value(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// acquire runs b.Acquire in the background and returns its outcome.
func acquire(ctx context.Context, b *proxy.Budget, n int64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, n) }()
	return done
}

// pending fails the test if done has a result within a moment.
func pending(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned %v, want it to wait", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire still waits")
		return nil
	}
}

// TestBudgetAcquireInOrder: a large reservation waiting is not overtaken by
// smaller ones, and gets its bytes when enough are released.
func TestBudgetAcquireInOrder(t *testing.T) {
	b := proxy.NewBudget(100, newMetrics().Metrics)
	if err := b.Acquire(context.Background(), 70); err != nil {
		t.Fatal(err)
	}
	big := acquire(context.Background(), b, 80)
	pending(t, big, "Acquire(80) with 30 free")
	if b.TryAcquire(10) {
		t.Error("TryAcquire overtook a waiting Acquire")
	}
	small := acquire(context.Background(), b, 10)
	pending(t, small, "Acquire(10) behind Acquire(80)")
	b.Release(70)
	if err := result(t, big); err != nil {
		t.Fatalf("Acquire(80) = %v", err)
	}
	if err := result(t, small); err != nil {
		t.Fatalf("Acquire(10) = %v", err)
	}
	if b.TryAcquire(11) || !b.TryAcquire(10) {
		t.Error("the budget's count is off after the waiters were granted")
	}
}

func TestBudgetAcquireFails(t *testing.T) {
	b := proxy.NewBudget(100, newMetrics().Metrics)
	if err := b.Acquire(context.Background(), 101); !errors.Is(err, proxy.ErrOverBudget) {
		t.Errorf("Acquire(more than the budget) = %v, want ErrOverBudget", err)
	}

	if !b.TryAcquire(100) {
		t.Fatal("TryAcquire(100) refused")
	}
	ctx, cancel := context.WithCancel(context.Background())
	waiting := acquire(ctx, b, 50)
	pending(t, waiting, "Acquire(50) with none free")
	cancel()
	if err := result(t, waiting); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire cancelled = %v, want context.Canceled", err)
	}
	b.Release(100)
	if !b.TryAcquire(100) {
		t.Error("a cancelled Acquire kept its place or its bytes")
	}
	b.Release(100)

	// A budget made smaller refuses a waiter that could no longer fit.
	b.TryAcquire(90)
	waiting = acquire(context.Background(), b, 60)
	pending(t, waiting, "Acquire(60) with 10 free")
	b.SetTotal(50)
	if err := result(t, waiting); !errors.Is(err, proxy.ErrOverBudget) {
		t.Errorf("Acquire(60) after SetTotal(50) = %v, want ErrOverBudget", err)
	}
}
