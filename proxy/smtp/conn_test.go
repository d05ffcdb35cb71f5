package smtp

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// readCounter is a connection that counts the reads reaching it.
type readCounter struct {
	net.Conn
	r     io.Reader
	reads int
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// TestConnRead: a client's bytes reach go-smtp, reading 4 KiB at a time,
// in order and whole, in a read of the connection per readChunk; a
// connection between commands holds no buffer.
func TestConnRead(t *testing.T) {
	cmd := "MAIL FROM:<alice@example.com>\r\n"
	msg := strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.\r\n", 20000)
	under := &readCounter{r: io.MultiReader(strings.NewReader(cmd), strings.NewReader(msg))}
	c := &conn{Conn: under}

	p := make([]byte, 4096)
	n, err := c.read(p)
	if err != nil || string(p[:n]) != cmd {
		t.Fatalf("first read %q, %v; want the command", p[:n], err)
	}
	if c.rpool != nil {
		t.Error("a connection between commands holds a read buffer")
	}
	var got bytes.Buffer
	if _, err := io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{readerFunc(c.read)}, p); err != nil {
		t.Fatal(err)
	}
	if got.String() != msg {
		t.Fatalf("read %d bytes, not the %d sent as they were", got.Len(), len(msg))
	}
	// The command, the first 4 KiB, then a read per readChunk and the end.
	if max := 3 + len(msg)/readChunk + 1; under.reads > max {
		t.Errorf("%d reads of the connection for %d bytes, want at most %d", under.reads, len(msg), max)
	}
	if c.rpool != nil {
		t.Error("the read buffer was not given back")
	}
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
