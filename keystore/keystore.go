// Package keystore holds our users' identities: private keys, encrypted at
// rest under the keystore passphrase, with the certificates issued for them
// and the intermediates that complete their chains.
//
// On disk a keystore is one directory (0700) of 0600 files:
//
//	keystore.json     the data key, wrapped under a key derived from the passphrase
//	keys/<id>.json    one private key (sealed under the data key), its addresses,
//	                  certificates and intermediates
//
// Every write goes to a temporary file that is synced and renamed into place,
// so a crash leaves the old file or the new one. Changing the passphrase
// rewrites keystore.json alone.
package keystore

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

	mu      sync.RWMutex
	st      *state
	dataKey []byte // nil while locked

	keyMu sync.Mutex
	keys  map[string]crypto.PrivateKey // unsealed keys by entry id
}

// state is what was read from disk at one moment.
type state struct {
	hdr     header
	hdrInfo fs.FileInfo
	keysMod time.Time // mtime of keys/
	loaded  time.Time
	entries map[string]*entry
	byEmail map[string][]*entry // each sorted by creation
}

// header is keystore.json.
type header struct {
	Version    int    `json:"version"`
	StoreID    string `json:"store_id"`
	KDF        kdf    `json:"kdf"`
	WrappedKey []byte `json:"wrapped_key"` // AES-256-GCM(KDF(passphrase), data key)
}

func parseHeader(data []byte) (header, error) {
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		return h, err
	}
	if h.Version != formatVersion {
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
	st, err := load(dir)
	if err != nil {
		return nil, err
	}
	s.st, s.dataKey = st, dataKey
	return s, nil
}

// wrap seals dataKey under a key derived from passphrase with fresh salt.
func (h *header) wrap(dataKey, passphrase []byte, p KDFParams) error {
	k, err := newKDF(p)
	if err != nil {
		return fmt.Errorf("keystore: KDF parameters: %w", err)
	}
	sealed, err := seal(k.derive(passphrase), dataKey, dataKeyAAD(h.StoreID))
	if err != nil {
		return fmt.Errorf("keystore: wrap the data key: %w", err)
	}
	h.KDF, h.WrappedKey = k, sealed
	return nil
}

func (h *header) unwrap(passphrase []byte) ([]byte, error) {
	dataKey, err := open(h.KDF.derive(passphrase), h.WrappedKey, dataKeyAAD(h.StoreID))
	if err != nil || len(dataKey) != keySize {
		return nil, ErrWrongPassphrase
	}
	return dataKey, nil
}

// Open opens the keystore in dir, locked: addresses, certificates and status
// are readable; private keys need Unlock.
func Open(dir string, opts *Options) (*Store, error) {
	s := newStore(dir, opts)
	st, err := load(dir)
	if err != nil {
		return nil, err
	}
	s.st = st
	atomicfile.RemoveStale(dir, staleTemp)
	atomicfile.RemoveStale(filepath.Join(dir, keysDir), staleTemp)
	return s, nil
}

// load reads the whole keystore. Any damaged file is an error: skipping it
// would hide a key.
func load(dir string) (*state, error) {
	hpath := filepath.Join(dir, headerFile)
	data, err := os.ReadFile(hpath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s; create one first", ErrNoKeystore, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	st := &state{loaded: time.Now(), entries: map[string]*entry{}, byEmail: map[string][]*entry{}}
	if st.hdr, err = parseHeader(data); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", hpath, err)
	}
	if st.hdrInfo, err = os.Stat(hpath); err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	kdir := filepath.Join(dir, keysDir)
	fi, err := os.Stat(kdir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	st.keysMod = fi.ModTime()
	ids, err := listEntries(kdir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	for _, id := range ids {
		p := filepath.Join(kdir, id+".json")
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("keystore: %w", err)
		}
		e, err := parseEntry(data)
		if err == nil && e.id != id {
			err = fmt.Errorf("file name does not match id %s", e.id)
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", p, err)
		}
		st.add(e)
	}
	return st, nil
}

func (st *state) add(e *entry) {
	st.entries[e.id] = e
	for _, m := range e.emails {
		st.byEmail[m] = append(st.byEmail[m], e)
		slices.SortFunc(st.byEmail[m], func(a, b *entry) int { return a.created.Compare(b.created) })
	}
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
	st, err := load(s.dir)
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
		if st.entries[id] == nil {
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

// Unlock derives the key from passphrase and unwraps the data key. A wrong
// passphrase returns ErrWrongPassphrase and changes nothing.
func (s *Store) Unlock(passphrase []byte) error {
	st, err := load(s.dir)
	if err != nil {
		return err
	}
	dataKey, err := st.hdr.unwrap(passphrase)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swap(st)
	clear(s.dataKey)
	s.dataKey = dataKey
	return nil
}

// Locked reports whether private keys are out of reach.
func (s *Store) Locked() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dataKey == nil
}

// Lock forgets the data key and every unsealed private key.
func (s *Store) Lock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockLocked()
}

func (s *Store) lockLocked() {
	clear(s.dataKey)
	s.dataKey = nil
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
	return s.write(func(st *state) error {
		dataKey, err := st.hdr.unwrap(oldPassphrase)
		if err != nil {
			return err
		}
		h := st.hdr
		if err := h.wrap(dataKey, newPassphrase, s.kdf); err != nil {
			return err
		}
		data, err := json.MarshalIndent(h, "", "\t")
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(s.dir, headerFile), data, fileMode); err != nil {
			return fmt.Errorf("keystore: change passphrase: %w", err)
		}
		s.mu.Lock()
		clear(s.dataKey)
		s.dataKey = dataKey
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
	st, err := load(s.dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.swap(st) // locks the store if the directory now holds another keystore
	s.mu.Unlock()
	ferr := fn(st)
	if st, err = load(s.dir); err != nil {
		return errors.Join(ferr, err)
	}
	s.mu.Lock()
	s.swap(st)
	s.mu.Unlock()
	return ferr
}

// saveEntry writes an entry's file; the directory lock is held.
func (s *Store) saveEntry(e *entry) error {
	data, err := e.marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, keysDir, e.id+".json"), data, fileMode); err != nil {
		return fmt.Errorf("keystore: save key %s: %w", e.id, err)
	}
	return nil
}

// sealKey stores key in e, sealed under the data key of the keystore st
// was read from; the directory lock is held.
func (s *Store) sealKey(st *state, e *entry, key crypto.PrivateKey) error {
	s.mu.RLock()
	dataKey := bytes.Clone(s.dataKey) // Lock may clear the original meanwhile
	s.mu.RUnlock()
	if dataKey == nil {
		return ErrLocked
	}
	defer clear(dataKey)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keystore: encode private key: %w", err)
	}
	defer clear(der)
	e.sealed, err = seal(dataKey, der, privateKeyAAD(st.hdr.StoreID, e.id))
	if err != nil {
		return fmt.Errorf("keystore: seal private key: %w", err)
	}
	return nil
}

// privateKey unseals e's key, caching it; s.mu is held (for reading at least).
func (s *Store) privateKey(e *entry) (crypto.PrivateKey, error) {
	if s.dataKey == nil {
		return nil, ErrLocked
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if k, ok := s.keys[e.id]; ok {
		return k, nil
	}
	der, err := open(s.dataKey, e.sealed, privateKeyAAD(s.st.hdr.StoreID, e.id))
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
