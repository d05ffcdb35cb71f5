//go:build unix

package storage

import (
	"fmt"
	"io/fs"
	"syscall"
)

// stamp identifies a file's version: its device and inode (a file renamed
// into place is a new one), modification time and size.
func stamp(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, fi.ModTime().UnixNano(), fi.Size())
	}
	return fmt.Sprintf("%d:%d", fi.ModTime().UnixNano(), fi.Size())
}
