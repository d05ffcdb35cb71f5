//go:build unix

package atomicfile_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"smimeproxy/internal/atomicfile"
)

// TestModes checks that files get the mode asked for under a permissive
// umask and a strict one. The umask is per process: this test is not
// parallel.
func TestModes(t *testing.T) {
	dir := t.TempDir()
	orig := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(orig) })
	for _, umask := range []int{0o000, 0o077} {
		syscall.Umask(umask)
		for _, perm := range []fs.FileMode{0o600, 0o640, 0o644} {
			for name, write := range map[string]func(string, []byte, fs.FileMode) error{
				"WriteFile": atomicfile.WriteFile,
				"Create":    atomicfile.Create,
			} {
				path := filepath.Join(dir, fmt.Sprintf("%s-%03o-%03o", name, umask, perm))
				if err := write(path, []byte("x"), perm); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != perm {
					t.Errorf("%s(%03o) under umask %03o: mode %03o, want %03o", name, perm, umask, got, perm)
				}
			}
		}
	}
}
