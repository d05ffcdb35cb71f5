// Package storage keeps the documents of smimeproxy's two stores, the
// keystore and the certificate cache: in a directory of files (Dir, the
// default, for one instance) or in PostgreSQL (package storage/postgres, for
// several instances sharing one store). A document is a small byte string
// named by a slash-separated path, such as "keys/<id>.json": in a directory
// it is the file at that path, in a database a row. The stores decide what
// the bytes mean; storage moves them unchanged, so a private key stays
// sealed under the keystore passphrase wherever it is kept, and copying a
// store from one kind to the other and back gives the same bytes.
package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Docs is one store's documents.
type Docs interface {
	// Load reads every document. Those for which have reports true (the
	// caller holds them already, at that stamp) come without their Data;
	// have may be nil.
	Load(ctx context.Context, have func(name, stamp string) bool) (*Snapshot, error)
	// Changed reports whether the documents may have changed since snap was
	// loaded, by this process or another. It is cheap and never waits on the
	// network, so lookups may call it: a directory stats a few paths, a
	// database compares the change counter it last polled.
	Changed(snap *Snapshot) bool
	// Update runs fn with every other writer of the store excluded, in this
	// process and in others, so that what fn reads through tx is current
	// until it returns. In a database fn's writes land together when it
	// returns nil and not at all otherwise; in a directory each lands when
	// made, atomically per file.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// Available is nil while the store can be reached, or says why not. A
	// directory is always available; a database is not while its last
	// check failed.
	Available() error
	// Where names a document for people: a file's path, or the row in the
	// database.
	Where(name string) string
	// String names the store for people: its directory, or its database.
	String() string
}

// Tx is what Update's fn reads and writes through.
type Tx interface {
	// Load is Docs.Load, inside the update.
	Load(have func(name, stamp string) bool) (*Snapshot, error)
	// Get returns a document; an error matching fs.ErrNotExist when there is none.
	Get(name string) ([]byte, error)
	// Put writes a document, replacing the one of that name.
	Put(name string, data []byte) error
	// Create writes a new document; an error matching fs.ErrExist when one
	// of that name exists.
	Create(name string, data []byte) error
	// Delete removes a document; an error matching fs.ErrNotExist when there is none.
	Delete(name string) error
}

// Snapshot is every document of a store at one moment, by name.
type Snapshot struct {
	Docs map[string]Doc
	// Mark is what the store that made the snapshot needs to tell a later
	// change (Docs.Changed); opaque to everyone else.
	Mark any
}

// Doc is one document in a Snapshot.
type Doc struct {
	// Stamp changes whenever the document is rewritten: a file's identity,
	// time and size, or the change counter of the database's last write.
	Stamp string
	// Data is the document's bytes; nil when Load's have said the caller
	// holds them.
	Data []byte
}

// Same reports whether s and o hold the same documents at the same stamps.
func (s *Snapshot) Same(o *Snapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	return maps.EqualFunc(s.Docs, o.Docs, func(a, b Doc) bool { return a.Stamp == b.Stamp })
}

// Names returns the names of the documents, sorted.
func (s *Snapshot) Names() []string { return slices.Sorted(maps.Keys(s.Docs)) }

// ErrNotEmpty is a copy into a store that holds documents already.
var ErrNotEmpty = errors.New("storage: the destination holds documents already")

// Copy copies every document of src into dst, which must hold none, and
// returns how many it copied. src's writers wait meanwhile, so the copy is
// of one moment; in a database dst gets all of them or, on failure, none.
func Copy(ctx context.Context, dst, src Docs) (int, error) {
	n := 0
	err := src.Update(ctx, func(stx Tx) error {
		snap, err := stx.Load(nil)
		if err != nil {
			return err
		}
		return dst.Update(ctx, func(dtx Tx) error {
			have, err := dtx.Load(func(string, string) bool { return true })
			if err != nil {
				return err
			}
			if len(have.Docs) > 0 {
				return fmt.Errorf("%w: %s holds %d; copy into an empty store", ErrNotEmpty, dst, len(have.Docs))
			}
			for _, name := range snap.Names() {
				if err := dtx.Create(name, snap.Docs[name].Data); err != nil {
					return fmt.Errorf("storage: copy %s to %s: %w", src.Where(name), dst, err)
				}
				n++
			}
			return nil
		})
	})
	return n, err
}
