package atomicfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/internal/atomicfile"
)

// temps lists the temporary files left in dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		if strings.Contains(de.Name(), ".tmp-") {
			names = append(names, de.Name())
		}
	}
	return names
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadFile(%s) = %q, %v; want %q", filepath.Base(path), got, err, want)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	for _, data := range []string{"first", "second, longer than the first"} {
		if err := atomicfile.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatalf("WriteFile(%q): %v", data, err)
		}
		checkFile(t, path, []byte(data))
	}
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("WriteFile left %v", got)
	}

	// A failed rename (onto a directory) leaves no temporary file behind.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(sub, []byte("x"), 0o600); err == nil || !strings.HasPrefix(err.Error(), "atomicfile: ") {
		t.Errorf("WriteFile over a directory = %v, want an atomicfile error", err)
	}
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("a failed WriteFile left %v", got)
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := atomicfile.Create(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := atomicfile.Create(path, []byte("second"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing file = %v, want fs.ErrExist", err)
	}
	checkFile(t, path, []byte("first"))
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("Create left %v", got)
	}
}

// TestCreateRace has creators race for one path: exactly one wins, and the
// file holds what the winner wrote.
func TestCreateRace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = atomicfile.Create(path, fmt.Appendf(nil, "creator %d", i), 0o600) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("creators %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("creator %d: %v, want fs.ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no creator won")
	}
	checkFile(t, path, fmt.Appendf(nil, "creator %d", winner))
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("Create left %v", got)
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.json")
	if err := atomicfile.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Remove(path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Remove, Stat = %v, want fs.ErrNotExist", err)
	}
	if err := atomicfile.Remove(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove of a missing file = %v, want fs.ErrNotExist", err)
	}
}

// TestRemoveStale has leftovers of writers that crashed an hour ago, one
// another writer holds now, and files and a directory that are not ours.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	files := []struct {
		name   string
		mtime  time.Time
		remove bool
	}{
		{".f.json.tmp-123456", old, true},
		{".g.pem.tmp-99", old, true},
		{".f.json.tmp-inprogress", time.Now(), false},
		{"f.json", old, false},
		{"README", old, false},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, f.mtime, f.mtime); err != nil {
			t.Fatal(err)
		}
	}
	sub := filepath.Join(dir, ".d.tmp-1")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(sub, old, old); err != nil {
		t.Fatal(err)
	}

	atomicfile.RemoveStale(dir, 15*time.Minute)
	for _, f := range files {
		_, err := os.Stat(filepath.Join(dir, f.name))
		if gone := errors.Is(err, fs.ErrNotExist); gone != f.remove {
			t.Errorf("%s: removed %v, want %v (stat %v)", f.name, gone, f.remove, err)
		}
	}
	if _, err := os.Stat(sub); err != nil {
		t.Errorf("RemoveStale removed a directory: %v", err)
	}
	atomicfile.RemoveStale(filepath.Join(dir, "missing"), 0) // best effort: no panic, no error
}
