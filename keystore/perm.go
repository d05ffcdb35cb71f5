package keystore

import (
	"fmt"
	"io/fs"
	"runtime"
	"strings"
)

// privacy collects the keystore paths that others than their owner may
// open. Windows has no such mode bits to check.
type privacy struct{ open []string }

func (p *privacy) check(path string, fi fs.FileInfo) {
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		p.open = append(p.open, fmt.Sprintf("%s (mode %04o)", path, fi.Mode().Perm()))
	}
}

// err refuses the keystore in dir when any path was open to others.
func (p *privacy) err(dir string) error {
	if len(p.open) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; a keystore holds private keys and must be its owner's alone: run chmod -R go-rwx %s",
		ErrNotPrivate, strings.Join(p.open, ", "), dir)
}
