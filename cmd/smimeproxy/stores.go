package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/storage"
	"smimeproxy/storage/postgres"
)

// storeFlags are the flags of every command that touches the stores.
type storeFlags struct {
	config         string
	keystore       string
	passphraseFile string
}

func (sf *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.config, "config", "", "read the configuration `FILE` (default $SMIMEPROXY_CONFIG, then "+config.DefaultPath+" if it exists)")
	fs.StringVar(&sf.keystore, "keystore", "", "use the keystore in `DIR` (default: the configuration's store, or ~/.local/share/smimeproxy/keystore without one); the certificate cache lives beside it")
	fs.StringVar(&sf.passphraseFile, "passphrase-file", "", "read the keystore passphrase from `FILE` (default $"+passphraseEnv+", else a prompt)")
}

// load returns the configuration the flags point at, with --keystore applied.
// Without a configuration file, the stores live in the person's data directory.
func (sf *storeFlags) load(e *env) (*config.Config, error) {
	path := sf.config
	if path == "" {
		path = e.getenv("SMIMEPROXY_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat(config.DefaultPath); err == nil {
			path = config.DefaultPath
		}
	}
	var c *config.Config
	if path != "" {
		var err error
		if c, err = config.Load(path); err != nil {
			return nil, err
		}
	} else {
		c = config.Default()
		dir, err := dataHome(e)
		if err != nil {
			return nil, err
		}
		c.Keystore.Dir = filepath.Join(dir, "smimeproxy", "keystore")
	}
	if sf.keystore != "" {
		c.Keystore.Dir = sf.keystore
		c.CertCache.Dir = ""
		c.Storage.Postgres.URL = ""
	}
	if sf.passphraseFile != "" {
		c.Keystore.PassphraseFile = sf.passphraseFile
	}
	return c, nil
}

// dataHome is $XDG_DATA_HOME, or ~/.local/share.
func dataHome(e *env) (string, error) {
	if d := e.getenv("XDG_DATA_HOME"); d != "" {
		return d, nil
	}
	home := e.getenv("HOME")
	if home == "" {
		return "", errors.New("no home directory to keep the keystore in; use --keystore DIR or --config FILE")
	}
	return filepath.Join(home, ".local", "share"), nil
}

// open loads the configuration and opens its keystore: made when missing
// with create, unlocked with unlock.
func (sf *storeFlags) open(e *env, create, unlock bool) (*config.Config, *keystore.Store, error) {
	c, err := sf.load(e)
	if err != nil {
		return nil, nil, err
	}
	ks, err := e.openKeystore(c, create)
	if err != nil {
		return c, nil, err
	}
	if unlock {
		if err := e.unlock(c, ks); err != nil {
			return nil, nil, err
		}
	}
	return c, ks, nil
}

// openKeystore opens the configured keystore. With create, a missing keystore
// is made, under a new passphrase.
func (e *env) openKeystore(c *config.Config, create bool) (*keystore.Store, error) {
	docs, err := e.storeDocs(c, "keystore")
	if err != nil {
		return nil, err
	}
	ks, err := keystore.OpenDocs(docs, nil)
	if err == nil || !create || !errors.Is(err, keystore.ErrNoKeystore) {
		if errors.Is(err, keystore.ErrNoKeystore) {
			return nil, fmt.Errorf("%w in %s; make a key first with 'smimeproxy csr' or 'smimeproxy import FILE.p12'", keystore.ErrNoKeystore, docs)
		}
		return ks, err
	}
	var pass []byte
	if c.Keystore.PassphraseFile != "" || e.getenv(passphraseEnv) != "" {
		pass, err = e.keystorePassphrase(c.Keystore.PassphraseFile)
	} else {
		fmt.Fprintf(e.stderr, "Creating a new keystore in %s.\n", docs)
		pass, err = e.newSecret("", "keystore passphrase", "passphrase-file")
	}
	if err != nil {
		return nil, err
	}
	if d, ok := docs.(*storage.Dir); ok {
		if err := d.Init(); err != nil {
			return nil, fmt.Errorf("keystore: create: %w", err)
		}
	}
	ks, err = keystore.CreateDocs(docs, pass, nil)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stdout, "Created keystore %s\n", ks.Location())
	return ks, nil
}

// storeDocs returns the documents of the configured keystore or
// certificate cache: a directory, or the database, which is opened once per
// command and closed when it ends (env.close).
func (e *env) storeDocs(c *config.Config, store string) (storage.Docs, error) {
	if !c.UsesPostgres() {
		if store == "keystore" {
			return storage.OpenDir(c.Keystore.Dir, keystore.Layout), nil
		}
		d := storage.OpenDir(c.CertCacheDir(), certcache.Layout)
		return d, d.Init()
	}
	if e.db == nil {
		cfg, err := postgresConfig(c.Storage.Postgres, "")
		if err != nil {
			return nil, err
		}
		if e.db, err = postgres.Open(context.Background(), cfg); err != nil {
			return nil, err
		}
	}
	return e.db.Docs(store), nil
}

// postgresConfig is the database of p; url, when set, names another.
func postgresConfig(p config.Postgres, url string) (postgres.Config, error) {
	cfg := postgres.Config{URL: p.URL, PollInterval: p.PollInterval.D(), Timeout: p.Timeout.D(), Migrate: p.Migrate}
	if url != "" {
		cfg.URL = url
	}
	if p.PasswordFile != "" {
		pw, err := readSecretFile(p.PasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("storage.postgres.password_file: %w", err)
		}
		cfg.Password = string(pw)
	}
	return cfg, nil
}

// close closes the database a command opened.
func (e *env) close() {
	if e.db != nil {
		e.db.Close()
		e.db = nil
	}
}

// unlock unlocks ks with the passphrase from the configured sources.
func (e *env) unlock(c *config.Config, ks *keystore.Store) error {
	if !ks.Locked() {
		return nil
	}
	pass, err := e.keystorePassphrase(c.Keystore.PassphraseFile)
	if err != nil {
		return err
	}
	if err := ks.Unlock(pass); err != nil {
		return err
	}
	noteUpgrade(e, ks)
	return nil
}

// noteUpgrade says so when unlocking upgraded the keystore's files.
func noteUpgrade(e *env, ks *keystore.Store) {
	if ks.Upgraded() {
		fmt.Fprintf(e.stderr, "Upgraded the keystore %s: each key file is now bound to the keystore's data key. "+
			"This happens once; if it happens again, someone put back a keystore.json from before the upgrade.\n", ks.Location())
	}
}

// openCertCache opens the certificate cache the configuration names.
func (e *env) openCertCache(c *config.Config) (*certcache.Cache, error) {
	docs, err := e.storeDocs(c, "certcache")
	if err != nil {
		return nil, err
	}
	return certcache.OpenDocs(docs, &certcache.Options{NoSystemRoots: !c.Trust.SystemRoots})
}

// readInput reads the file named by args[0], or standard input when there is
// none or it is "-".
func (e *env) readInput(args []string) ([]byte, error) {
	if len(args) == 0 || args[0] == "-" {
		return io.ReadAll(e.stdin)
	}
	return os.ReadFile(args[0])
}

// writeOutput writes data to path, or to standard output for "" or "-".
// An existing file is replaced only with force.
func (e *env) writeOutput(path string, data []byte, mode os.FileMode, force bool) error {
	if path == "" || path == "-" {
		_, err := e.stdout.Write(data)
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; use --force to overwrite it", path)
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
