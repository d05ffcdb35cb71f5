// Package lab gives tests the project's mail-server lab: a real Postfix
// submission service and a real Dovecot IMAP and LMTP server on 127.0.0.1,
// run by deploy/lab/start. Tests put the proxy in front of it.
package lab

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"smimeproxy/internal/testutil"
)

const (
	// waitTimeout bounds the wait for a message to reach a mailbox: Postfix
	// and Dovecot may be busy with other tests' load.
	waitTimeout = time.Minute
	// dialTimeout bounds each connection the helpers open to the lab.
	dialTimeout = 10 * time.Second
)

// User is a mailbox of the lab and the password that logs in to it over SMTP
// AUTH and IMAP.
type User struct {
	Address  string
	Password string
}

// Lab is a running lab, as deploy/lab/start describes it.
type Lab struct {
	Dir         string // LAB_DIR: everything the lab has lives under it
	Submission  string // LAB_SUBMISSION: Postfix submission, STARTTLS required before AUTH
	IMAP        string // LAB_IMAP: Dovecot IMAP with STARTTLS
	IMAPS       string // LAB_IMAPS: Dovecot IMAP with implicit TLS
	LMTP        string // LAB_LMTP: Dovecot LMTP, no TLS and no AUTH
	CA          string // LAB_CA: PEM file of the CA that signed both servers' certificate
	Cert        string // LAB_CERT: PEM file of the servers' certificate (localhost, 127.0.0.1)
	Key         string // LAB_KEY: PEM file of its private key
	MaildirRoot string // LAB_MAILDIR_ROOT: the Maildir of user@domain is MaildirRoot/domain/user
	Users       []User // LAB_USER lines, in order
}

var peer = testutil.Peer[*Lab]{Dir: "lab", Name: "the lab", Parse: parse}

// Start returns the lab, starting it the first time a test of this binary
// asks (see testutil.Peer).
func Start(t testing.TB) *Lab {
	t.Helper()
	return peer.Start(t)
}

