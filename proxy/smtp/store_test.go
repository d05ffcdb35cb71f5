package smtp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/config"
	"smimeproxy/keystore"
	"smimeproxy/proxy"
)

// unreachable is a keystore whose store can be made to fail its checks, as
// a keystore in a database does while the database is down.
type unreachable struct {
	*keystore.Store
	mu   sync.Mutex
	down error
}

func (u *unreachable) Available() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.down
}

func (u *unreachable) set(err error) {
	u.mu.Lock()
	u.down = err
	u.mu.Unlock()
}

// TestStoreUnavailable: while the store cannot be reached, a new
// transaction gets a temporary failure and nothing goes upstream; one
// begun before finishes, signed as policy says; once the store is back,
// mail flows again without a restart.
func TestStoreUnavailable(t *testing.T) {
	var ks *unreachable
	e := newEnv(t, envOptions{keys: func(s *keystore.Store) proxy.Keys {
		ks = &unreachable{Store: s}
		return ks
	}})
	msg := "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: store\r\n\r\nHello\r\n"

	begun := e.login()
	begun.cmd("MAIL FROM:<alice@example.com>", "250 *")
	ks.set(errors.New("postgres: the database is down"))

	c := e.login()
	c.cmd("MAIL FROM:<alice@example.com>", "451 4.3.0 The key and certificate store cannot be reached; try again later")
	c.cmd("RCPT TO:<bob@example.org>", "502 5.5.1 *")

	begun.cmd("RCPT TO:<bob@example.org>", "250 *")
	begun.cmd("DATA", "354 *")
	if got := begun.data(msg); !match("250 *", got) {
		t.Fatalf("DATA of a transaction begun before the store went away = %q, want 250", got)
	}
	txns := e.up.transactions()
	if len(txns) != 1 || !strings.Contains(string(txns[0].data), "multipart/signed") {
		t.Fatalf("upstream got %d messages, want the one begun before, signed", len(txns))
	}
	if !strings.Contains(e.logs.String(), "the database is down") {
		t.Error("the refusal does not log why")
	}

	ks.set(nil)
	if got := c.send("alice@example.com", []string{"bob@example.org"}, msg); !match("250 *", got) {
		t.Fatalf("a transaction after the store came back = %q, want 250", got)
	}
	if n := len(e.up.transactions()); n != 2 {
		t.Errorf("upstream got %d messages, want 2", n)
	}
}

// TestProxyProtocol: on a listener behind a load balancer the session's
// log names the client from the PROXY header; a connection without one gets
// no greeting and is closed.
func TestProxyProtocol(t *testing.T) {
	e := newEnv(t, envOptions{listen: []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone, ProxyProtocol: true}}})
	conn, err := net.DialTimeout("tcp", e.addr(0), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := netip.MustParseAddrPort("198.51.100.23:40123")
	hdr := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12)
	hdr = append(hdr, client.Addr().AsSlice()...)
	hdr = append(hdr, 127, 0, 0, 1)
	hdr = binary.BigEndian.AppendUint16(hdr, client.Port())
	hdr = binary.BigEndian.AppendUint16(hdr, 587)
	if _, err := conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220 *")
	c.cmd("EHLO client.test", "250 *")
	c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "235 *")
	c.cmd("QUIT", "221 *")
	if !strings.Contains(e.logs.String(), "remote="+client.String()) {
		t.Errorf("the log does not name the client %s:\n%s", client, e.logs.String())
	}

	direct, err := net.DialTimeout("tcp", e.addr(0), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := direct.Write([]byte("EHLO bypassing.the.balancer\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = direct.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := direct.Read(make([]byte, 64)); n != 0 || err == nil {
		t.Errorf("a connection without a PROXY header read %d bytes, %v; want it closed without a greeting", n, err)
	}
}
