package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"smimeproxy/internal/testutil"
)

func TestIMAPUpstreamUnreachableAtLogin(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, &imapEnvOptions{upstream: testutil.UnusedAddr(t)})
	c, greeting := dialIMAPRaw(t, env.addr)
	if !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting: %q", greeting)
	}
	_, tagged := c.do("LOGIN bob@example.test pw-bob@example.test")
	if tagged != "a1 NO [UNAVAILABLE] Cannot reach the mail server" {
		t.Errorf("LOGIN: %q", tagged)
	}
	if got := env.metric(t, "smimeproxy_upstream_errors_total", "proto", "imap", "stage", "connect"); got != 1 {
		t.Errorf("upstream connect errors = %v, want 1", got)
	}
	if err := env.proxy.Check(t.Context()); err == nil {
		t.Error("Check with the upstream down: no error")
	}
}

// expectBye reads until the server says BYE and closes the connection,
// failing if that takes more than a few seconds.
func expectBye(t *testing.T, c *imapRaw) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.conn.SetReadDeadline(deadline)
		line, err := c.r.ReadString('\n')
		if line != "" {
			got = append(got, line)
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("no BYE nor close after 10s; got %q", got)
			}
			break
		}
	}
	if !containsPrefix(got, "* BYE") {
		t.Errorf("connection ended without BYE: %q", got)
	}
	return got
}

func TestIMAPUpstreamDropsMidSession(t *testing.T) {
	t.Run("idle client", func(t *testing.T) {
		up := startIMAPUpstream(t)
		env := newIMAPEnv(t, up, nil)
		up.user("bob@example.test")
		c, _ := dialIMAPRaw(t, env.addr)
		c.expectOK("LOGIN bob@example.test pw-bob@example.test")
		c.expectOK("SELECT INBOX")
		up.dropAll()
		got := expectBye(t, c)
		if !containsPrefix(got, "* BYE Connection to the mail server lost") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("during a FETCH", func(t *testing.T) {
		up := startIMAPUpstream(t)
		env := newIMAPEnv(t, up, nil)
		up.appendMsg("bob@example.test", "INBOX", mailMessage("a@example.test", "bob@example.test", "x", "y"))
		c, _ := dialIMAPRaw(t, env.addr)
		c.expectOK("LOGIN bob@example.test pw-bob@example.test")
		c.expectOK("SELECT INBOX")
		up.fetchHook = func(*imapserver.FetchWriter, imap.NumSet, *imap.FetchOptions) (bool, error) {
			up.dropAll()
			return true, fmt.Errorf("gone")
		}
		c.send("a9 FETCH 1 (BODY[])")
		got := expectBye(t, c)
		if containsPrefix(got, "a9 OK") {
			t.Errorf("FETCH succeeded: %q", got)
		}
	})
}

func TestIMAPTruncatedLiteral(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			up := startIMAPUpstream(t)
			env := newIMAPEnv(t, up, nil)
			msg := mailMessage("a@example.test", "bob@example.test", "x", strings.Repeat("long line of text\r\n", 500))
			if encrypted {
				msg = mustEncrypt(t, msg, env.pki.bob.Cert)
			}
			uid := up.appendMsg("bob@example.test", "INBOX", msg)
			up.fetchHook = func(w *imapserver.FetchWriter, _ imap.NumSet, opts *imap.FetchOptions) (bool, error) {
				for _, bs := range opts.BodySection {
					if bs.Specifier == imap.PartSpecifierNone && len(bs.Part) == 0 {
						rw := w.CreateMessage(1)
						rw.WriteUID(uid)
						wc := rw.WriteBodySection(bs, int64(len(msg)))
						wc.Write(msg[:len(msg)/2])
						up.dropAll()
						return true, fmt.Errorf("cut")
					}
				}
				return false, nil
			}
			c, _ := dialIMAPRaw(t, env.addr)
			c.expectOK("LOGIN bob@example.test pw-bob@example.test")
			c.expectOK("SELECT INBOX")
			c.send("a9 UID FETCH 1 (BODY.PEEK[])")
			// The answer cannot complete: the client must see the
			// connection end, not wait for it.
			deadline := time.Now().Add(10 * time.Second)
			var got bytes.Buffer
			for {
				c.conn.SetReadDeadline(deadline)
				b, err := c.r.ReadByte()
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatalf("connection still open after 10s; got %q", got.String())
					}
					break
				}
				got.WriteByte(b)
			}
			if strings.Contains(got.String(), "a9 OK") {
				t.Errorf("a truncated message was served as complete: %q", got.String())
			}
		})
	}
}

