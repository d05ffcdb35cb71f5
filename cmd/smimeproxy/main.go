// Command smimeproxy is a transparent S/MIME proxy for SMTP submission and
// IMAP, with the admin commands that manage its keys and certificates.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Before anything reads a passphrase or a key, for every command.
	if err := noCoreDumps(); err != nil {
		fmt.Fprintf(os.Stderr, "smimeproxy: %v\n", err)
		os.Exit(exitFailure)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		tty:    openTTY,
	})
	stop()
	os.Exit(code)
}
