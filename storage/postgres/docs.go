package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"

	"github.com/jackc/pgx/v5"

	"smimeproxy/storage"
)

// Docs returns the documents of one store: "keystore" or "certcache".
func (db *DB) Docs(store string) storage.Docs { return &docs{db: db, store: store} }

type docs struct {
	db    *DB
	store string
}

var _ storage.Docs = (*docs)(nil)

func (d *docs) String() string { return d.store + " in " + d.db.name }

func (d *docs) Where(name string) string { return d.store + "/" + name + " in " + d.db.name }

func (d *docs) Available() error { return d.db.Available() }

// Changed compares the generation the last poll read with the snapshot's.
// While the database cannot be reached it reports no change: a reload
// would only wait for the timeout.
func (d *docs) Changed(snap *storage.Snapshot) bool {
	gen, ok := snap.Mark.(int64)
	d.db.mu.Lock()
	defer d.db.mu.Unlock()
	return !ok || d.db.pollErr == nil && d.db.gens[d.store] != gen
}

// Load reads a consistent snapshot: one repeatable-read transaction reads
// the generation and the documents.
func (d *docs) Load(ctx context.Context, have func(name, stamp string) bool) (*storage.Snapshot, error) {
	ctx, cancel := d.db.ctx(ctx)
	defer cancel()
	var snap *storage.Snapshot
	err := pgx.BeginTxFunc(ctx, d.db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		gen, err := d.generation(ctx, tx, false)
		if err != nil {
			return err
		}
		snap, err = d.load(ctx, tx, gen, have)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: load %s: %w", d, err)
	}
	d.db.seen(d.store, snap.Mark.(int64))
	return snap, nil
}

// generation reads the store's change counter, locking its row against
// other writers with forUpdate.
func (d *docs) generation(ctx context.Context, tx pgx.Tx, forUpdate bool) (int64, error) {
	q := `SELECT generation FROM smimeproxy_stores WHERE store = $1`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	var gen int64
	err := tx.QueryRow(ctx, q, d.store).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %q", errNoStore, d.store)
	}
	return gen, err
}

// load lists the documents with their generations, then reads those the
// caller does not hold.
func (d *docs) load(ctx context.Context, tx pgx.Tx, gen int64, have func(name, stamp string) bool) (*storage.Snapshot, error) {
	snap := &storage.Snapshot{Docs: map[string]storage.Doc{}, Mark: gen}
	if have == nil {
		rows, err := tx.Query(ctx, `SELECT name, generation, data FROM smimeproxy_documents WHERE store = $1`, d.store)
		if err != nil {
			return nil, err
		}
		return snap, scanDocs(rows, snap)
	}
	rows, err := tx.Query(ctx, `SELECT name, generation FROM smimeproxy_documents WHERE store = $1`, d.store)
	if err != nil {
		return nil, err
	}
	var need []string
	var (
		name string
		g    int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &g}, func() error {
		stamp := strconv.FormatInt(g, 10)
		snap.Docs[name] = storage.Doc{Stamp: stamp}
		if !have(name, stamp) {
			need = append(need, name)
		}
		return nil
	})
	if err != nil || len(need) == 0 {
		return snap, err
	}
	rows, err = tx.Query(ctx, `SELECT name, generation, data FROM smimeproxy_documents WHERE store = $1 AND name = ANY($2)`, d.store, need)
	if err != nil {
		return nil, err
	}
	return snap, scanDocs(rows, snap)
}

func scanDocs(rows pgx.Rows, snap *storage.Snapshot) error {
	var (
		name string
		gen  int64
		data []byte
	)
	_, err := pgx.ForEachRow(rows, []any{&name, &gen, &data}, func() error {
		if data == nil {
			data = []byte{}
		}
		snap.Docs[name] = storage.Doc{Stamp: strconv.FormatInt(gen, 10), Data: data}
		data = nil // a new slice for the next row
		return nil
	})
	return err
}

// Update runs fn in a transaction that first locks the store's row in
// smimeproxy_stores: writers of the store, in every instance, take turns.
// When fn wrote anything the generation moves on, for every instance's
// poll to see.
func (d *docs) Update(ctx context.Context, fn func(tx storage.Tx) error) error {
	ctx, cancel := d.db.ctx(ctx)
	defer cancel()
	var (
		t     *docsTx
		fnErr error
	)
	err := pgx.BeginFunc(ctx, d.db.pool, func(tx pgx.Tx) error {
		gen, err := d.generation(ctx, tx, true)
		if err != nil {
			return err
		}
		t = &docsTx{d: d, ctx: ctx, tx: tx, gen: gen}
		if fnErr = fn(t); fnErr != nil {
			return fnErr
		}
		if !t.dirty {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE smimeproxy_stores SET generation = $2 WHERE store = $1`, d.store, gen+1)
		return err
	})
	switch {
	case fnErr != nil:
		return fnErr // rolled back; the methods' errors say what failed
	case err != nil:
		return fmt.Errorf("postgres: update %s: %w", d, err)
	}
	if t.dirty {
		d.db.seen(d.store, t.gen+1)
	}
	return nil
}

// docsTx is one Update's transaction.
type docsTx struct {
	d     *docs
	ctx   context.Context
	tx    pgx.Tx
	gen   int64 // the store's before this update; writes are stamped gen+1
	dirty bool
}

func (t *docsTx) Load(have func(name, stamp string) bool) (*storage.Snapshot, error) {
	snap, err := t.d.load(t.ctx, t.tx, t.gen, have)
	if err != nil {
		return nil, fmt.Errorf("postgres: load %s: %w", t.d, err)
	}
	return snap, nil
}

func (t *docsTx) Get(name string) ([]byte, error) {
	var data []byte
	err := t.tx.QueryRow(t.ctx, `SELECT data FROM smimeproxy_documents WHERE store = $1 AND name = $2`, t.d.store, name).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: %s: %w", t.d.Where(name), fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read %s: %w", t.d.Where(name), err)
	}
	return data, nil
}

func (t *docsTx) Put(name string, data []byte) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO smimeproxy_documents (store, name, data, generation) VALUES ($1, $2, $3, $4)
		ON CONFLICT (store, name) DO UPDATE SET data = excluded.data, generation = excluded.generation`,
		t.d.store, name, data, t.gen+1)
	if err != nil {
		return fmt.Errorf("postgres: write %s: %w", t.d.Where(name), err)
	}
	t.dirty = true
	return nil
}

func (t *docsTx) Create(name string, data []byte) error {
	tag, err := t.tx.Exec(t.ctx, `INSERT INTO smimeproxy_documents (store, name, data, generation) VALUES ($1, $2, $3, $4)
		ON CONFLICT (store, name) DO NOTHING`, t.d.store, name, data, t.gen+1)
	if err != nil {
		return fmt.Errorf("postgres: write %s: %w", t.d.Where(name), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", t.d.Where(name), fs.ErrExist)
	}
	t.dirty = true
	return nil
}

func (t *docsTx) Delete(name string) error {
	tag, err := t.tx.Exec(t.ctx, `DELETE FROM smimeproxy_documents WHERE store = $1 AND name = $2`, t.d.store, name)
	if err != nil {
		return fmt.Errorf("postgres: remove %s: %w", t.d.Where(name), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", t.d.Where(name), fs.ErrNotExist)
	}
	t.dirty = true
	return nil
}
