package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
)

// bareUpstream is an IMAP4rev1 server with none of UNSELECT, IDLE and
// NAMESPACE, which every go-imap server has: it shows that the proxy
// serves them itself. It records the commands it receives.
type bareUpstream struct {
	mu    sync.Mutex
	cmds  []string
	noops int
}

func (u *bareUpstream) start(t *testing.T) string {
	return testutil.Serve(t, u.serve)
}

func (u *bareUpstream) serve(conn net.Conn) {
	defer conn.Close()
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] bare")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		verb, _, _ := strings.Cut(cmd, " ")
		u.mu.Lock()
		u.cmds = append(u.cmds, strings.ToUpper(verb))
		if strings.ToUpper(verb) == "NOOP" {
			u.noops++
		}
		noops := u.noops
		u.mu.Unlock()
		switch strings.ToUpper(verb) {
		case "CAPABILITY":
			say("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
		case "SELECT", "EXAMINE":
			say("* 2 EXISTS")
			say("* OK [UIDVALIDITY 1] v")
			say("* OK [UIDNEXT 3] n")
			say("* FLAGS (\\Seen)")
		case "LIST":
			say(`* LIST (\Noselect) "." ""`)
		case "NOOP":
			if noops == 2 {
				say("* 3 EXISTS")
			}
		case "LOGOUT":
			say("* BYE bye")
			say(tag + " OK done")
			return
		}
		say(tag + " OK done")
	}
}

func (u *bareUpstream) commands() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.cmds, " ")
}

type noKeys struct{}

func (noKeys) Signer(string, time.Time) (*keystore.Signer, error) { return nil, keystore.ErrLocked }
func (noKeys) EncryptionCert(string, time.Time) (*x509.Certificate, error) {
	return nil, keystore.ErrLocked
}
func (noKeys) DecryptionKeys(string) ([]keystore.KeyPair, error) { return nil, keystore.ErrLocked }
func (noKeys) Locked() bool                                      { return true }

type noCerts struct{}

func (noCerts) Lookup(context.Context, string) (*certcache.Entry, error) {
	return nil, certcache.ErrNoCert
}
func (noCerts) Roots() *x509.CertPool         { return x509.NewCertPool() }
func (noCerts) Intermediates() *x509.CertPool { return x509.NewCertPool() }
func (noCerts) Harvest(*x509.Certificate, *x509.Certificate, time.Time, []cms.Capability) error {
	return nil
}

func TestIMAPEmulatesUnselectIdleNamespace(t *testing.T) {
	defer func(d time.Duration) { idlePollInterval = d }(idlePollInterval)
	idlePollInterval = 20 * time.Millisecond
	up := &bareUpstream{}
	cfg := config.Default()
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	cfg.IMAP.Upstream = config.Upstream{Addr: up.start(t), TLS: config.TLSNone}
	px, err := NewIMAP(Options{Config: cfg, Policy: policy.Default(), Keys: noKeys{}, Certs: noCerts{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer px.Shutdown(context.Background())

	conn, err := net.Dial("tcp", px.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	r.ReadString('\n')
	n := 0
	do := func(cmd string) []string {
		t.Helper()
		n++
		tag := fmt.Sprintf("t%d", n)
		fmt.Fprintf(conn, "%s %s\r\n", tag, cmd)
		var lines []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v (%q)", cmd, err, lines)
			}
			lines = append(lines, l)
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					t.Fatalf("%s: %q", cmd, lines)
				}
				return lines
			}
		}
	}
	do("LOGIN bob@example.test pw")
	if got := do("NAMESPACE"); !strings.HasPrefix(got[0], `* NAMESPACE (("" ".")) NIL NIL`) {
		t.Errorf("NAMESPACE: %q", got)
	}
	do("SELECT INBOX")
	do("UNSELECT")
	// Without UNSELECT upstream: EXAMINE, so that CLOSE expunges nothing.
	if got := up.commands(); !strings.HasSuffix(got, "SELECT EXAMINE CLOSE") || strings.Contains(got, "EXPUNGE") {
		t.Errorf("upstream saw %s", got)
	}
	do("SELECT INBOX")
	fmt.Fprintf(conn, "t99 IDLE\r\n")
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	// The upstream has news at its second NOOP.
	if l, err := r.ReadString('\n'); err != nil || l != "* 3 EXISTS\r\n" {
		t.Errorf("during IDLE: %q %v", l, err)
	}
	fmt.Fprintf(conn, "DONE\r\n")
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "t99 OK") {
		t.Errorf("DONE: %q", l)
	}
	if strings.Contains(up.commands(), "IDLE") {
		t.Errorf("IDLE reached an upstream without it: %s", up.commands())
	}
}
