package imap

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// FuzzUpstream feeds the relay's pump what a hostile or broken upstream
// might send, while a FETCH is being rewritten: whatever it is, the relay
// must not panic, only pass it on or end the session.
func FuzzUpstream(f *testing.F) {
	for _, s := range []string{
		"* 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\n* 2 FETCH (UID 2 RFC822.SIZE 10 ENVELOPE NIL BODY[]<0> {3}\r\nabc)\r\na OK done\r\n",
		"* 2 FETCH (UID 2 BINARY[1]<0> ~{2}\r\n\x00\x01 BINARY.SIZE[1] 2 PREVIEW (FUZZY \"x\"))\r\n",
		"* 3 FETCH (BODY[HEADER.FIELDS (FROM)] NIL BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1))\r\n",
		"* 1 EXPUNGE\r\n* VANISHED 1:3\r\n* 5 EXISTS\r\n+ go ahead\r\n* BYE bye\r\n",
		"* 2 FETCH (UID 2 BODY[] {999999}\r\nshort",
		"* 2 FETCH (((((((((((\r\n",
		"* CAPABILITY IMAP4rev1 NOTIFY\r\n* OK [UIDVALIDITY 7] x\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := fuzzRelay(t, in, proxy.Options{Config: config.Default(), Metrics: proxy.NewMetrics(nil), Budget: proxy.NewBudget(1<<20, proxy.NewMetrics(nil))})
		sc, _ := scanTest("a FETCH 1:3 (UID RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (From)] BINARY.PEEK[1]<0.2> BODYSTRUCTURE PREVIEW)\r\n")
		commandHead(sc)
		fc, err := parseFetch(sc, false)
		if err != nil {
			t.Fatal(err)
		}
		run := &fetchRun{r: r, f: fc, byUID: map[uint32]*entry{}, bySeq: map[uint32]*entry{}}
		for i, raw := range []string{"Subject: x\r\n\r\nbody\r\n", "", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"} {
			run.add(&entry{seq: uint32(i + 1), uid: uint32(i + 1), kind: kindSMIME, msg: &opened{raw: []byte(raw)}})
		}
		r.icpt = rewriter{run}
		r.register("a", "FETCH", false)
		r.pump()
	})
}

// FuzzUpstreamSearch feeds the relay's pump what a hostile or broken
// upstream might send while the proxy's own SEARCH runs: whatever it is,
// the relay must not panic.
func FuzzUpstreamSearch(f *testing.F) {
	for _, s := range []string{
		"* SEARCH 1 2 3\r\nspx1 OK done\r\n",
		"* SEARCH 2 (MODSEQ 9)\r\n* 3 FETCH (FLAGS (\\Seen))\r\n* ESEARCH (TAG \"spx1\") UID ALL 1:3,5\r\n",
		"* 5 SEARCH x\r\n* ESEARCH ALL\r\n* ESEARCH (TAG \"x\") ALL 4294967295:1\r\n* 2 EXPUNGE\r\n* SEARCH 99999999999\r\n",
		"* ESEARCH ALL " + strings.Repeat("1:1048576,", 1000) + "1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := fuzzRelay(t, in, proxy.Options{Config: config.Default(), Metrics: proxy.NewMetrics(nil)})
		r.icpt = &searchAnswer{r: r}
		r.register("spx1", "", true)
		r.pump()
	})
}

// fuzzRelay is alice's relay with opts, whose upstream sends in and whose
// client reads all it is sent.
func fuzzRelay(t *testing.T, in []byte, opts proxy.Options) *relay {
	client, far := net.Pipe()
	go io.Copy(io.Discard, far)
	t.Cleanup(func() { far.Close() })
	s := &session{
		opts: opts,
		p:    &Proxy{cache: newMsgCache(0, proxy.NewMetrics(nil)), kinds: newKindCache(10)},
		ctx:  context.Background(),
		log:  slog.New(slog.DiscardHandler), conn: client,
		up: &proxy.Upstream{},
	}
	s.bw = bufio.NewWriter(s.writer(client))
	up := &upConn{br: bufio.NewReader(bytes.NewReader(in)), bw: bufio.NewWriter(io.Discard), conn: client}
	return newRelay(s, up, "alice@example.test", false)
}

// scanTest makes a scanner over a whole command or response.
func scanTest(s string) (*scanner, error) {
	br := bufio.NewReader(bytes.NewReader([]byte(s)))
	line, err := readLine(br, 1<<20)
	if err != nil {
		return nil, err
	}
	return newScanner(br, 1<<20, line), nil
}

// FuzzClient feeds the relay's command loop what a hostile client might
// send after login, against an upstream that answers every command OK:
// the relay must not panic or hang, whatever the input.
func FuzzClient(f *testing.F) {
	for _, s := range []string{
		"a FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From)]<0.10> BINARY[1] FLAGS)\r\nb SELECT {5}\r\nINBOX\r\n",
		"a APPEND INBOX {3}\r\nabc\r\nb IDLE\r\nDONE\r\nc UID FETCH 1:* BODY[]\r\n",
		"a COMPRESS DEFLATE\r\nb NOOP\r\nc FETCH 1 (BODY[\r\nd UID\r\n\r\n",
		"a FETCH $ (BODY[]<0.0>)\r\nb FETCH 1 BODY[] (CHANGEDSINCE 1)\r\nc LOGOUT\r\n",
		"a SELECT x\r\nb SEARCH CHARSET UTF-8 BODY {3}\r\nabc\r\nc UID SORT (DATE) UTF-8 OR TEXT x SEEN\r\nd SEARCH RETURN (UPDATE) BODY y\r\ne SEARCH BODY {99999+}\r\nx\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		clientNear, clientFar := net.Pipe()
		upNear, upFar := net.Pipe()
		go io.Copy(io.Discard, clientFar)
		go answerAll(upFar)
		go func() {
			clientFar.Write(in)
			clientFar.Close()
		}()
		cfg := config.Default()
		s := &session{
			opts: proxy.Options{Config: cfg, Metrics: proxy.NewMetrics(nil), Budget: proxy.NewBudget(1<<20, proxy.NewMetrics(nil))},
			p:    &Proxy{cache: newMsgCache(0, proxy.NewMetrics(nil)), kinds: newKindCache(10)},
			ctx:  context.Background(),
			log:  slog.New(slog.DiscardHandler), conn: clientNear,
			br: bufio.NewReader(clientNear), up: &proxy.Upstream{},
		}
		s.bw = bufio.NewWriter(s.writer(clientNear))
		r := newRelay(s, newUpConn(upNear), "alice@example.test", false)
		r.run()
		upFar.Close()
	})
}

// answerAll is an upstream that asks for every synchronising literal and
// answers every command OK.
func answerAll(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var tag []byte
	for {
		line, err := readLine(br, 1<<20)
		if err != nil {
			return
		}
		if tag == nil {
			tag, _, _ = bytes.Cut(trimEOL(line), []byte(" "))
		}
		if l, ok := literalAt(line); ok {
			if l.sync {
				c.Write([]byte("+ ok\r\n"))
			}
			if _, err := io.CopyN(io.Discard, br, l.n); err != nil {
				return
			}
			continue
		}
		c.Write(append(tag, " OK done\r\n"...))
		tag = nil
	}
}
