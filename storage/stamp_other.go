//go:build !unix

package storage

import (
	"fmt"
	"io/fs"
)

// stamp identifies a file's version by its modification time and size.
func stamp(fi fs.FileInfo) string { return fmt.Sprintf("%d:%d", fi.ModTime().UnixNano(), fi.Size()) }
