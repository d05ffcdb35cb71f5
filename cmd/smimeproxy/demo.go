package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/demo"
	"smimeproxy/keystore"
)

// demoUsers are the demo's mail users, in the order they are shown.
var demoUsers = []string{"alice@demo.test", "bob@demo.test"}

func demoCommand() *command {
	var (
		smtpAddr, imapAddr, metricsAddr string
		selfTest                        bool
	)
	return &command{
		name:  "demo",
		usage: "demo [--self-test] [--smtp-addr HOST:PORT] [--imap-addr HOST:PORT]",
		short: "run the proxy in front of a built-in mail server, with demo users",
		help: `Runs everything on this machine with no other software: a mail server in
memory with the users alice@demo.test and bob@demo.test, a demo certificate
authority with a certificate for each, and the SMTP and IMAP proxies in front,
on loopback. Point a mail client at the printed ports and write from one user
to the other: mail leaves signed and encrypted and arrives decrypted and
verified. Nothing is kept: the keystore lives in a temporary directory.

--self-test sends a message from alice to bob through the SMTP proxy, looks at
what the mail server stored, reads it back through the IMAP proxy, says what
happened at each step, and exits 0 only if all of it worked.`,
		examples: `  go run ./cmd/smimeproxy demo
  smimeproxy demo --self-test
  smimeproxy demo --smtp-addr 127.0.0.1:2587 --imap-addr 127.0.0.1:2143`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&smtpAddr, "smtp-addr", "127.0.0.1:1587", "the SMTP proxy's `HOST:PORT` (loopback)")
			fs.StringVar(&imapAddr, "imap-addr", "127.0.0.1:1143", "the IMAP proxy's `HOST:PORT` (loopback)")
			fs.StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on `HOST:PORT`")
			fs.BoolVar(&selfTest, "self-test", false, "send a message through the proxies, check it, and exit")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if selfTest {
				// Free ports: a self-test must work beside a running demo.
				smtpAddr, imapAddr = "127.0.0.1:0", "127.0.0.1:0"
			}
			d, err := startDemo(ctx, e, smtpAddr, imapAddr, metricsAddr, selfTest)
			if err != nil {
				return err
			}
			defer d.close()
			if selfTest {
				return d.selfTest(ctx, e.stdout)
			}
			d.describe(e)
			<-ctx.Done()
			fmt.Fprintln(e.stderr, "\nStopping the demo.")
			return nil
		},
	}
}

// demoRun is a running demo.
type demoRun struct {
	dir       string
	passwords map[string]string
	upstream  *demo.Upstream
	srv       *server
}

func startDemo(ctx context.Context, e *env, smtpAddr, imapAddr, metricsAddr string, quiet bool) (*demoRun, error) {
	dir, err := os.MkdirTemp("", "smimeproxy-demo-")
	if err != nil {
		return nil, err
	}
	d := &demoRun{dir: dir, passwords: map[string]string{}}
	if err := d.start(ctx, e, smtpAddr, imapAddr, metricsAddr, quiet); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *demoRun) start(ctx context.Context, e *env, smtpAddr, imapAddr, metricsAddr string, quiet bool) error {
	level := "info"
	if quiet {
		level = "warn"
	}
	log := newLogger(config.Log{Level: level, Format: "text"}, e.stderr)
	for _, u := range demoUsers {
		d.passwords[u] = randomHex(6)
	}
	var err error
	if d.upstream, err = demo.StartUpstream(d.passwords, log); err != nil {
		return err
	}
	pki, err := demo.NewPKI(demoUsers)
	if err != nil {
		return err
	}
	ks, err := keystore.Create(filepath.Join(d.dir, "keystore"), []byte(randomHex(16)), nil)
	if err != nil {
		return err
	}
	cc, err := certcache.Open(filepath.Join(d.dir, "certcache"), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		return err
	}
	if err := pki.Install(ks, cc); err != nil {
		return err
	}

	c := config.Default()
	c.ServerName = "smimeproxy-demo"
	c.Keystore.Dir = filepath.Join(d.dir, "keystore")
	c.SMTP.Listen = []config.Listener{{Addr: smtpAddr, TLS: config.TLSNone}}
	c.SMTP.Upstream = config.Upstream{Addr: d.upstream.SMTPAddr, TLS: config.TLSNone}
	c.IMAP.Listen = []config.Listener{{Addr: imapAddr, TLS: config.TLSNone}}
	c.IMAP.Upstream = config.Upstream{Addr: d.upstream.IMAPAddr, TLS: config.TLSNone}
	c.Metrics.Listen = metricsAddr
	c.Trust.SystemRoots = false
	if err := c.Validate(); err != nil {
		return fmt.Errorf("demo addresses: %w", err)
	}
	if d.srv, err = start(ctx, c, ks, cc, log); err != nil {
		return fmt.Errorf("%w (use --smtp-addr and --imap-addr to pick other ports)", err)
	}
	return nil
}

