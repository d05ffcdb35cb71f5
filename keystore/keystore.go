// Package keystore holds our users' identities: private keys, encrypted at
// rest under the keystore passphrase, with the certificates issued for them
// and the intermediates that complete their chains.
//
// On disk a keystore is one directory (0700) of 0600 files:
//
//	keystore.json     the data key, wrapped under a key derived from the passphrase
//	keys/<id>.json    one private key (sealed under the data key), its addresses,
//	                  certificates and intermediates, and a MAC over all of it
//	                  under a key derived from the data key
//
// Whoever can write the files but lacks the passphrase can neither read a
// key nor move one to another address: an entry whose MAC does not check is
// refused once the keystore is unlocked. The directory and its files must be
// private to their owner (0700, 0600); Open refuses them otherwise, as
// OpenSSH refuses a private key others can read.
//
// Every write goes to a temporary file that is synced and renamed into place,
// so a crash leaves the old file or the new one. Changing the passphrase
// rewrites keystore.json alone.
package keystore

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"smimeproxy/internal/atomicfile"
	"smimeproxy/internal/recheck"
)

const (
	headerFile = "keystore.json"
	keysDir    = "keys"
	dirMode    = 0o700
	fileMode   = 0o600
	// staleTemp is how old a temporary file must be before Open removes it: a
	// writer in another process holds its own for milliseconds.
	staleTemp = 15 * time.Minute
	// DefaultRecheckInterval is how often lookups look for changes made by
	// another process, by default.
	DefaultRecheckInterval = 2 * time.Second
)

// Options tune a Store; nil means the defaults.
type Options struct {
	// KDF is the passphrase KDF cost used by Create and ChangePassphrase
	// (keystore.json records it, so opening is unaffected); nil: DefaultKDF.
	// Lower it only for tests or very small machines.
	KDF *KDFParams
	// RecheckInterval is how often lookups stat the directory to pick up
	// changes another process made; zero: DefaultRecheckInterval; negative:
	// never (call Reload).
	RecheckInterval time.Duration
	// Now is the clock for Identities' status and for Backup; nil: time.Now.
	Now func() time.Time
}

// Store is a keystore directory. It is safe for concurrent use.
type Store struct {
	dir     string
	kdf     KDFParams
	now     func() time.Time
	recheck *recheck.Throttle

	mu       sync.RWMutex
	st       *state
	sec      *secrets // nil while locked
	upgraded bool     // by the last Unlock

	keyMu sync.Mutex
	keys  map[string]crypto.PrivateKey // unsealed keys by entry id
}

// state is what was read from disk at one moment.
type state struct {
	hdr     header
	hdrInfo fs.FileInfo
	keysMod time.Time // mtime of keys/
	loaded  time.Time
	entries map[string]*entry // every entry file, by id
	// Set by index: byEmail holds the entries that may be used, each sorted
	// by creation; broken and brokenFor the ones refused, by id and address.
	byEmail   map[string][]*entry
	brokenFor map[string][]*entry
	broken    map[string]*KeyError
}

// header is keystore.json.
type header struct {
	Version    int    `json:"version"`
	StoreID    string `json:"store_id"`
	KDF        kdf    `json:"kdf"`
	WrappedKey []byte `json:"wrapped_key"` // AES-256-GCM(KDF(passphrase), data key), the version in its additional data
}

func parseHeader(data []byte) (header, error) {
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		return h, err
	}
	if h.Version != legacyVersion && h.Version != formatVersion {
		return h, fmt.Errorf("unsupported version %d", h.Version)
	}
	if h.StoreID == "" || len(h.WrappedKey) == 0 {
		return h, errors.New("store id or wrapped key missing")
	}
	return h, h.KDF.check()
}

func newStore(dir string, opts *Options) *Store {
	s := &Store{dir: dir, kdf: DefaultKDF, now: time.Now, keys: map[string]crypto.PrivateKey{}}
	every := DefaultRecheckInterval
	if opts != nil {
		if opts.KDF != nil {
			s.kdf = *opts.KDF
		}
		if opts.Now != nil {
			s.now = opts.Now
		}
		if opts.RecheckInterval != 0 {
			every = opts.RecheckInterval
		}
	}
	s.recheck = recheck.NewThrottle(every)
	return s
}

