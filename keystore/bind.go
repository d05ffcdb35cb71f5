package keystore

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"smimeproxy/storage"
)

// Format versions. Version 1 sealed each private key under the data key but
// left the rest of its file (addresses, certificates) unauthenticated, so
// whoever could write the files could move a key to another address.
// Version 2 adds to each entry a MAC under a key derived from the data key,
// and wraps the data key in keystore.json with the version in its
// additional data, so the version cannot be turned back either. A version 1
// keystore is upgraded in place at its first unlock (see upgrade); from then
// on an entry without a MAC is refused.
const (
	legacyVersion = 1
	formatVersion = 2
)

// secrets are what the passphrase unlocks: the data key, which seals the
// private keys, and the key derived from it that authenticates the rest of
// each entry.
type secrets struct {
	data []byte
	mac  []byte
}

func newSecrets(dataKey []byte) (*secrets, error) {
	mac, err := hkdf.Key(sha256.New, dataKey, nil, "smimeproxy keystore v2 entry mac", keySize)
	if err != nil {
		return nil, fmt.Errorf("keystore: derive the MAC key: %w", err)
	}
	return &secrets{data: dataKey, mac: mac}, nil
}

func (k *secrets) clone() *secrets {
	if k == nil {
		return nil
	}
	return &secrets{data: bytes.Clone(k.data), mac: bytes.Clone(k.mac)}
}

func (k *secrets) clear() {
	if k != nil {
		clear(k.data)
		clear(k.mac)
	}
}

// macInput is what an entry's MAC covers: every field of its file but the
// MAC itself, in one unambiguous encoding, with the keystore's id.
func (e *entry) macInput(storeID string) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	add := func(v []byte) { b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) }) }
	add([]byte("smimeproxy keystore v2 entry"))
	add([]byte(storeID))
	add([]byte(e.id))
	emails := normalizeEmails(e.emails)
	b.AddUint32(uint32(len(emails)))
	for _, m := range emails {
		add([]byte(m))
	}
	add([]byte(e.keyType))
	add([]byte(e.source))
	add([]byte(e.created.UTC().Format(time.RFC3339Nano)))
	add(e.pubDER)
	add(e.sealed)
	for _, list := range [][]*x509.Certificate{e.certs, e.chain} {
		b.AddUint32(uint32(len(list)))
		for _, c := range list {
			add(c.Raw)
		}
	}
	return b.Bytes()
}

// computeMAC is the MAC of e's file under k.
func (e *entry) computeMAC(k *secrets, storeID string) ([]byte, error) {
	in, err := e.macInput(storeID)
	if err != nil {
		return nil, fmt.Errorf("keystore: encode key %s for its MAC: %w", e.id, err)
	}
	h := hmac.New(sha256.New, k.mac)
	h.Write(in)
	return h.Sum(nil), nil
}

// KeyError is a key file that the keystore refuses to use. It matches
// ErrBrokenKey.
type KeyError struct {
	KeyID string
	// Path is the key's file, or where it is in the database
	// (storage.Docs.Where).
	Path   string
	Reason string
}

func (e *KeyError) Error() string { return "keystore: " + e.Path + ": " + e.Reason }

func (e *KeyError) Unwrap() error { return ErrBrokenKey }

// check says why e may not be used, under k, the secrets of the keystore st
// was read from; nil when it may. An entry without a MAC is refused even
// under a version 1 keystore.json: with the secrets at hand the keystore
// was upgraded, so that file was put back from before.
func (st *state) check(docs storage.Docs, e *entry, k *secrets) *KeyError {
	ke := &KeyError{KeyID: e.id, Path: docs.Where(entryName(e.id))}
	switch {
	case !st.opens(e, k):
		ke.Reason = "its private key does not open with this keystore's data key: the file is damaged or comes " +
			"from another keystore; put back a good copy, or import the key again from a backup"
	case e.version < formatVersion:
		ke.Reason = "the file has no MAC binding its addresses and certificates to the data key, which this keystore " +
			"requires since its upgrade: put back the copy the upgrade wrote, or import the key again from a backup"
	default:
		want, err := e.computeMAC(k, st.hdr.StoreID)
		if err == nil && hmac.Equal(want, e.mac) {
			return nil
		}
		ke.Reason = "its addresses, certificates or other details do not match their MAC: the file was changed " +
			"without the passphrase; put back a good copy, or import the key again from a backup"
	}
	return ke
}

// opens reports whether e's private key opens under k.
func (st *state) opens(e *entry, k *secrets) bool {
	der, err := open(k.data, e.sealed, privateKeyAAD(st.hdr.StoreID, e.id))
	clear(der)
	return err == nil
}

