package config

import (
	"net/url"
	"os"
	"strings"
	"time"
)

// Storage says where the keystore and the certificate cache live: in the
// directories keystore.dir and certcache.dir (the default), or in a
// PostgreSQL database that several instances share.
type Storage struct {
	Postgres Postgres `yaml:"postgres"`
}

// Postgres is the database that holds both stores when URL is set.
type Postgres struct {
	// URL names the database, such as
	// postgres://smimeproxy@db.example.com/smimeproxy?sslmode=verify-full.
	// Default "": the stores live in directories. Put no password in it.
	URL string `yaml:"url"`
	// PasswordFile holds the database password. Default "":
	// $PGPASSWORD, then ~/.pgpass, as for psql.
	PasswordFile string `yaml:"password_file"`
	// Migrate brings the database schema up to date at start. Default
	// false: run `smimeproxy store migrate` after an upgrade.
	Migrate bool `yaml:"migrate"`
	// PollInterval is how often each instance looks for changes that others
	// and the CLI made. Default 1s.
	PollInterval Duration `yaml:"poll_interval"`
	// Timeout bounds each database operation. Default 10s.
	Timeout Duration `yaml:"timeout"`
}

func defaultStorage() Storage {
	return Storage{Postgres: Postgres{PollInterval: Duration(time.Second), Timeout: Duration(10 * time.Second)}}
}

// UsesPostgres reports whether the stores live in PostgreSQL.
func (c *Config) UsesPostgres() bool { return c.Storage.Postgres.URL != "" }

func (s *Storage) validate(bad func(key, format string, args ...any)) {
	p := s.Postgres
	if p.URL != "" {
		u, err := url.Parse(p.URL)
		switch {
		case err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql"):
			bad("storage.postgres.url", "invalid URL %q; use postgres://USER@HOST/DATABASE", p.URL)
		case u.User != nil && hasPassword(u.User):
			bad("storage.postgres.url", "holds a password; put it in storage.postgres.password_file instead")
		case strings.Trim(u.Path, "/") == "":
			bad("storage.postgres.url", "names no database; use postgres://USER@HOST/DATABASE")
		}
	}
	if f := p.PasswordFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			bad("storage.postgres.password_file", "%v", err)
		}
	}
	if p.PollInterval <= 0 {
		bad("storage.postgres.poll_interval", "must be positive")
	}
	if p.Timeout <= 0 {
		bad("storage.postgres.timeout", "must be positive")
	}
}

func hasPassword(u *url.Userinfo) bool {
	_, ok := u.Password()
	return ok
}
