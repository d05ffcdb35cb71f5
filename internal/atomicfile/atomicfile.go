// Package atomicfile writes and removes files so that a crash leaves the old
// state or the new one, never a torn file.
//
// A write goes to a temporary file in the same directory, named
// ".<name>.tmp-<random>", which is synced and then renamed or linked into
// place; the directory is synced after. Directory scans should skip such
// names, and RemoveStale clears the ones a crashed writer left behind.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tempMarker marks the names of temporary files.
const tempMarker = ".tmp-"

// WriteFile replaces path with data, atomically. The file gets exactly
// perm, whatever the umask.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// Create is WriteFile that fails with an error matching fs.ErrExist when
// path exists. A hard link, unlike a rename, never replaces its target, so
// of two processes creating the same file exactly one wins.
func Create(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// Remove removes path and syncs its directory, so that the removal
// survives a crash. A missing path is an error matching fs.ErrNotExist.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// RemoveStale removes the temporary files in dir last modified more than
// olderThan ago. A writer holds its temporary file for milliseconds, so an
// old one is a crashed writer's. It is best effort: a leftover file is
// harmless to scans that skip temporary names.
func RemoveStale(dir string, olderThan time.Duration) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, de := range des {
		if !strings.Contains(de.Name(), tempMarker) || de.IsDir() {
			continue
		}
		if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) > olderThan {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}

// writeTemp writes data to a new temporary file beside path, syncs it and
// returns its name.
func writeTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+tempMarker+"*")
	if err != nil {
		return "", fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // not subject to the umask, unlike the mode at creation
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("atomicfile: %w", err)
	}
	return tmp, nil
}

// syncDir makes a rename, link or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}
