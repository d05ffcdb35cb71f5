package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"smimeproxy/internal/atomicfile"
	"smimeproxy/internal/recheck"
)

const (
	dirMode  = 0o700
	fileMode = 0o600
	// staleTemp is how old a temporary file must be before OpenDir removes
	// it: a writer in another process holds its own for milliseconds.
	staleTemp = 15 * time.Minute
)

// Layout says which files of a directory are a store's documents.
type Layout struct {
	// Files are the documents at the top of the directory, by name.
	Files []string
	// Dirs are the subdirectories that hold documents, each with the test
	// of which file names in it are documents (temporary files and
	// strangers are not).
	Dirs map[string]func(name string) bool
	// Private refuses a directory or file that others than its owner may
	// open (see NotPrivateError).
	Private bool
	// Lock makes writers take an advisory lock on the file .lock, so that
	// other processes' writers wait too; without it they wait only for
	// writers of this process.
	Lock bool
}

// Dir is a store's documents as files in a directory: each write goes to a
// temporary file that is synced and renamed into place, so a crash leaves
// the old file or the new one.
type Dir struct {
	root   string
	layout Layout
	mu     sync.Mutex // writers of this process
}

// OpenDir returns the store in the directory root, removing the temporary
// files a crashed writer left there. Nothing else touches the disk: a
// missing directory loads as a store without documents (see Init).
func OpenDir(root string, l Layout) *Dir {
	d := &Dir{root: root, layout: l}
	for _, sub := range d.dirs() {
		atomicfile.RemoveStale(sub, staleTemp)
	}
	return d
}

// Init makes the directory and its subdirectories, private to their owner
// when the layout says so.
func (d *Dir) Init() error {
	for _, sub := range d.dirs() {
		if err := os.MkdirAll(sub, dirMode); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		if d.layout.Private {
			if err := os.Chmod(sub, dirMode); err != nil {
				return fmt.Errorf("storage: %w", err)
			}
		}
	}
	return nil
}

// Path returns the directory.
func (d *Dir) Path() string { return d.root }

func (d *Dir) String() string { return d.root }

