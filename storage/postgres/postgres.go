// Package postgres keeps the stores' documents (package storage) in a
// PostgreSQL database, so that several smimeproxy instances share one
// keystore and one certificate cache.
//
// Each document is a row holding the bytes a directory store would hold in
// a file: private keys stay sealed under the keystore passphrase, and a dump
// of the database opens nothing without it. A store's writers serialize on
// its row in smimeproxy_stores, whose generation counts the store's
// committed changes; every instance polls the generations (one small query
// per PollInterval) and the stores reload what changed, so a change made by
// one instance or by the CLI reaches the others within a poll interval and
// their next lookup. The poll doubles as the health check: while it fails,
// the stores report themselves unavailable (storage.Docs.Available) and
// keep answering from what they last read.
//
// The schema is versioned; Migrate (smimeproxy store migrate) brings it up
// to date under an advisory lock, so that two instances may run it at once.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for Config.
const (
	DefaultPollInterval = time.Second
	DefaultTimeout      = 10 * time.Second
)

// Config says how to reach the database.
type Config struct {
	// URL is a libpq connection URL or keyword string, such as
	// postgres://smimeproxy@db.example.com/smimeproxy?sslmode=verify-full.
	// What it leaves out comes from the PG* environment variables and
	// ~/.pgpass, as for psql.
	URL string
	// Password, when set, is used instead of any the URL or the
	// environment gives.
	Password string
	// PollInterval is how often the change counters are read; zero:
	// DefaultPollInterval.
	PollInterval time.Duration
	// Timeout bounds each operation, waiting for a connection included;
	// zero: DefaultTimeout.
	Timeout time.Duration
	// Migrate brings the schema up to date at Open; otherwise Open fails
	// on a schema older than this build's (run Migrate).
	Migrate bool
}

// DB is an open database and its watch on the stores' change counters. It
// is safe for concurrent use.
type DB struct {
	pool    *pgxpool.Pool
	name    string
	every   time.Duration
	timeout time.Duration

	mu      sync.Mutex
	gens    map[string]int64 // by store, as last read
	pollErr error            // the last poll's, nil after a good one

	stop chan struct{}
	done chan struct{}
}

// connect opens the pool without touching the database.
func connect(cfg Config) (*pgxpool.Pool, string, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: invalid url: %w", err)
	}
	if cfg.Password != "" {
		pc.ConnConfig.Password = cfg.Password
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "smimeproxy"
	}
	cc := pc.ConnConfig
	name := "postgres://" + net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) + "/" + cc.Database
	if sp := cc.RuntimeParams["search_path"]; sp != "" {
		name += "?search_path=" + sp
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: %s: %w", name, err)
	}
	return pool, name, nil
}

func (cfg Config) timeout() time.Duration {
	if cfg.Timeout > 0 {
		return cfg.Timeout
	}
	return DefaultTimeout
}

// Migrate brings the schema of the database cfg names up to this build's
// Version and returns the versions before and after. It is safe to run
// from several processes at once: they take turns.
func Migrate(ctx context.Context, cfg Config) (from, to int, err error) {
	pool, name, err := connect(cfg)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	from, to, err = migrate(ctx, pool)
	if err != nil {
		return 0, 0, fmt.Errorf("%w (%s)", err, name)
	}
	return from, to, nil
}

// Open connects to the database, checks its schema (migrating it first
// with cfg.Migrate), reads the change counters and starts watching them.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	pool, name, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	db := &DB{
		pool: pool, name: name, every: cfg.PollInterval, timeout: cfg.timeout(),
		gens: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	if db.every <= 0 {
		db.every = DefaultPollInterval
	}
	if err := db.check(ctx, cfg.Migrate); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: %w", name, err)
	}
	go db.watch()
	return db, nil
}

func (db *DB) check(ctx context.Context, migrateFirst bool) error {
	ctx, cancel := context.WithTimeout(ctx, db.timeout)
	defer cancel()
	if migrateFirst {
		if _, _, err := migrate(ctx, db.pool); err != nil {
			return err
		}
	}
	v, err := version(ctx, db.pool)
	switch {
	case err != nil:
		return err
	case v < Version:
		return fmt.Errorf("the schema is at version %d, and this smimeproxy needs version %d: run 'smimeproxy store migrate' "+
			"(or set storage.postgres.migrate: true)", v, Version)
	case v > Version:
		return newerError(v)
	}
	return db.poll(ctx)
}

// watch polls the change counters until Close.
func (db *DB) watch() {
	defer close(db.done)
	t := time.NewTicker(db.every)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), db.timeout)
		_ = db.poll(ctx) // kept in pollErr
		cancel()
	}
}

// poll reads every store's generation.
func (db *DB) poll(ctx context.Context) error {
	rows, err := db.pool.Query(ctx, `SELECT store, generation FROM smimeproxy_stores`)
	gens := map[string]int64{}
	if err == nil {
		var (
			store string
			gen   int64
		)
		for rows.Next() {
			if err = rows.Scan(&store, &gen); err != nil {
				break
			}
			gens[store] = gen
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if err != nil {
		db.pollErr = fmt.Errorf("postgres: %s unreachable: %w", db.name, err)
		return db.pollErr
	}
	db.pollErr = nil
	db.gens = gens
	return nil
}

// seen notes a generation read by a load or written by an update, so that
// a poll lagging behind does not make it look changed.
func (db *DB) seen(store string, gen int64) {
	db.mu.Lock()
	if gen > db.gens[store] {
		db.gens[store] = gen
	}
	db.mu.Unlock()
}

// Available is nil when the last poll reached the database.
func (db *DB) Available() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.pollErr
}

// String names the database, without credentials.
func (db *DB) String() string { return db.name }

// Close stops the watch and closes the connections.
func (db *DB) Close() {
	select {
	case <-db.stop:
		return
	default:
	}
	close(db.stop)
	<-db.done
	db.pool.Close()
}

// ctx bounds an operation by the configured timeout, unless ctx ends sooner.
func (db *DB) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, db.timeout)
}

var errNoStore = errors.New("no such store in smimeproxy_stores")
