// Package keystore holds our users' identities: private keys, encrypted at
// rest under the keystore passphrase, with the certificates issued for them
// and the intermediates that complete their chains.
//
// A keystore is a few documents (package storage), in a directory (0700) of
// 0600 files by default, or in a PostgreSQL database shared by several
// instances, with the same bytes either way:
//
//	keystore.json     the data key, wrapped under a key derived from the passphrase
//	keys/<id>.json    one private key (sealed under the data key), its addresses,
//	                  certificates and intermediates, and a MAC over all of it
//	                  under a key derived from the data key
//
// Whoever can write the documents but lacks the passphrase can neither read
// a key nor move one to another address: an entry whose MAC does not check
// is refused once the keystore is unlocked. So a copy of the directory, or a
// dump of the database, opens nothing without the passphrase. The directory
// and its files must be private to their owner (0700, 0600); Open refuses
// them otherwise, as OpenSSH refuses a private key others can read.
//
// In a directory every write goes to a temporary file that is synced and
// renamed into place, so a crash leaves the old file or the new one; in a
// database a change is one transaction. Changing the passphrase rewrites
// keystore.json alone.
package keystore

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"smimeproxy/internal/recheck"
	"smimeproxy/storage"
)

const (
	headerFile = "keystore.json"
	keysDir    = "keys"
	dirMode    = 0o700
	fileMode   = 0o600
	// DefaultRecheckInterval is how often lookups look for changes made by
	// another process, by default.
	DefaultRecheckInterval = time.Second
)

// Layout is a keystore directory's: keystore.json and keys/<id>.json,
// private to their owner, written under a lock that other processes'
// writers take too.
var Layout = storage.Layout{
	Files:   []string{headerFile},
	Dirs:    map[string]func(string) bool{keysDir: isEntryFile},
	Private: true,
	Lock:    true,
}

func isEntryFile(name string) bool {
	id, ok := strings.CutSuffix(name, ".json")
	return ok && validID(id)
}

func entryName(id string) string { return keysDir + "/" + id + ".json" }

// Options tune a Store; nil means the defaults.
type Options struct {
	// KDF is the passphrase KDF cost used by Create and ChangePassphrase
	// (keystore.json records it, so opening is unaffected); nil: DefaultKDF.
	// Lower it only for tests or very small machines.
	KDF *KDFParams
	// RecheckInterval is how often lookups look for changes another process
	// made (storage.Docs.Changed); zero: DefaultRecheckInterval; negative:
	// never (call Reload).
	RecheckInterval time.Duration
	// Now is the clock for Identities' status and for Backup; nil: time.Now.
	Now func() time.Time
}

// Store is a keystore. It is safe for concurrent use.
type Store struct {
	docs    storage.Docs
	dir     string // when docs is a directory
	kdf     KDFParams
	now     func() time.Time
	recheck *recheck.Throttle

	mu       sync.RWMutex
	st       *state
	sec      *secrets // nil while locked
	upgraded bool     // by the last Unlock
	gen      uint64   // see Generation

	keyMu sync.Mutex
	keys  map[string]crypto.PrivateKey // unsealed keys by entry id
}

