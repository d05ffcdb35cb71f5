// Package pgtest gives tests the project's test PostgreSQL, run by
// deploy/postgres/start the way the mail-server lab is: a private cluster
// on 127.0.0.1 with a role and a database named smimeproxy. Each test gets
// a schema of its own in that database, dropped when it ends.
package pgtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"smimeproxy/internal/testutil"
	"smimeproxy/storage/postgres"
)

// Server is the running test PostgreSQL, as deploy/postgres/start describes it.
type Server struct {
	Addr         string // PG_ADDR: host:port
	URL          string // PG_URL: the smimeproxy database, without the password
	PasswordFile string // PG_PASSWORD_FILE
	Password     string
}

var peer = testutil.Peer[*Server]{Dir: "postgres", Name: "PostgreSQL", Parse: parse}

// Start returns the server, starting it the first time a test of this
// binary asks (see testutil.Peer).
func Start(t testing.TB) *Server {
	t.Helper()
	return peer.Start(t)
}

// parse reads the KEY=VALUE lines that deploy/postgres/start prints.
func parse(r io.Reader) (*Server, error) {
	s := &Server{}
	fields := map[string]*string{"PG_ADDR": &s.Addr, "PG_URL": &s.URL, "PG_PASSWORD_FILE": &s.PasswordFile}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && fields[k] != nil {
			*fields[k] = v
		}
	}
	for k, p := range fields {
		if *p == "" {
			return nil, fmt.Errorf("deploy/postgres printed no %s", k)
		}
	}
	pw, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s.Password = strings.TrimSpace(string(pw))
	return s, nil
}

// Schema makes a schema for the test alone, migrated to the current
// version, drops it when the test ends, and returns the URL that uses it
// (still without the password).
func (s *Server) Schema(t testing.TB) string {
	t.Helper()
	u := s.EmptySchema(t)
	if _, _, err := postgres.Migrate(context.Background(), postgres.Config{URL: u, Password: s.Password}); err != nil {
		t.Fatal(err)
	}
	return u
}

// EmptySchema is Schema without the migration: a schema holding nothing.
func (s *Server) EmptySchema(t testing.TB) string {
	t.Helper()
	name := "test_" + randomHex(8)
	conn := s.conn(t)
	if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		conn := s.conn(t)
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return s.URL + "&search_path=" + url.QueryEscape(name)
}

// Open opens the database at u (from Schema) for the test, looking for
// changes every poll (zero: the default), and closes it when the test ends.
func (s *Server) Open(t testing.TB, u string, poll time.Duration) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Config{URL: u, Password: s.Password, PollInterval: poll})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// conn connects to the smimeproxy database for the test's setup, closed
// when the test ends.
func (s *Server) conn(t testing.TB) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(s.URL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.Password = s.Password
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
