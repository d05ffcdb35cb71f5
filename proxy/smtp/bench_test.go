package smtp

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// smime's benchmarks measure Sign and Encrypt alone. These measure the
// proxy's whole message path in process (client to proxy to upstream, over
// loopback TCP and STARTTLS upstream: read, policy, certificate lookups,
// sign, encrypt, relay), next to one private-key operation with the key it
// signs with, so that the ratio to the crypto bound shows:
//
//	go test -run '^$' -bench . ./proxy/smtp
//
// Neither end is go-smtp, which reads and writes DATA's body a byte at a
// time and would be most of what is measured: the client writes each
// message in one write, already dot-stuffed, and the upstream (sink) reads
// DATA's body a line at a time from a large buffer. Each size runs with
// the client sending DATA and BDAT (the proxy's go-smtp server reads DATA
// a byte at a time, BDAT in bulk), each with the upstream offering
// CHUNKING or not: sign/64KB/bdat/data is a client's BDAT relayed upstream
// as DATA. On a machine others share, cpu_ms/msg (the CPU time of the
// whole test process, both ends included, per message) varies less than
// the rates.

var benchSizes = []int{4 << 10, 64 << 10, 1 << 20}

func BenchmarkData(b *testing.B) {
	p := testPKI(b)
	for _, mode := range []struct {
		name  string
		rcpts []string
		certs []*x509.Certificate
	}{
		{"sign", []string{"bob@example.org"}, nil},
		{"sign_encrypt3", []string{"bob@example.org", "carol@example.org", "dave@example.net"}, []*x509.Certificate{p.bob.Cert, p.carol.Cert, p.dave.Cert}},
	} {
		for _, size := range benchSizes {
			for _, legs := range []struct{ client, up string }{{"data", "bdat"}, {"bdat", "bdat"}, {"data", "data"}, {"bdat", "data"}} {
				b.Run(fmt.Sprintf("%s/%dKB/%s/%s", mode.name, size>>10, legs.client, legs.up), func(b *testing.B) {
					up := newSink(b, p, legs.up == "bdat")
					e := newEnv(b, envOptions{certs: mode.certs, quiet: true, upAddr: up.addr()})
					c := dialBench(b, e.addr(0))
					line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
					msg := message(mode.rcpts[0], "Bench", strings.Repeat(line, size/len(line)+1)[:size], "Cc: "+strings.Join(mode.rcpts[1:], ", "))
					wire := wireForm(msg, legs.client == "bdat")
					b.SetBytes(int64(len(msg)))
					cpu := processCPU(b)
					for b.Loop() {
						if err := c.send("alice@example.com", len(msg), mode.rcpts, wire, legs.client == "bdat"); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
					b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/1000/float64(b.N), "cpu_ms/msg")
					if got := up.msgs.Load(); got != int64(b.N) {
						b.Fatalf("the upstream took %d messages, want %d", got, b.N)
					}
				})
			}
		}
	}
}

// BenchmarkKeyOp is one PKCS #1 v1.5 signature with the key
// BenchmarkData signs with: the floor of its cost per message.
func BenchmarkKeyOp(b *testing.B) {
	key := testPKI(b).alice.Key
	digest := sha256.Sum256([]byte("message digest"))
	for b.Loop() {
		if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// benchClient is a submission client that writes each message in one
// write, as DATA (dot-stuffed) or as one BDAT LAST chunk.
type benchClient struct {
	conn net.Conn
	r    *textproto.Reader
}

func dialBench(b *testing.B, addr string) *benchClient {
	b.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	c := &benchClient{conn: conn, r: textproto.NewReader(bufio.NewReader(conn))}
	if _, _, err := c.r.ReadResponse(220); err != nil {
		b.Fatal(err)
	}
	if err := c.cmd(250, "EHLO bench.test"); err != nil {
		b.Fatal(err)
	}
	if err := c.cmd(235, "AUTH PLAIN "+plain("alice@example.com", testPassword)); err != nil {
		b.Fatal(err)
	}
	return c
}

func (c *benchClient) cmd(code int, line string) error {
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return err
	}
	_, _, err := c.r.ReadResponse(code)
	return err
}

// send runs one transaction, waiting for each reply as go-smtp's client
// does, and declaring the message's size as Thunderbird does; wire is the
// message as wireForm makes it.
func (c *benchClient) send(from string, size int, rcpts []string, wire []byte, bdat bool) error {
	if err := c.cmd(250, fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", from, size)); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.cmd(250, "RCPT TO:<"+r+">"); err != nil {
			return err
		}
	}
	if !bdat {
		if err := c.cmd(354, "DATA"); err != nil {
			return err
		}
	}
	if _, err := c.conn.Write(wire); err != nil {
		return err
	}
	_, _, err := c.r.ReadResponse(250)
	return err
}

// wireForm is msg as sent after DATA's 354, or as BDAT with its command.
func wireForm(msg string, bdat bool) []byte {
	if bdat {
		return fmt.Appendf(nil, "BDAT %d LAST\r\n%s", len(msg), msg)
	}
	return []byte(dotStuffed(msg))
}

// sink is an upstream for benchmarks: it takes any login and every
// message and keeps nothing, reading DATA's body a line at a time and
// BDAT's chunks whole, from a large buffer.
type sink struct {
	ln       net.Listener
	tls      *tls.Config
	chunking bool // offer CHUNKING
	msgs     atomic.Int64
}

func newSink(b *testing.B, p *pki, chunking bool) *sink {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sink{ln: ln, tls: &tls.Config{Certificates: []tls.Certificate{p.server}}, chunking: chunking}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(conn)
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		<-done
	})
	return s
}

func (s *sink) addr() string { return s.ln.Addr().String() }

func (s *sink) serve(conn net.Conn) {
	defer func() { conn.Close() }()
	br := bufio.NewReaderSize(conn, 64<<10)
	say := func(reply string) bool {
		_, err := io.WriteString(conn, reply)
		return err == nil
	}
	if !say("220 sink.test ESMTP\r\n") {
		return
	}
	secure := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		reply := "250 2.0.0 Ok\r\n"
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply = "250-sink.test\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250-ENHANCEDSTATUSCODES\r\n"
			if !secure {
				reply += "250-STARTTLS\r\n"
			}
			if s.chunking {
				reply += "250-CHUNKING\r\n"
			}
			reply += "250 PIPELINING\r\n"
		case "STARTTLS":
			if !say("220 2.0.0 Ready\r\n") {
				return
			}
			conn = tls.Server(conn, s.tls)
			br.Reset(conn)
			secure = true
			continue
		case "AUTH":
			reply = "235 2.7.0 Authentication successful\r\n"
		case "DATA":
			if !say("354 End data with <CR><LF>.<CR><LF>\r\n") || !readDotted(br) {
				return
			}
			s.msgs.Add(1)
			reply = "250 2.0.0 Ok: queued\r\n"
		case "BDAT":
			size, last, _ := strings.Cut(arg, " ")
			n, err := strconv.Atoi(size)
			if err != nil {
				return
			}
			if _, err := br.Discard(n); err != nil {
				return
			}
			if last != "" {
				s.msgs.Add(1)
				reply = "250 2.0.0 Ok: queued\r\n"
			}
		case "QUIT":
			say("221 2.0.0 Bye\r\n")
			return
		}
		if !say(reply) {
			return
		}
	}
}

// readDotted reads DATA's body up to its final dot.
func readDotted(br *bufio.Reader) bool {
	lineStart := true
	for {
		l, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return false
		}
		if lineStart && bytes.Equal(l, []byte(".\r\n")) {
			return true
		}
		lineStart = err == nil
	}
}
