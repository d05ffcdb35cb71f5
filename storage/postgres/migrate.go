package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema's versions, in order: migrations[i] takes the
// schema from version i to i+1. Never edit one that was released; add the
// next.
var migrations = []string{
	// 1: the stores and their documents.
	`CREATE TABLE smimeproxy_stores (
		store      text PRIMARY KEY,
		-- counts the committed changes to the store's documents; every
		-- instance polls it to notice another's writes
		generation bigint NOT NULL DEFAULT 0
	);
	INSERT INTO smimeproxy_stores (store) VALUES ('keystore'), ('certcache');
	CREATE TABLE smimeproxy_documents (
		store      text NOT NULL REFERENCES smimeproxy_stores,
		-- the document's path in a directory store, such as keys/<id>.json
		name       text NOT NULL,
		-- its bytes, exactly as a directory store holds them: private keys
		-- are sealed under the keystore passphrase
		data       bytea NOT NULL,
		-- the store's generation when the document was last written
		generation bigint NOT NULL,
		PRIMARY KEY (store, name)
	);`,
}

// Version is the schema version this build uses.
var Version = len(migrations)

// migrateLock is the advisory lock that migrations hold, so that two
// instances starting at once migrate one after the other.
const migrateLock = 0x736d696d65 // "smime"

// migrate brings the schema to Version in one transaction, under the
// advisory lock. It returns the versions before and after.
func migrate(ctx context.Context, pool *pgxpool.Pool) (from, to int, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS smimeproxy_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		if from, err = version(ctx, tx); err != nil {
			return err
		}
		if from > Version {
			return newerError(from)
		}
		for v := from; v < Version; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO smimeproxy_migrations (version) VALUES ($1)`, v+1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate the schema: %w", err)
	}
	return from, Version, nil
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// version reads the schema's version: 0 before the first migration.
func version(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM smimeproxy_migrations`).Scan(&v)
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	return v, err
}

func newerError(v int) error {
	return fmt.Errorf("the schema is at version %d, newer than this smimeproxy knows (%d): upgrade smimeproxy", v, Version)
}