func TestIMAPLyingBodyStructure(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	stored := map[imap.UID][]byte{}
	for _, m := range [][]byte{mailMessage("a@example.test", user, "plain", "text"), mustEncrypt(t, multipartMessage("lie"), env.pki.bob.Cert)} {
		stored[up.appendMsg(user, "INBOX", m)] = m
	}
	plain, enc := imap.UID(1), imap.UID(2)
	lie := &imap.BodyStructureSinglePart{Type: "image", Subtype: "png", Encoding: "base64", Size: 12345,
		Extended: &imap.BodyStructureSinglePartExt{}}
	up.fetchHook = func(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) (bool, error) {
		if opts.BodyStructure == nil {
			return false, nil
		}
		uids, _ := numSet.(imap.UIDSet).Nums()
		for _, uid := range uids {
			rw := w.CreateMessage(uint32(uid))
			rw.WriteUID(uid)
			rw.WriteBodyStructure(lie)
			for _, bs := range opts.BodySection {
				b := imapserver.ExtractBodySection(bytes.NewReader(stored[uid]), bs)
				wc := rw.WriteBodySection(bs, int64(len(b)))
				wc.Write(b)
				wc.Close()
			}
			if err := rw.Close(); err != nil {
				return true, err
			}
		}
		return true, nil
	}
	c := env.client(t, user)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	opts := &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}}
	if got := describe(fetchOne(t, c, plain, opts).BodyStructure, true); got != describe(lie, true) {
		t.Errorf("plain: BODYSTRUCTURE = %s; the upstream's answer is to be passed on, %s", got, describe(lie, true))
	}
	got := describe(fetchOne(t, c, enc, opts).BodyStructure, true)
	if !strings.HasPrefix(got, "multipart/mixed[text/plain") {
		t.Errorf("encrypted: BODYSTRUCTURE = %s, want the decrypted message's", got)
	}
}

// brokenUpstream is an IMAP server that answers just enough, and sends the
// BODYSTRUCTURE of go-imap issue 701 (a multipart without parts), which
// go-imap's client cannot parse.
func brokenUpstream(t *testing.T, encrypted []byte) string {
	return testutil.Serve(t, func(conn net.Conn) {
		defer conn.Close()
		w := bufio.NewWriter(conn)
		r := bufio.NewReader(conn)
		say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
		lit := func(s string, b []byte) { fmt.Fprintf(w, "%s{%d}\r\n", s, len(b)); w.Write(b) }
		say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
			verb := strings.ToUpper(strings.Fields(cmd + " x")[0])
			if verb == "UID" {
				verb = strings.ToUpper(strings.Fields(cmd)[1])
			}
			switch {
			case verb == "CAPABILITY":
				say("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
				say(tag + " OK done")
			case verb == "SELECT":
				say("* 2 EXISTS")
				say("* OK [UIDVALIDITY 7] v")
				say("* OK [UIDNEXT 3] n")
				say("* FLAGS (\\Seen)")
				say(tag + " OK [READ-WRITE] done")
			case verb == "FETCH" && strings.Contains(cmd, "BODYSTRUCTURE"):
				say(`* 1 FETCH (UID 1 BODYSTRUCTURE (("ALTERNATIVE" ("BOUNDARY" "x") NIL NIL)("TEXT" "PLAIN" NIL NIL NIL "7BIT" 1 1 NIL NIL NIL NIL) "MIXED" NIL NIL NIL NIL))`)
				say(tag + " OK done")
			case verb == "FETCH" && strings.Contains(cmd, "HEADER.FIELDS") && strings.Contains(cmd, "FETCH 1 "):
				lit("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (CONTENT-TYPE CONTENT-DISPOSITION)] ", []byte("Content-Type: text/plain\r\n\r\n"))
				say(")")
				say(tag + " OK done")
			case verb == "FETCH" && strings.Contains(cmd, "HEADER.FIELDS"):
				lit("* 2 FETCH (UID 2 BODY[HEADER.FIELDS (CONTENT-TYPE CONTENT-DISPOSITION)] ", []byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"))
				say(")")
				say(tag + " OK done")
			case verb == "FETCH":
				lit("* 2 FETCH (UID 2 BODY[] ", encrypted)
				say(")")
				say(tag + " OK done")
			case verb == "LOGOUT":
				say("* BYE bye")
				say(tag + " OK done")
				return
			default:
				say(tag + " OK done")
			}
		}
	})
}

func TestIMAPNonCompliantBodyStructure(t *testing.T) {
	up := startIMAPUpstream(t)
	p := imapTestPKI(t)
	enc := mustEncrypt(t, mailMessage("a@example.test", "bob@example.test", "x", "decrypted despite the upstream"), p.bob.Cert)
	env := newIMAPEnv(t, up, &imapEnvOptions{upstream: brokenUpstream(t, enc)})

	// The S/MIME message never needs the upstream's BODYSTRUCTURE.
	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN bob@example.test pw")
	c.expectOK("SELECT INBOX")
	untagged := c.expectOK("UID FETCH 2 (BODYSTRUCTURE BODY.PEEK[TEXT])")
	if len(untagged) != 1 || !strings.Contains(untagged[0], "decrypted despite the upstream") || !strings.Contains(untagged[0], `BODYSTRUCTURE ("text" "plain"`) {
		t.Errorf("encrypted message: %q", untagged)
	}
	// A plain message's is relayed: go-imap's client cannot read this one,
	// the upstream connection is lost, and the client is told so.
	c.send("a9 UID FETCH 1 BODYSTRUCTURE")
	got := expectBye(t, c)
	if containsPrefix(got, "a9 OK") {
		t.Errorf("got %q", got)
	}
}

// bigMessage streams a plain message of about size bytes with a base64
// attachment, without holding it.
type bigMessage struct {
	header, footer []byte
	size           int64 // of the whole message
	rng            *rand.ChaCha8
	buf            [78]byte
	line           []byte
}

func newBigMessage(size int64) *bigMessage {
	h := []byte("From: a@example.test\r\nTo: bob@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbig one\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	f := []byte("--b--\r\n")
	body := size - int64(len(h)) - int64(len(f))
	body -= body % 78 // whole lines of 76 characters
	return &bigMessage{header: h, footer: f, size: int64(len(h)) + body + int64(len(f))}
}

func (m *bigMessage) reader() io.Reader {
	m.rng = rand.NewChaCha8([32]byte{1})
	m.line = nil
	return io.MultiReader(bytes.NewReader(m.header), io.LimitReader(m, m.size-int64(len(m.header))-int64(len(m.footer))), bytes.NewReader(m.footer))
}

const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func (m *bigMessage) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(m.line) == 0 {
			m.rng.Read(m.buf[:76])
			for i, b := range m.buf[:76] {
				m.buf[i] = b64[b&63]
			}
			m.buf[76], m.buf[77] = '\r', '\n'
			m.line = m.buf[:]
		}
		c := copy(p[n:], m.line)
		m.line = m.line[c:]
		n += c
	}
	return n, nil
}