// state is what was read from the store at one moment.
type state struct {
	hdr     header
	snap    *storage.Snapshot // stamps only: the data is parsed into hdr and entries
	loaded  time.Time
	entries map[string]*entry // every entry, by id
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

func newStore(docs storage.Docs, opts *Options) *Store {
	s := &Store{docs: docs, kdf: DefaultKDF, now: time.Now, keys: map[string]crypto.PrivateKey{}}
	if d, ok := docs.(*storage.Dir); ok {
		s.dir = d.Path()
	}
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
	d := storage.OpenDir(dir, Layout)
	if err := d.Init(); err != nil {
		return nil, fmt.Errorf("keystore: create: %w", err)
	}
	return CreateDocs(d, passphrase, opts)
}

// CreateDocs is Create in any store, such as a database (see package
// storage). The store must hold no keystore and no keys.
func CreateDocs(docs storage.Docs, passphrase []byte, opts *Options) (*Store, error) {
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassphrase
	}
	s := newStore(docs, opts)
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
	err = docs.Update(context.Background(), func(tx storage.Tx) error {
		snap, err := tx.Load(func(string, string) bool { return true })
		if err != nil {
			return fmt.Errorf("keystore: create: %w", privateErr(err))
		}
		if _, ok := snap.Docs[headerFile]; ok {
			return fmt.Errorf("%w in %s", ErrExists, docs)
		}
		// A new data key would orphan keys sealed under the old one.
		if len(snap.Docs) > 0 {
			return fmt.Errorf("%w: %s holds keys but no %s; restore it rather than create a new one", ErrExists, docs, headerFile)
		}
		if err := tx.Create(headerFile, data); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w in %s", ErrExists, docs)
			}
			return fmt.Errorf("keystore: create: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	k, err := newSecrets(dataKey)
	if err != nil {
		return nil, err
	}
	st, err := read(docs, docs.Load)
	if err != nil {
		return nil, err
	}
	st.index(docs, k)
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
	return OpenDocs(storage.OpenDir(dir, Layout), opts)
}

// OpenDocs is Open for any store, such as a database (see package storage).
func OpenDocs(docs storage.Docs, opts *Options) (*Store, error) {
	s := newStore(docs, opts)
	st, err := read(docs, docs.Load)
	if err != nil {
		return nil, err
	}
	st.index(docs, nil)
	s.st = st
	return s, nil
}

// read reads the whole keystore through load (the store's, or a Tx's);
// index then sorts its entries. Any damaged document is an error, and so is
// a file or directory that others may open: skipping it would hide a key.
func read(docs storage.Docs, load func(context.Context, func(string, string) bool) (*storage.Snapshot, error)) (*state, error) {
	loaded := time.Now()
	snap, err := load(context.Background(), nil)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", privateErr(err))
	}
	hd, ok := snap.Docs[headerFile]
	if !ok {
		return nil, fmt.Errorf("%w in %s; create one first", ErrNoKeystore, docs)
	}
	st := &state{loaded: loaded, snap: snap, entries: map[string]*entry{}}
	if st.hdr, err = parseHeader(hd.Data); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", docs.Where(headerFile), err)
	}
	for name, d := range snap.Docs {
		id, ok := strings.CutPrefix(name, keysDir+"/")
		if !ok || !isEntryFile(id) {
			continue // not ours: as in a directory, strangers are left alone
		}
		id = strings.TrimSuffix(id, ".json")
		e, err := parseEntry(d.Data)
		if err == nil && e.id != id {
			err = fmt.Errorf("file name does not match id %s", e.id)
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", docs.Where(name), err)
		}
		st.entries[e.id] = e
	}
	for name, d := range snap.Docs {
		snap.Docs[name] = storage.Doc{Stamp: d.Stamp}
	}
	return st, nil
}

// privateErr says what to do about a keystore directory others may open.
func privateErr(err error) error {
	if npe, ok := errors.AsType[*storage.NotPrivateError](err); ok {
		return fmt.Errorf("%w: %s; a keystore holds private keys and must be its owner's alone: run chmod -R go-rwx %s",
			ErrNotPrivate, strings.Join(npe.Paths, ", "), npe.Dir)
	}
	return err
}

// load reads the store and indexes it, checking the entries when the
// Store holds the secrets of the keystore found there.
func (s *Store) load(load func(context.Context, func(string, string) bool) (*storage.Snapshot, error)) (*state, error) {
	st, err := read(s.docs, load)
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
	st.index(s.docs, k)
	return st, nil
}

