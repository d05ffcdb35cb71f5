package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/term"
)

// ttyFile is the controlling terminal, where secrets are asked for without echo.
type ttyFile interface {
	io.ReadWriteCloser
	Fd() uintptr
}

// openTTY opens /dev/tty, so that prompts work even when standard input
// carries a message.
func openTTY() (ttyFile, error) {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if !term.IsTerminal(int(f.Fd())) {
		f.Close()
		return nil, errors.New("/dev/tty is not a terminal")
	}
	return f, nil
}

// passphraseEnv is the environment variable that may hold the keystore passphrase.
const passphraseEnv = "SMIMEPROXY_PASSPHRASE"

// readSecretFile reads a secret from a file, dropping one trailing newline so
// that `echo secret > file` works.
func readSecretFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	return data, nil
}

// keystorePassphrase finds the keystore passphrase: the file named by
// --passphrase-file or the configuration, then $SMIMEPROXY_PASSPHRASE, then a
// systemd credential named "passphrase", then a prompt on the terminal.
func (e *env) keystorePassphrase(file string) ([]byte, error) {
	if p, ok, err := e.passphraseAtHand(file); ok || err != nil {
		return p, err
	}
	p, err := e.prompt("Keystore passphrase: ")
	if err != nil {
		return nil, fmt.Errorf("no keystore passphrase: use --passphrase-file FILE or set %s (%w)", passphraseEnv, err)
	}
	return nonEmpty(p, "keystore passphrase")
}

// passphraseAtHand is keystorePassphrase without the prompt: ok is false
// when no source holds a passphrase.
func (e *env) passphraseAtHand(file string) (p []byte, ok bool, err error) {
	if file != "" {
		p, err := readSecretFile(file)
		if err != nil {
			return nil, true, fmt.Errorf("read keystore passphrase: %w", err)
		}
		p, err = nonEmpty(p, "keystore passphrase in "+file)
		return p, true, err
	}
	if p := e.getenv(passphraseEnv); p != "" {
		return []byte(p), true, nil
	}
	if dir := e.getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if p, err := readSecretFile(filepath.Join(dir, "passphrase")); err == nil {
			p, err = nonEmpty(p, "keystore passphrase credential")
			return p, true, err
		}
	}
	return nil, false, nil
}

// newSecret reads a secret that is being set: from file when given, else
// asked twice on the terminal. what names it in prompts and errors.
func (e *env) newSecret(file, what, flagName string) ([]byte, error) {
	if file != "" {
		p, err := readSecretFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		return nonEmpty(p, what+" in "+file)
	}
	p, err := e.prompt("New " + what + ": ")
	if err != nil {
		return nil, fmt.Errorf("no %s: use --%s FILE (%w)", what, flagName, err)
	}
	if _, err := nonEmpty(p, what); err != nil {
		return nil, err
	}
	again, err := e.prompt("Repeat the " + what + ": ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p, again) {
		return nil, fmt.Errorf("the two %ss differ; nothing was changed", what)
	}
	return p, nil
}

// existingSecret reads a secret that already exists (such as a .p12 password):
// from file when given, else asked once on the terminal.
func (e *env) existingSecret(file, what, flagName string) ([]byte, error) {
	if file != "" {
		p, err := readSecretFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		return p, nil
	}
	p, err := e.prompt(what + ": ")
	if err != nil {
		return nil, fmt.Errorf("no %s: use --%s FILE (%w)", what, flagName, err)
	}
	return p, nil
}

// prompt asks on the terminal without echo.
func (e *env) prompt(label string) ([]byte, error) {
	if e.tty == nil {
		return nil, errors.New("no terminal to ask on")
	}
	t, err := e.tty()
	if err != nil {
		return nil, fmt.Errorf("no terminal to ask on: %w", err)
	}
	defer t.Close()
	fmt.Fprint(t, label)
	p, err := term.ReadPassword(int(t.Fd()))
	fmt.Fprintln(t)
	if err != nil {
		return nil, fmt.Errorf("read from terminal: %w", err)
	}
	return p, nil
}

func nonEmpty(p []byte, what string) ([]byte, error) {
	if len(p) == 0 {
		return nil, fmt.Errorf("the %s is empty", what)
	}
	return p, nil
}