// Create makes a new keystore in dir (created if needed) and returns it
// unlocked. It fails with ErrExists if dir already holds a keystore or keys.
func Create(dir string, passphrase []byte, opts *Options) (*Store, error) {
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassphrase
	}
	s := newStore(dir, opts)
	if err := os.MkdirAll(filepath.Join(dir, keysDir), dirMode); err != nil {
		return nil, fmt.Errorf("keystore: create: %w", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, keysDir)} {
		if err := os.Chmod(d, dirMode); err != nil {
			return nil, fmt.Errorf("keystore: create: %w", err)
		}
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: create: %w", err)
	}
	defer unlock()
	// A new data key would orphan keys sealed under the old one.
	if ids, err := listEntries(filepath.Join(dir, keysDir)); err != nil || len(ids) > 0 {
		if err != nil {
			return nil, fmt.Errorf("keystore: create: %w", err)
		}
		return nil, fmt.Errorf("%w: %s holds keys but no %s; restore it rather than create a new one", ErrExists, dir, headerFile)
	}
	dataKey := make([]byte, keySize)
	id := make([]byte, 16)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, err
	}
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	h := header{Version: formatVersion, StoreID: hex.EncodeToString(id)}
	if err := h.wrap(dataKey, passphrase, s.kdf); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(h, "", "\t")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Create(filepath.Join(dir, headerFile), data, fileMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w in %s", ErrExists, dir)
		}
		return nil, fmt.Errorf("keystore: create: %w", err)
	}
	k, err := newSecrets(dataKey)
	if err != nil {
		return nil, err
	}
	st, err := read(dir)
	if err != nil {
		return nil, err
	}
	st.index(dir, k)
	s.st, s.sec = st, k
	return s, nil
}

// wrap seals dataKey under a key derived from passphrase with fresh salt.
func (h *header) wrap(dataKey, passphrase []byte, p KDFParams) error {
	k, err := newKDF(p)
	if err != nil {
		return fmt.Errorf("keystore: KDF parameters: %w", err)
	}
	kek := k.derive(passphrase)
	defer clear(kek)
	sealed, err := seal(kek, dataKey, dataKeyAAD(h.Version, h.StoreID))
	if err != nil {
		return fmt.Errorf("keystore: wrap the data key: %w", err)
	}
	h.KDF, h.WrappedKey = k, sealed
	return nil
}

// unwrap derives the key-encryption key from passphrase and returns what
// it unlocks.
func (h *header) unwrap(passphrase []byte) (*secrets, error) {
	kek := h.KDF.derive(passphrase)
	defer clear(kek)
	dataKey, err := h.open(kek)
	if err != nil {
		return nil, err
	}
	return newSecrets(dataKey)
}

// open unwraps the data key with the key-encryption key.
func (h *header) open(kek []byte) ([]byte, error) {
	dataKey, err := open(kek, h.WrappedKey, dataKeyAAD(h.Version, h.StoreID))
	if err == nil && len(dataKey) == keySize {
		return dataKey, nil
	}
	if h.Version < formatVersion {
		if _, err := open(kek, h.WrappedKey, dataKeyAAD(formatVersion, h.StoreID)); err == nil {
			return nil, fmt.Errorf("keystore: %s says version %d, but its key was wrapped for version %d: "+
				"the file was altered; put back a good copy", headerFile, h.Version, formatVersion)
		}
	}
	return nil, ErrWrongPassphrase
}

// Open opens the keystore in dir, locked: addresses, certificates and status
// are readable; private keys need Unlock.
func Open(dir string, opts *Options) (*Store, error) {
	s := newStore(dir, opts)
	st, err := read(dir)
	if err != nil {
		return nil, err
	}
	st.index(dir, nil)
	s.st = st
	atomicfile.RemoveStale(dir, staleTemp)
	atomicfile.RemoveStale(filepath.Join(dir, keysDir), staleTemp)
	return s, nil
}