// index sorts st's entries by address. With k (the keystore is unlocked)
// it checks each entry first and leaves out the ones that do not check;
// without, the entries are used as they read, unchecked.
func (st *state) index(docs storage.Docs, k *secrets) {
	st.byEmail, st.brokenFor, st.broken = map[string][]*entry{}, map[string][]*entry{}, map[string]*KeyError{}
	for _, id := range slices.Sorted(maps.Keys(st.entries)) {
		e := st.entries[id]
		target := st.byEmail
		if k != nil {
			if ke := st.check(docs, e, k); ke != nil {
				st.broken[id] = ke
				target = st.brokenFor
			}
		}
		for _, m := range e.emails {
			target[m] = append(target[m], e)
		}
	}
	for _, es := range st.byEmail {
		slices.SortStableFunc(es, func(a, b *entry) int { return a.created.Compare(b.created) })
	}
}

// upgrade binds a version 1 keystore's entries to its data key: each entry
// whose private key opens gets a MAC over its file as it stands, then
// keystore.json is rewrapped as version 2. Every file is replaced
// atomically and keystore.json last, so a crash leaves a keystore that
// reads as version 1 and is upgraded at the next unlock. The files are
// trusted as they are at this moment: an upgrade cannot tell what someone
// changed in them before. It reports whether it upgraded anything. A wrong
// passphrase changes nothing.
func (s *Store) upgrade(passphrase []byte) (bool, error) {
	upgraded := false
	err := s.docs.Update(context.Background(), func(tx storage.Tx) error {
		st, err := read(s.docs, func(_ context.Context, have func(string, string) bool) (*storage.Snapshot, error) {
			return tx.Load(have)
		})
		if err != nil || st.hdr.Version >= formatVersion {
			return err // another process upgraded it meanwhile
		}
		kek := st.hdr.KDF.derive(passphrase)
		defer clear(kek)
		dataKey, err := st.hdr.open(kek)
		if err != nil {
			return err
		}
		k, err := newSecrets(dataKey)
		if err != nil {
			return err
		}
		defer k.clear()
		for _, id := range slices.Sorted(maps.Keys(st.entries)) {
			e := st.entries[id]
			if e.version >= formatVersion || !st.opens(e, k) {
				continue // a key that does not open stays as it is, and is reported
			}
			if err := writeEntry(st, tx, e, k); err != nil {
				return fmt.Errorf("keystore: upgrade %s (bind each key to the data key, once): %w", s.docs, err)
			}
		}
		h := st.hdr
		h.Version = formatVersion
		if h.WrappedKey, err = seal(kek, dataKey, dataKeyAAD(h.Version, h.StoreID)); err != nil {
			return fmt.Errorf("keystore: upgrade: wrap the data key: %w", err)
		}
		if err := writeHeader(tx, h); err != nil {
			return fmt.Errorf("keystore: upgrade %s (bind each key to the data key, once): %w", s.docs, err)
		}
		upgraded = true
		return nil
	})
	return upgraded, err
}

// Upgraded reports whether the last Unlock upgraded the keystore from the
// format of before its entries were bound to the data key. That happens
// once in a keystore's life: again means that a keystore.json from before
// the upgrade was put back.
func (s *Store) Upgraded() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.upgraded
}

// writeEntry writes e with its MAC under k, inside an update.
func writeEntry(st *state, tx storage.Tx, e *entry, k *secrets) error {
	mac, err := e.computeMAC(k, st.hdr.StoreID)
	if err != nil {
		return err
	}
	e.version, e.mac = formatVersion, mac
	data, err := e.marshal()
	if err != nil {
		return err
	}
	if err := tx.Put(entryName(e.id), data); err != nil {
		return fmt.Errorf("keystore: save key %s: %w", e.id, err)
	}
	return nil
}

func writeHeader(tx storage.Tx, h header) error {
	data, err := json.MarshalIndent(h, "", "\t")
	if err != nil {
		return err
	}
	return tx.Put(headerFile, data)
}

// Check opens every key that the keystore lists and returns a KeyError for
// each that does not open or that the keystore refuses (see
// IdentityInfo.Problem), in key id order. It needs the keystore unlocked.
func (s *Store) Check() ([]*KeyError, error) {
	s.refresh()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sec == nil {
		return nil, ErrLocked
	}
	var out []*KeyError
	for _, id := range slices.Sorted(maps.Keys(s.st.entries)) {
		if ke := s.st.broken[id]; ke != nil {
			out = append(out, ke)
			continue
		}
		if _, err := s.privateKey(s.st.entries[id]); err != nil {
			reason := strings.TrimPrefix(err.Error(), "keystore: ")
			out = append(out, &KeyError{KeyID: id, Path: s.docs.Where(entryName(id)), Reason: reason})
		}
	}
	return out, nil
}