// Where returns a document's file.
func (d *Dir) Where(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

// Available is always nil: a directory has no connection to lose.
func (d *Dir) Available() error { return nil }

// dirs returns the directory and its subdirectories, in a fixed order.
func (d *Dir) dirs() []string {
	out := []string{d.root}
	for _, sub := range slices.Sorted(maps.Keys(d.layout.Dirs)) {
		out = append(out, filepath.Join(d.root, sub))
	}
	return out
}

// dirMark is what Changed compares: the stamps of the top-level files, the
// modification times of the subdirectories, and when they were read.
type dirMark struct {
	files  map[string]string
	mods   map[string]time.Time
	loaded time.Time
}

// Load reads every document; see Docs.Load. A damaged or unreadable file is
// an error naming it, and so, with Layout.Private, is any path that others
// may open: skipping it would hide a document.
func (d *Dir) Load(_ context.Context, have func(name, stamp string) bool) (*Snapshot, error) {
	mark := &dirMark{files: map[string]string{}, mods: map[string]time.Time{}, loaded: time.Now()}
	snap := &Snapshot{Docs: map[string]Doc{}, Mark: mark}
	private := privacy{on: d.layout.Private}
	di, err := os.Stat(d.root)
	if errors.Is(err, fs.ErrNotExist) {
		return snap, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	private.check(d.root, di)
	for _, name := range d.layout.Files {
		p := d.Where(name)
		data, fi, err := readFile(p, have, name)
		if errors.Is(err, fs.ErrNotExist) {
			mark.files[name] = ""
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		private.check(p, fi)
		mark.files[name] = stamp(fi)
		snap.Docs[name] = Doc{Stamp: stamp(fi), Data: data}
	}
	for _, sub := range slices.Sorted(maps.Keys(d.layout.Dirs)) {
		dp := filepath.Join(d.root, sub)
		fi, err := os.Stat(dp)
		if errors.Is(err, fs.ErrNotExist) {
			// A kind of document that an earlier version did not keep.
			mark.mods[sub] = time.Time{}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		private.check(dp, fi)
		mark.mods[sub] = fi.ModTime()
		des, err := os.ReadDir(dp)
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		for _, de := range des {
			if !de.Type().IsRegular() || !d.layout.Dirs[sub](de.Name()) {
				continue
			}
			name := sub + "/" + de.Name()
			p := filepath.Join(dp, de.Name())
			data, fi, err := readFile(p, have, name)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				return nil, fmt.Errorf("storage: %w", err)
			}
			private.check(p, fi)
			snap.Docs[name] = Doc{Stamp: stamp(fi), Data: data}
		}
	}
	if err := private.err(d.root); err != nil {
		return nil, err
	}
	return snap, nil
}

// readFile stats a file and reads it through the same descriptor, unless
// have says the caller holds it at that stamp.
func readFile(p string, have func(name, stamp string) bool, name string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if have != nil && have(name, stamp(fi)) {
		return nil, fi, nil
	}
	data, err := io.ReadAll(f)
	if err == nil && data == nil {
		data = []byte{}
	}
	return data, fi, err
}

// Changed stats the top-level files and the subdirectories. A file rewritten
// through a rename gets a new identity, and a subdirectory a new
// modification time when a file in it is renamed into place or removed.
func (d *Dir) Changed(snap *Snapshot) bool {
	mark, ok := snap.Mark.(*dirMark)
	if !ok {
		return true
	}
	for name, was := range mark.files {
		fi, err := os.Stat(d.Where(name))
		if errors.Is(err, fs.ErrNotExist) && was == "" {
			continue
		}
		if err != nil || stamp(fi) != was {
			return true
		}
	}
	for sub, mod := range mark.mods {
		fi, err := os.Stat(filepath.Join(d.root, sub))
		if errors.Is(err, fs.ErrNotExist) && mod.IsZero() {
			continue
		}
		if err != nil || !fi.ModTime().Equal(mod) || recheck.Unsettled(mod, mark.loaded) {
			return true
		}
	}
	return false
}

// Update runs fn with the writers of this process excluded, and with
// Layout.Lock those of other processes too.
func (d *Dir) Update(ctx context.Context, fn func(tx Tx) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.layout.Lock {
		unlock, err := lockFile(filepath.Join(d.root, ".lock"))
		if err != nil {
			return fmt.Errorf("storage: lock %s: %w", d.root, err)
		}
		defer unlock()
	}
	return fn(dirTx{d: d, ctx: ctx})
}

type dirTx struct {
	d   *Dir
	ctx context.Context
}

func (t dirTx) Load(have func(name, stamp string) bool) (*Snapshot, error) {
	return t.d.Load(t.ctx, have)
}

func (t dirTx) Get(name string) ([]byte, error) {
	p, err := t.d.file(name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

func (t dirTx) Put(name string, data []byte) error {
	p, err := t.d.file(name)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p, data, fileMode)
}

func (t dirTx) Create(name string, data []byte) error {
	p, err := t.d.file(name)
	if err != nil {
		return err
	}
	return atomicfile.Create(p, data, fileMode)
}

func (t dirTx) Delete(name string) error {
	p, err := t.d.file(name)
	if err != nil {
		return err
	}
	return atomicfile.Remove(p)
}

// file returns the path of a document, refusing a name that is not one of
// the layout's: a name read from elsewhere (a database being copied here)
// must not reach outside the directory.
func (d *Dir) file(name string) (string, error) {
	if slices.Contains(d.layout.Files, name) {
		return d.Where(name), nil
	}
	sub, base := path.Split(name)
	if match := d.layout.Dirs[strings.TrimSuffix(sub, "/")]; match != nil && match(base) && fs.ValidPath(name) {
		return d.Where(name), nil
	}
	return "", fmt.Errorf("storage: %q is not a document of %s", name, d.root)
}

// NotPrivateError lists the paths of a private store that others than their
// owner may open.
type NotPrivateError struct {
	Dir   string
	Paths []string // each with its mode
}

func (e *NotPrivateError) Error() string {
	return fmt.Sprintf("storage: open to other users: %s; run chmod -R go-rwx %s", strings.Join(e.Paths, ", "), e.Dir)
}

// privacy collects the paths that others than their owner may open.
// Windows has no such mode bits to check.
type privacy struct {
	on   bool
	open []string
}

func (p *privacy) check(path string, fi fs.FileInfo) {
	if p.on && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		p.open = append(p.open, fmt.Sprintf("%s (mode %04o)", path, fi.Mode().Perm()))
	}
}

func (p *privacy) err(dir string) error {
	if len(p.open) == 0 {
		return nil
	}
	return &NotPrivateError{Dir: dir, Paths: p.open}
}