// read reads the whole keystore; index then sorts its entries. Any damaged
// file is an error, and so is a file or directory that others may open:
// skipping it would hide a key.
func read(dir string) (*state, error) {
	var private privacy
	di, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s; create one first", ErrNoKeystore, dir)
		}
		return nil, fmt.Errorf("keystore: %w", err)
	}
	private.check(dir, di)
	hpath := filepath.Join(dir, headerFile)
	data, hi, err := readFile(hpath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s; create one first", ErrNoKeystore, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	private.check(hpath, hi)
	st := &state{loaded: time.Now(), hdrInfo: hi, entries: map[string]*entry{}}
	if st.hdr, err = parseHeader(data); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", hpath, err)
	}
	kdir := filepath.Join(dir, keysDir)
	fi, err := os.Stat(kdir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	private.check(kdir, fi)
	st.keysMod = fi.ModTime()
	ids, err := listEntries(kdir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	for _, id := range ids {
		p := filepath.Join(kdir, id+".json")
		data, fi, err := readFile(p)
		if err != nil {
			return nil, fmt.Errorf("keystore: %w", err)
		}
		private.check(p, fi)
		e, err := parseEntry(data)
		if err == nil && e.id != id {
			err = fmt.Errorf("file name does not match id %s", e.id)
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", p, err)
		}
		st.entries[e.id] = e
	}
	if err := private.err(dir); err != nil {
		return nil, err
	}
	return st, nil
}

// readFile reads a file and stats it through the same descriptor.
func readFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(f)
	return data, fi, err
}

// load reads the directory and indexes it, checking the entries when the
// Store holds the secrets of the keystore found there.
func (s *Store) load() (*state, error) {
	st, err := read(s.dir)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	var k *secrets
	if s.st == nil || s.st.hdr.StoreID == st.hdr.StoreID {
		k = s.sec.clone() // Lock may clear the original meanwhile
	}
	s.mu.RUnlock()
	defer k.clear()
	st.index(s.dir, k)
	return st, nil
}

