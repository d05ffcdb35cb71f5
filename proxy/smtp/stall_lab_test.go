package smtp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"smimeproxy/config"
)

// stallRelay stands between the proxy and the lab's Postfix, relaying TCP.
// On the first connection that carries more than after bytes towards the
// server, everything the client sends beyond them is held back, as if the
// server had stopped reading: bytes in flight. When the client closes the
// connection they are delivered, as TCP delivers what was sent before a
// FIN; when it resets the connection, they are lost, and the server gets a
// reset too.
type stallRelay struct {
	ln     net.Listener
	server string
	after  int
	fired  atomic.Bool
	wg     sync.WaitGroup
}

func newStallRelay(t *testing.T, server string, after int) *stallRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stallRelay{ln: ln, server: server, after: after}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *stallRelay) addr() string { return r.ln.Addr().String() }

func (r *stallRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relay(c.(*net.TCPConn))
		}()
	}
}

func (r *stallRelay) relay(c *net.TCPConn) {
	defer c.Close()
	d, err := net.Dial("tcp", r.server)
	if err != nil {
		return
	}
	u := d.(*net.TCPConn)
	defer u.Close()
	go func() {
		_, _ = io.Copy(c, u)
		c.CloseWrite()
	}()
	var (
		sent  int
		held  []byte
		stall bool
		buf   = make([]byte, 32<<10)
	)
	for {
		n, err := c.Read(buf)
		chunk := buf[:n]
		if !stall && sent+n > r.after && r.fired.CompareAndSwap(false, true) {
			stall = true
			_, _ = u.Write(chunk[:r.after-sent])
			chunk = chunk[r.after-sent:]
		}
		if stall {
			held = append(held, chunk...)
		} else if _, werr := u.Write(chunk); werr != nil {
			return
		}
		sent += n
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			_ = u.SetLinger(0)
			return
		case err != nil:
			_, _ = u.Write(held)
			_ = u.CloseWrite()
			_, _ = io.Copy(io.Discard, u)
			return
		}
	}
}

// TestLabStallAtEndOfData: the upstream stops reading while the end of a
// message is still on its way. The client gets a temporary failure and
// sends the message again; the one the upstream never finished reading
// must not arrive as well: the mailbox holds the message once.
func TestLabStallAtEndOfData(t *testing.T) {
	var relay *stallRelay
	e := newSMTPLabEnvConfig(t, func(c *config.Config) {
		relay = newStallRelay(t, c.SMTP.Upstream.Addr, 64<<10)
		c.SMTP.Upstream.Addr = relay.addr()
		c.SMTP.Timeouts.Data = config.Duration(2 * time.Second)
	})
	marker := marker(t)
	msg := labMessage(marker, "bob@example.test", strings.Repeat("A line of the report, to make it long enough.\r\n", 6000))
	send := func() string {
		c := dialTest(t, e.proxy.Addrs()[1].String())
		c.cmd("EHLO client.test", "250 *")
		c.cmd("AUTH PLAIN "+plain(e.alice.Address, e.alice.Password), "235 *")
		return c.send(e.alice.Address, []string{"bob@example.test"}, msg)
	}
	if got := send(); got != "451 4.4.2 The mail server did not answer in time; try again later" {
		t.Fatalf("DATA reply with the upstream stalled %q, want 451 4.4.2", got)
	}
	if !relay.fired.Load() {
		t.Fatal("the relay never held anything back")
	}
	if got := send(); !match("250 2.0.0 Ok: *queued as *", got) {
		t.Fatalf("DATA reply to the retry %q, want Postfix's 250", got)
	}
	e.lab.WaitMessage(t, "bob@example.test", marker)
	// A second copy would come from the same queue a moment later.
	time.Sleep(3 * time.Second)
	if n := count(t, e.lab.Maildir("bob@example.test"), marker); n != 1 {
		t.Errorf("the message arrived %d times, want once", n)
	}
}

// count is the number of messages in the Maildir dir that contain s.
func count(t testing.TB, dir, s string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		files, err := filepath.Glob(filepath.Join(dir, sub, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(s)) {
				n++
			}
		}
	}
	return n
}
