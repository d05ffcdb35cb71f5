package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/storage"
	"smimeproxy/storage/postgres"
)

func storeCommand() *command {
	return &command{
		name:  "store",
		short: "manage where the keystore and the certificate cache live (PostgreSQL)",
		help: `smimeproxy store: the database that holds the keystore and the certificate
cache when several instances share them (storage.postgres in the
configuration), and moving a deployment between directories and a database.`,
		subs: []*command{storeMigrateCommand(), storeCopyCommand()},
	}
}

// dbFlags are the flags that name a database besides the configuration's.
type dbFlags struct {
	config       string
	passwordFile string
}

func (f *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "read the configuration `FILE` (default $SMIMEPROXY_CONFIG, then "+config.DefaultPath+" if it exists)")
	fs.StringVar(&f.passwordFile, "db-password-file", "", "read the database password from `FILE` (default: storage.postgres.password_file, $PGPASSWORD, ~/.pgpass)")
}

// load returns the configuration, with --db-password-file applied.
func (f *dbFlags) load(e *env) (*config.Config, error) {
	c, err := (&storeFlags{config: f.config}).load(e)
	if err != nil {
		return nil, err
	}
	if f.passwordFile != "" {
		c.Storage.Postgres.PasswordFile = f.passwordFile
	}
	return c, nil
}

func storeMigrateCommand() *command {
	var f dbFlags
	return &command{
		name:  "migrate",
		usage: "migrate [--config FILE] [--db-password-file FILE]",
		short: "bring the database schema up to date",
		help: `Brings the schema of the database that storage.postgres.url names up to the
version this smimeproxy uses, in one transaction. Run it after installing a
new version, before restarting the instances (or set storage.postgres.migrate:
true to have each instance do it at start). Several may run it at once: they
take turns under an advisory lock, and all but the first find nothing to do.`,
		examples: `  smimeproxy store migrate --config /etc/smimeproxy/config.yaml`,
		flags:    f.register,
		run: func(ctx context.Context, e *env, args []string) error {
			c, err := f.load(e)
			if err != nil {
				return err
			}
			if !c.UsesPostgres() {
				return usagef("the configuration names no database (storage.postgres.url); the stores live in directories, which need no migration")
			}
			cfg, err := postgresConfig(c.Storage.Postgres, "")
			if err != nil {
				return err
			}
			from, to, err := postgres.Migrate(ctx, cfg)
			if err != nil {
				return err
			}
			if from == to {
				fmt.Fprintf(e.stdout, "The schema is at version %d, as this smimeproxy needs; nothing to do.\n", to)
			} else {
				fmt.Fprintf(e.stdout, "Migrated the schema from version %d to %d.\n", from, to)
			}
			return nil
		},
	}
}

func storeCopyCommand() *command {
	var (
		f        dbFlags
		from, to string
	)
	return &command{
		name:  "copy",
		usage: "copy [--from DIR|URL] --to DIR|URL [--config FILE] [--db-password-file FILE]",
		short: "copy the keystore and the certificate cache between directories and a database",
		help: `Copies every document of the keystore and of the certificate cache, byte for
byte, from one store to another that holds none yet: from directories to a
PostgreSQL database when a deployment grows to several instances, or back.
A DIR is a keystore directory, whose certificate cache is the directory
named certcache beside it; a URL is postgres://USER@HOST/DATABASE, whose
schema is brought up to date first. Without --from, the configuration's
store is copied. Private keys stay sealed under the keystore passphrase, so
the copy needs no passphrase. Stop the instances first, or writes made
during the copy may be missed.`,
		examples: `  smimeproxy store copy --from /var/lib/smimeproxy/keystore --to postgres://smimeproxy@db.example.com/smimeproxy
  smimeproxy store copy --config /etc/smimeproxy/config.yaml --to /var/lib/smimeproxy/keystore`,
		flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.StringVar(&from, "from", "", "copy from the keystore directory `DIR` or the database URL (default: the configuration's store)")
			fs.StringVar(&to, "to", "", "copy into the keystore directory `DIR` or the database URL, which must hold no documents")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if to == "" {
				return usagef("--to is required: a keystore directory or a database URL (postgres://USER@HOST/DATABASE)")
			}
			c, err := f.load(e)
			if err != nil {
				return err
			}
			src, err := openStores(ctx, e, c, from, false)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			defer src.close()
			// Only a keystore that opens is worth copying.
			if _, err := keystore.OpenDocs(src.keys, nil); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			dst, err := openStores(ctx, e, c, to, true)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			defer dst.close()
			nk, err := storage.Copy(ctx, dst.keys, src.keys)
			if err != nil {
				return err
			}
			nc, err := storage.Copy(ctx, dst.certs, src.certs)
			if err != nil {
				return fmt.Errorf("%w (the keystore was copied already)", err)
			}
			fmt.Fprintf(e.stdout, "Copied %d keystore documents from %s to %s.\n", nk, src.keys, dst.keys)
			fmt.Fprintf(e.stdout, "Copied %d certificate cache documents from %s to %s.\n", nc, src.certs, dst.certs)
			return nil
		},
	}
}

// stores are the documents of a keystore and a certificate cache, with
// the database they live in, if any.
type stores struct {
	keys, certs storage.Docs
	db          *postgres.DB
}

func (s *stores) close() {
	if s.db != nil {
		s.db.Close()
	}
}

// openStores opens the stores at where: a database URL, a keystore
// directory, or with "" the configuration's. A destination (dst) is made
// ready to be written: directories are made, a schema migrated.
func openStores(ctx context.Context, e *env, c *config.Config, where string, dst bool) (*stores, error) {
	url := ""
	switch {
	case strings.HasPrefix(where, "postgres://") || strings.HasPrefix(where, "postgresql://"):
		url = where
	case where != "":
		dir := filepath.Clean(where)
		keys := storage.OpenDir(dir, keystore.Layout)
		certs := storage.OpenDir(filepath.Join(filepath.Dir(dir), "certcache"), certcache.Layout)
		if dst {
			if err := keys.Init(); err != nil {
				return nil, err
			}
		}
		return &stores{keys: keys, certs: certs}, certs.Init()
	case !c.UsesPostgres():
		keys := storage.OpenDir(c.Keystore.Dir, keystore.Layout)
		certs := storage.OpenDir(c.CertCacheDir(), certcache.Layout)
		return &stores{keys: keys, certs: certs}, certs.Init()
	}
	cfg, err := postgresConfig(c.Storage.Postgres, url)
	if err != nil {
		return nil, err
	}
	if dst {
		from, to, err := postgres.Migrate(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if from != to {
			fmt.Fprintf(e.stdout, "Migrated the schema from version %d to %d.\n", from, to)
		}
	}
	db, err := postgres.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &stores{keys: db.Docs("keystore"), certs: db.Docs("certcache"), db: db}, nil
}