// listEntries returns the ids of the entry files in dir, skipping temporary
// and foreign files.
func listEntries(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, de := range des {
		name := de.Name()
		if id, ok := strings.CutSuffix(name, ".json"); ok && de.Type().IsRegular() && validID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Reload reads the directory again, picking up what another process (the
// CLI) wrote. On failure the Store keeps the state it had. Lookups reload by
// themselves when the directory changed (see Options.RecheckInterval) and
// then ignore failures, so a half-edited directory never stops mail; call
// Reload to see the error.
func (s *Store) Reload() error {
	st, err := s.load()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.swap(st)
	s.mu.Unlock()
	return nil
}

// swap installs st; s.mu must be held for writing. A load that started
// before the current state's may have missed writes: it is dropped.
func (s *Store) swap(st *state) {
	if s.st != nil && st.loaded.Before(s.st.loaded) {
		return
	}
	if s.st != nil && st.hdr.StoreID != s.st.hdr.StoreID {
		// A different keystore now sits in the directory: our data key is not its.
		s.lockLocked()
	}
	s.st = st
	s.keyMu.Lock()
	for id := range s.keys {
		if st.entries[id] == nil || st.broken[id] != nil {
			delete(s.keys, id)
		}
	}
	s.keyMu.Unlock()
}

// refresh reloads when the directory may have changed since the last load,
// at most once per RecheckInterval. Cost when nothing changed: two stats.
func (s *Store) refresh() {
	if s.recheck.Due() && s.changed() {
		_ = s.Reload() // see Reload: keep serving the last good state
	}
}

func (s *Store) changed() bool {
	s.mu.RLock()
	st := s.st
	s.mu.RUnlock()
	hi, err := os.Stat(filepath.Join(s.dir, headerFile))
	if err != nil || !os.SameFile(hi, st.hdrInfo) || !hi.ModTime().Equal(st.hdrInfo.ModTime()) {
		return true
	}
	ki, err := os.Stat(filepath.Join(s.dir, keysDir))
	if err != nil || !ki.ModTime().Equal(st.keysMod) {
		return true
	}
	return recheck.Unsettled(st.keysMod, st.loaded)
}

// Dir returns the keystore's directory.
func (s *Store) Dir() string { return s.dir }

// Unlock derives the key from passphrase, unwraps the data key and checks
// every entry under it: an entry that does not check is refused (see
// IdentityInfo.Problem and Check), the others are used. A keystore made
// before entries were bound to the data key is upgraded first (which
// rewrites its files, once). A wrong passphrase returns ErrWrongPassphrase
// and changes nothing.
func (s *Store) Unlock(passphrase []byte) error {
	st, err := read(s.dir)
	if err != nil {
		return err
	}
	upgraded := false
	if st.hdr.Version < formatVersion {
		if upgraded, err = s.upgrade(passphrase); err != nil {
			return err
		}
		if st, err = read(s.dir); err != nil {
			return err
		}
	}
	k, err := st.hdr.unwrap(passphrase)
	if err != nil {
		return err
	}
	st.index(s.dir, k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swap(st)
	s.sec.clear()
	s.sec, s.upgraded = k, upgraded
	return nil
}

// Locked reports whether private keys are out of reach.
func (s *Store) Locked() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sec == nil
}

// Lock forgets the data key and every unsealed private key.
func (s *Store) Lock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockLocked()
}

func (s *Store) lockLocked() {
	s.sec.clear()
	s.sec = nil
	s.keyMu.Lock()
	clear(s.keys)
	s.keyMu.Unlock()
}

// ChangePassphrase rewraps the data key under newPassphrase, with fresh salt
// and the Store's KDF parameters. It rewrites keystore.json alone, atomically:
// after a crash the old passphrase or the new one works, and the keys files
// are untouched either way. Another process that has the keystore unlocked
// keeps working, since the data key does not change.
func (s *Store) ChangePassphrase(oldPassphrase, newPassphrase []byte) error {
	if len(newPassphrase) == 0 {
		return ErrEmptyPassphrase
	}
	if _, err := s.upgrade(oldPassphrase); err != nil {
		return err
	}
	return s.write(func(st *state) error {
		k, err := st.hdr.unwrap(oldPassphrase)
		if err != nil {
			return err
		}
		h := st.hdr
		if err := h.wrap(k.data, newPassphrase, s.kdf); err != nil {
			k.clear()
			return err
		}
		if err := writeHeader(s.dir, h); err != nil {
			k.clear()
			return fmt.Errorf("keystore: change passphrase: %w", err)
		}
		s.mu.Lock()
		s.sec.clear()
		s.sec = k
		s.mu.Unlock()
		return nil
	})
}

// write runs fn with the directory lock held, on a state freshly read from
// disk, then reloads so memory matches disk. Readers are not held up: fn
// runs without s.mu.
func (s *Store) write(fn func(st *state) error) error {
	unlock, err := lockDir(s.dir)
	if err != nil {
		return fmt.Errorf("keystore: lock %s: %w", s.dir, err)
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.swap(st) // locks the store if the directory now holds another keystore
	s.mu.Unlock()
	ferr := fn(st)
	if st, err = s.load(); err != nil {
		return errors.Join(ferr, err)
	}
	s.mu.Lock()
	s.swap(st)
	s.mu.Unlock()
	return ferr
}

// saveEntry writes an entry's file with its MAC, for the keystore st was
// read from; the directory lock is held.
func (s *Store) saveEntry(st *state, e *entry) error {
	s.mu.RLock()
	k := s.sec.clone() // Lock may clear the original meanwhile
	s.mu.RUnlock()
	if k == nil {
		return ErrLocked
	}
	defer k.clear()
	return s.writeEntry(st, e, k)
}

// sealKey stores key in e, sealed under the data key of the keystore st
// was read from; the directory lock is held.
func (s *Store) sealKey(st *state, e *entry, key crypto.PrivateKey) error {
	s.mu.RLock()
	k := s.sec.clone() // Lock may clear the original meanwhile
	s.mu.RUnlock()
	if k == nil {
		return ErrLocked
	}
	defer k.clear()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keystore: encode private key: %w", err)
	}
	defer clear(der)
	e.sealed, err = seal(k.data, der, privateKeyAAD(st.hdr.StoreID, e.id))
	if err != nil {
		return fmt.Errorf("keystore: seal private key: %w", err)
	}
	return nil
}

// privateKey unseals e's key, caching it; s.mu is held (for reading at least).
func (s *Store) privateKey(e *entry) (crypto.PrivateKey, error) {
	if s.sec == nil {
		return nil, ErrLocked
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if k, ok := s.keys[e.id]; ok {
		return k, nil
	}
	der, err := open(s.sec.data, e.sealed, privateKeyAAD(s.st.hdr.StoreID, e.id))
	if err != nil {
		return nil, fmt.Errorf("keystore: key %s does not open with this keystore's data key (file damaged or from another keystore)", e.id)
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("keystore: key %s: %w", e.id, err)
	}
	if id, _, err := keyID(publicOf(key)); err != nil || id != e.id {
		return nil, fmt.Errorf("keystore: key %s does not match its public key", e.id)
	}
	s.keys[e.id] = key
	return key, nil
}

// publicOf returns the public half of any key ParsePKCS8PrivateKey returns.
func publicOf(key crypto.PrivateKey) crypto.PublicKey {
	if k, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		return k.Public()
	}
	return nil
}
