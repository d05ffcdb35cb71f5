//go:build !unix

package storage

// lockFile is a no-op where flock does not exist: writes stay atomic per
// file, but two processes updating the same document at once may lose one
// update.
func lockFile(string) (func(), error) { return func() {}, nil }
