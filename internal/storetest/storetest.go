// Package storetest runs the stores' tests against every kind of storage:
// a directory, and a PostgreSQL database (package internal/pgtest).
package storetest

import (
	"path/filepath"
	"testing"
	"time"

	"smimeproxy/internal/pgtest"
	"smimeproxy/storage"
)

// PollInterval is how often stores in PostgreSQL look for changes others
// made: short, so that tests of what another process wrote are quick.
// Benchmarks set it to postgres.DefaultPollInterval, as deployed.
var PollInterval = 20 * time.Millisecond

// Kind is one kind of storage.
type Kind struct {
	Name string
	// Need skips t (fails it in CI) when this kind cannot run here.
	Need func(t testing.TB)
	// New returns an empty store: a directory laid out by l, made private,
	// or the store called name in a database schema of the test's own.
	New func(t testing.TB, name string, l storage.Layout) *Store
}

// Store is a store made by Kind.New.
type Store struct {
	storage.Docs
	// Again opens the same store anew, as another process would.
	Again func() storage.Docs
}

// Kinds lists every kind, the directory first.
var Kinds = []Kind{
	{
		Name: "dir",
		Need: func(testing.TB) {},
		New: func(t testing.TB, name string, l storage.Layout) *Store {
			dir := filepath.Join(t.TempDir(), name)
			d := storage.OpenDir(dir, l)
			if err := d.Init(); err != nil {
				t.Fatal(err)
			}
			return &Store{Docs: d, Again: func() storage.Docs { return storage.OpenDir(dir, l) }}
		},
	},
	{
		Name: "postgres",
		Need: func(t testing.TB) { pgtest.Start(t) },
		New: func(t testing.TB, name string, _ storage.Layout) *Store {
			srv := pgtest.Start(t)
			u := srv.Schema(t)
			return &Store{Docs: srv.Open(t, u, PollInterval).Docs(name), Again: func() storage.Docs { return srv.Open(t, u, PollInterval).Docs(name) }}
		},
	},
}

// Test is one test of a table that runs against every kind of storage.
type Test struct {
	Name string
	Run  func(t *testing.T, k Kind)
}

// Run runs every test against every kind, as subtests named kind/test.
func Run(t *testing.T, tests []Test) {
	for _, k := range Kinds {
		t.Run(k.Name, func(t *testing.T) {
			k.Need(t)
			for _, tc := range tests {
				t.Run(tc.Name, func(t *testing.T) { tc.Run(t, k) })
			}
		})
	}
}