// Reload reads the store again, picking up what another process (the CLI,
// another instance) wrote. On failure the Store keeps the state it had.
// Lookups reload by themselves when the store changed (see
// Options.RecheckInterval) and then ignore failures, so a half-edited
// directory or an unreachable database never stops mail; call Reload to see
// the error.
func (s *Store) Reload() error {
	st, err := s.load(s.docs.Load)
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
		// A different keystore now sits in the store: our data key is not its.
		s.lockLocked()
	}
	if s.st == nil || !s.st.snap.Same(st.snap) {
		s.gen++
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

// refresh reloads when the store may have changed since the last load, at
// most once per RecheckInterval. Cost when nothing changed: two stats, or
// for a database a look at the last change counter it polled.
func (s *Store) refresh() {
	if !s.recheck.Due() {
		return
	}
	s.mu.RLock()
	snap := s.st.snap
	s.mu.RUnlock()
	if s.docs.Changed(snap) {
		_ = s.Reload() // see Reload: keep serving the last good state
	}
}

// Generation counts the changes to what the Store serves: another process's
// writes it picked up, its own, and unlocking or locking it. A cache of what
// was computed from the keystore (decrypted messages) is stale once the
// generation it was made under has passed. It looks for changes first, as
// lookups do.
func (s *Store) Generation() uint64 {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// Available is nil while the store can be reached (a directory always can),
// or says why not. Lookups still answer from what was last read; writes fail.
func (s *Store) Available() error { return s.docs.Available() }

// Dir returns the keystore's directory; "" for a keystore in a database.
func (s *Store) Dir() string { return s.dir }

// Location names the keystore for people: its directory or its database.
func (s *Store) Location() string { return s.docs.String() }

// Unlock derives the key from passphrase, unwraps the data key and checks
// every entry under it: an entry that does not check is refused (see
// IdentityInfo.Problem and Check), the others are used. A keystore made
// before entries were bound to the data key is upgraded first (which
// rewrites its files, once). A wrong passphrase returns ErrWrongPassphrase
// and changes nothing.
func (s *Store) Unlock(passphrase []byte) error {
	st, err := read(s.docs, s.docs.Load)
	if err != nil {
		return err
	}
	upgraded := false
	if st.hdr.Version < formatVersion {
		if upgraded, err = s.upgrade(passphrase); err != nil {
			return err
		}
		if st, err = read(s.docs, s.docs.Load); err != nil {
			return err
		}
	}
	k, err := st.hdr.unwrap(passphrase)
	if err != nil {
		return err
	}
	st.index(s.docs, k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swap(st)
	s.sec.clear()
	s.sec, s.upgraded = k, upgraded
	s.gen++
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
	if s.sec != nil {
		s.gen++
	}
	s.sec.clear()
	s.sec = nil
	s.keyMu.Lock()
	clear(s.keys)
	s.keyMu.Unlock()
}

// ChangePassphrase rewraps the data key under newPassphrase, with fresh salt
// and the Store's KDF parameters. It rewrites keystore.json alone, atomically:
// after a crash the old passphrase or the new one works, and the keys are
// untouched either way. Another process that has the keystore unlocked
// keeps working, since the data key does not change.
func (s *Store) ChangePassphrase(oldPassphrase, newPassphrase []byte) error {
	if len(newPassphrase) == 0 {
		return ErrEmptyPassphrase
	}
	if _, err := s.upgrade(oldPassphrase); err != nil {
		return err
	}
	return s.write(func(st *state, tx storage.Tx) error {
		k, err := st.hdr.unwrap(oldPassphrase)
		if err != nil {
			return err
		}
		h := st.hdr
		if err := h.wrap(k.data, newPassphrase, s.kdf); err != nil {
			k.clear()
			return err
		}
		if err := writeHeader(tx, h); err != nil {
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

// write runs fn with the store's other writers excluded, on a state freshly
// read from the store, then reloads so memory matches the store. Readers
// are not held up: fn runs without s.mu.
func (s *Store) write(fn func(st *state, tx storage.Tx) error) error {
	ferr := s.docs.Update(context.Background(), func(tx storage.Tx) error {
		st, err := s.load(func(_ context.Context, have func(string, string) bool) (*storage.Snapshot, error) {
			return tx.Load(have)
		})
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.swap(st) // locks the store if it now holds another keystore
		s.mu.Unlock()
		return fn(st, tx)
	})
	st, err := s.load(s.docs.Load)
	if err != nil {
		return errors.Join(ferr, err)
	}
	s.mu.Lock()
	s.swap(st)
	s.mu.Unlock()
	return ferr
}

// saveEntry writes an entry with its MAC, for the keystore st was read
// from, inside write.
func (s *Store) saveEntry(st *state, tx storage.Tx, e *entry) error {
	s.mu.RLock()
	k := s.sec.clone() // Lock may clear the original meanwhile
	s.mu.RUnlock()
	if k == nil {
		return ErrLocked
	}
	defer k.clear()
	return writeEntry(st, tx, e, k)
}

// sealKey stores key in e, sealed under the data key of the keystore st
// was read from.
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