// parse reads the KEY=VALUE lines that deploy/lab/start prints.
func parse(r io.Reader) (*Lab, error) {
	l := &Lab{}
	fields := map[string]*string{
		"LAB_DIR":          &l.Dir,
		"LAB_SUBMISSION":   &l.Submission,
		"LAB_IMAP":         &l.IMAP,
		"LAB_IMAPS":        &l.IMAPS,
		"LAB_LMTP":         &l.LMTP,
		"LAB_CA":           &l.CA,
		"LAB_CERT":         &l.Cert,
		"LAB_KEY":          &l.Key,
		"LAB_MAILDIR_ROOT": &l.MaildirRoot,
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if key == "LAB_USER" {
			addr, pw, ok := strings.Cut(value, ":")
			if !ok {
				return nil, fmt.Errorf("lab: LAB_USER %q has no password", addr)
			}
			l.Users = append(l.Users, User{Address: addr, Password: pw})
		} else if p, ok := fields[key]; ok {
			*p = value
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("lab: read the lab's settings: %w", err)
	}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		if *fields[key] == "" {
			errs = append(errs, fmt.Errorf("lab: %s missing", key))
		}
	}
	if len(l.Users) == 0 {
		errs = append(errs, errors.New("lab: no LAB_USER"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// User returns the lab user whose address is name, or whose local part is
// name when it has no @.
func (l *Lab) User(t testing.TB, name string) User {
	t.Helper()
	for _, u := range l.Users {
		local, _, _ := strings.Cut(u.Address, "@")
		if strings.EqualFold(u.Address, name) || strings.EqualFold(local, name) {
			return u
		}
	}
	t.Fatalf("lab: no user %q", name)
	return User{}
}

// CAPool returns a pool holding only the lab CA.
func (l *Lab) CAPool(t testing.TB) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(l.CA)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("lab: no certificate in %s", l.CA)
	}
	return pool
}

// TLSConfig returns a client configuration that trusts the lab CA alone. The
// servers' certificate names localhost and 127.0.0.1.
func (l *Lab) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	return &tls.Config{RootCAs: l.CAPool(t)}
}

// Maildir returns the Maildir that Dovecot keeps for addr.
func (l *Lab) Maildir(addr string) string {
	local, domain, _ := strings.Cut(strings.ToLower(addr), "@")
	return filepath.Join(l.MaildirRoot, domain, local)
}

// WaitMessage waits for a message holding contains to reach the INBOX of
// addr, and returns it as Dovecot stored it. It reads the Maildir, so it sees
// what the servers delivered without going through IMAP; that needs root, and
// the test skips without it (failing in CI).
func (l *Lab) WaitMessage(t testing.TB, addr, contains string) []byte {
	t.Helper()
	dir := l.Maildir(addr)
	// A Maildir file never changes, only moves from new to cur and gains
	// flags after the colon: each is read once, however large.
	seen := map[string]bool{}
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, sub := range []string{"new", "cur"} {
			entries, err := os.ReadDir(filepath.Join(dir, sub))
			if errors.Is(err, os.ErrPermission) {
				testutil.Absent(t, "reading the lab's Maildirs needs root")
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("lab: read the Maildir of %s: %v", addr, err)
			}
			for _, e := range entries {
				id, _, _ := strings.Cut(e.Name(), ":")
				if seen[id] {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
				if errors.Is(err, os.ErrNotExist) {
					continue // moved from new to cur while we looked
				} else if err != nil {
					t.Fatalf("lab: %v", err)
				}
				if bytes.Contains(b, []byte(contains)) {
					return b
				}
				seen[id] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab: no message with %q reached %s within %v", contains, dir, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DialIMAP returns an IMAP client logged in as u over STARTTLS, verifying the
// lab CA. It is closed when the test ends.
func (l *Lab) DialIMAP(t testing.TB, u User) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialStartTLS(l.IMAP, &imapclient.Options{
		TLSConfig: l.TLSConfig(t),
		Dialer:    &net.Dialer{Timeout: dialTimeout},
	})
	if err != nil {
		t.Fatalf("lab: IMAP STARTTLS to %s: %v", l.IMAP, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(u.Address, u.Password).Wait(); err != nil {
		t.Fatalf("lab: IMAP LOGIN as %s: %v", u.Address, err)
	}
	return c
}

// Append stores msg, byte for byte, in mailbox of u over IMAP and returns its
// UID. Use it for fixtures whose exact bytes matter; Deliver shows how mail
// really arrives.
func (l *Lab) Append(t testing.TB, u User, mailbox string, msg []byte) imap.UID {
	t.Helper()
	c := l.DialIMAP(t, u)
	cmd := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := cmd.Write(msg); err != nil {
		t.Fatalf("lab: APPEND to %s of %s: %v", mailbox, u.Address, err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("lab: APPEND to %s of %s: %v", mailbox, u.Address, err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("lab: APPEND to %s of %s: %v", mailbox, u.Address, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("lab: LOGOUT: %v", err)
	}
	return data.UID
}

// Deliver hands msg to Dovecot over LMTP for the recipients in to, as Postfix
// does with mail from outside: Dovecot adds Return-Path, Delivered-To and
// Received before storing it in each INBOX. It fails the test unless every
// recipient accepted it.
func (l *Lab) Deliver(t testing.TB, from string, to []string, msg []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", l.LMTP, dialTimeout)
	if err != nil {
		t.Fatalf("lab: LMTP to %s: %v", l.LMTP, err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		t.Fatalf("lab: LMTP LHLO: %v", err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("lab: LMTP MAIL FROM:<%s>: %v", from, err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatalf("lab: LMTP RCPT TO:<%s>: %v", rcpt, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("lab: LMTP DATA: %v", err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("lab: LMTP DATA: %v", err)
	}
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		t.Fatalf("lab: LMTP DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("lab: LMTP QUIT: %v", err)
	}
}