func TestIMAPLargeAttachmentStreamed(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	big := newBigMessage(50 << 20)
	uid := up.appendMsg("bob@example.test", "INBOX", big.header)
	up.fetchHook = func(w *imapserver.FetchWriter, _ imap.NumSet, opts *imap.FetchOptions) (bool, error) {
		rw := w.CreateMessage(1)
		rw.WriteUID(uid)
		for _, bs := range opts.BodySection {
			var wc io.WriteCloser
			var r io.Reader
			if bs.Specifier == imap.PartSpecifierNone && len(bs.Part) == 0 {
				wc, r = rw.WriteBodySection(bs, big.size), big.reader()
			} else {
				b := imapserver.ExtractBodySection(bytes.NewReader(big.header), bs)
				wc, r = rw.WriteBodySection(bs, int64(len(b))), bytes.NewReader(b)
			}
			if _, err := io.Copy(wc, r); err != nil {
				return true, err
			}
			if err := wc.Close(); err != nil {
				return true, err
			}
		}
		return true, rw.Close()
	}
	want := sha256.New()
	io.Copy(want, big.reader())

	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN bob@example.test pw-bob@example.test")
	c.expectOK("SELECT INBOX")

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c.send("a9 UID FETCH 1 BODY.PEEK[]")
	c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	m := literalRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no literal in %q", line)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	if n != big.size {
		t.Errorf("literal of %d bytes, want %d", n, big.size)
	}
	got := sha256.New()
	if _, err := io.CopyN(got, c.r, n); err != nil {
		t.Fatal(err)
	}
	rest, _ := c.r.ReadString('\n')
	tagged, _ := c.r.ReadString('\n')
	runtime.ReadMemStats(&after)
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) || rest != ")\r\n" || !strings.HasPrefix(tagged, "a9 OK") {
		t.Errorf("the 50 MB message did not arrive intact (%q %q)", rest, tagged)
	}
	// The proxy, the upstream and this client share the process: had any
	// of them held the message, 50 MB would have been allocated.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("serving a 50 MB message allocated %d MB", alloc>>20)
	}
	t.Logf("allocated %d KB to stream %d MB", (after.TotalAlloc-before.TotalAlloc)>>10, big.size>>20)
}

func TestIMAP8BitHeaders(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	utf8 := []byte("From: J\xc3\xbcrgen <j@example.test>\r\nTo: bob@example.test\r\nSubject: Gr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nK\xc3\xa4se\r\n")
	latin1 := []byte("From: J\xfcrgen <j@example.test>\r\nTo: bob@example.test\r\nSubject: Gr\xfc\xdfe\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nK\xe4se\r\n")
	var uids []imap.UID
	for _, m := range [][]byte{utf8, latin1} {
		uids = append(uids, up.appendMsg(user, "INBOX", m), up.appendMsg(user, "INBOX", mustEncrypt(t, m, env.pki.bob.Cert)))
	}
	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN " + user + " pw-" + user)
	c.expectOK("SELECT INBOX")
	for i, uid := range uids {
		untagged := c.expectOK(fmt.Sprintf("UID FETCH %d (ENVELOPE BODYSTRUCTURE RFC822.SIZE BODY.PEEK[])", uid))
		if len(untagged) != 1 {
			t.Errorf("UID %d: %q", uid, untagged)
			continue
		}
		// Encryption makes the body 7-bit safe.
		if want := []string{"K\xc3\xa4se", "K=C3=A4se", "K\xe4se", "K=E4se"}[i]; !strings.Contains(untagged[0], want) {
			t.Errorf("UID %d: body missing: %q", uid, untagged[0])
		}
	}
}