func (d *demoRun) close() {
	if d.srv != nil {
		d.srv.shutdown()
	}
	if d.upstream != nil {
		d.upstream.Close()
	}
	os.RemoveAll(d.dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (d *demoRun) smtpAddr() string { return d.srv.smtp.Addrs()[0].String() }
func (d *demoRun) imapAddr() string { return d.srv.imap.Addrs()[0].String() }

// describe tells a person how to use the demo, and scripts the same facts as
// KEY=VALUE lines on standard output.
func (d *demoRun) describe(e *env) {
	smtpHost, smtpPort := splitAddr(d.smtpAddr())
	imapHost, imapPort := splitAddr(d.imapAddr())
	w := e.stderr
	fmt.Fprintf(w, `
smimeproxy demo is running. Point a mail client (Thunderbird: Account Settings,
Account Actions, Add Mail Account, Configure manually) at it:

  Incoming (IMAP):  server %s, port %s, connection security None, normal password
  Outgoing (SMTP):  server %s, port %s, connection security None, normal password

  Users (the user name is the address):
`, imapHost, imapPort, smtpHost, smtpPort)
	for _, u := range demoUsers {
		fmt.Fprintf(w, "    %-16s password %s\n", u, d.passwords[u])
	}
	fmt.Fprintf(w, `
Write from one to the other: the mail server receives it signed and encrypted,
and the client reads it decrypted, with an Authentication-Results field saying
the signature is valid. Plain connections are safe here: everything is on
loopback. Stop with Ctrl-C; nothing is kept.

`)
	fmt.Fprintf(e.stdout, "SMIMEPROXY_SMTP=%s\nSMIMEPROXY_IMAP=%s\n", d.smtpAddr(), d.imapAddr())
	for _, u := range demoUsers {
		fmt.Fprintf(e.stdout, "SMIMEPROXY_USER=%s:%s\n", u, d.passwords[u])
	}
}

func splitAddr(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// selfTest sends alice -> bob through the proxies and checks each step.
func (d *demoRun) selfTest(ctx context.Context, w io.Writer) error {
	alice, bob := demoUsers[0], demoUsers[1]
	marker := "self-test " + randomHex(4)
	body := "Hello Bob, this is " + marker + ".\r\n"
	msg := "From: Alice <" + alice + ">\r\nTo: Bob <" + bob + ">\r\nSubject: smimeproxy self-test" +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + randomHex(8) + "@demo.test>\r\n\r\n" + body

	failed := 0
	step := func(what string, err error) bool {
		if err != nil {
			failed++
			fmt.Fprintf(w, "FAIL %s: %v\n", what, err)
			return false
		}
		fmt.Fprintf(w, "ok   %s\n", what)
		return true
	}

	fmt.Fprintf(w, "Sending a message from %s to %s through the SMTP proxy at %s.\n", alice, bob, d.smtpAddr())
	reply, err := submit(d.smtpAddr(), alice, d.passwords[alice], bob, msg)
	if !step("the SMTP proxy accepted it: "+reply, err) {
		return errors.New("self-test failed")
	}

	fmt.Fprintf(w, "Looking at what the mail server stored for %s.\n", bob)
	stored, err := fetchLast(ctx, d.upstream.IMAPAddr, bob, d.passwords[bob])
	if step("the mail server holds a message for bob", err) {
		step("it is encrypted on the server (application/pkcs7-mime)", expect(stored,
			[]string{"application/pkcs7-mime"}, []string{"Hello Bob", marker}))
	}

	fmt.Fprintf(w, "Reading it as %s through the IMAP proxy at %s.\n", bob, d.imapAddr())
	read, err := fetchLast(ctx, d.imapAddr(), bob, d.passwords[bob])
	if step("the IMAP proxy served the message", err) {
		step("it is decrypted: the client sees the text alice wrote", expect(read, []string{body}, nil))
		step("alice's signature is verified: Authentication-Results says smime=pass", expect(read, []string{"Authentication-Results:", "smime=pass"}, nil))
	}

	if failed > 0 {
		fmt.Fprintf(w, "Self-test FAILED: %d step(s).\n", failed)
		return errors.New("self-test failed")
	}
	fmt.Fprintln(w, "Self-test passed: signed and encrypted on the way out, decrypted and verified on the way in.")
	return nil
}

// submit sends msg with AUTH PLAIN and returns the server's final reply.
func submit(addr, user, password, to, msg string) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return "", fmt.Errorf("AUTH: %w", err)
	}
	if err := c.Mail(user, nil); err != nil {
		return "", fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", fmt.Errorf("RCPT TO: %w", err)
	}
	wc, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := io.WriteString(wc, msg); err != nil {
		return "", err
	}
	resp, err := wc.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	c.Quit()
	return "250 " + resp.StatusText, nil
}

// fetchLast logs in over plain IMAP on loopback and returns the newest
// message of INBOX, without setting \Seen.
func fetchLast(ctx context.Context, addr, user, password string) ([]byte, error) {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		return nil, fmt.Errorf("LOGIN: %w", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("SELECT: %w", err)
	}
	if sel.NumMessages == 0 {
		return nil, errors.New("INBOX is empty")
	}
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(sel.NumMessages), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("FETCH: %w", err)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("FETCH returned %d messages", len(msgs))
	}
	c.Logout().Wait()
	return msgs[0].FindBodySection(section), nil
}

// expect checks that msg contains every string of has and none of hasNot.
func expect(msg []byte, has, hasNot []string) error {
	for _, s := range has {
		if !bytes.Contains(msg, []byte(s)) {
			return fmt.Errorf("%q not found", s)
		}
	}
	for _, s := range hasNot {
		if bytes.Contains(msg, []byte(s)) {
			return fmt.Errorf("%q visible on the server", s)
		}
	}
	return nil
}
