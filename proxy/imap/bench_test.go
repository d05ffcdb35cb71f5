package imap_test

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

// The benchmarks run against the lab's Dovecot directly and through the
// proxy, in one run, so that their ratios mean something on a shared
// machine:
//
//	CI=true go test -run '^$' -bench . -benchtime 5x ./proxy/imap
//
// BenchmarkSearch: SEARCH BODY in a mailbox of 1,000 messages, 200 of
// them encrypted: directly at Dovecot (which cannot look inside the
// encrypted ones), and through the proxy with the cache off (cold: each
// search opens the 200) and on (warm).
//
// BenchmarkLoginSelect: a client's connect, LOGIN, SELECT and LOGOUT.
// BenchmarkFetch: one FETCH of BODY.PEEK[] of 1,000 messages: plain
// (direct and proxy), encrypted with the cache off (cold) and on (warm),
// and the crypto bound: opening the same 1,000 messages in parallel on
// every core, without any IMAP.

const benchMessages = 1000

// benchBody is a plain text of about 4 KB.
var benchBody = strings.Repeat("The quick brown fox jumps over the lazy dog. ", 90)

// fill appends n messages made by mk to a fresh mailbox of user's, over one
// connection with non-synchronising literals.
func fill(b *testing.B, e *env, user string, n int, mk func(i int) string) string {
	b.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	box := "bench-" + hex.EncodeToString(rnd[:])
	u := e.lab.User(b, user)
	c := dialDirect(b, e.lab, u)
	c.cmd("c CREATE "+box, "")
	for i := range n {
		c.write(fmt.Sprintf("a%d APPEND %s %s\r\n", i, box, litPlus(mk(i))))
	}
	c.cmd("n NOOP", "^n OK")
	b.Cleanup(func() {
		c := dialDirect(b, e.lab, u)
		c.cmd("d DELETE "+box, "")
	})
	return box
}

func BenchmarkLoginSelect(b *testing.B) {
	e := newEnv(b, envOptions{})
	u := e.lab.User(b, "alice")
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			c := dialDirect(b, e.lab, u)
			c.cmd("a SELECT INBOX", "")
			c.cmd("z LOGOUT", "")
			c.conn.Close()
		}
	})
	b.Run("proxy", func(b *testing.B) {
		for b.Loop() {
			c := e.dialProxy(b, u)
			c.cmd("a SELECT INBOX", "")
			c.cmd("z LOGOUT", "")
			c.conn.Close()
		}
	})
}

func BenchmarkFetch(b *testing.B) {
	p := testPKI(b)
	var (
		once      sync.Once
		encrypted []string
	)
	mkEncrypted := func(i int) string {
		once.Do(func() {
			// Encrypting is not what is measured; one ciphertext per
			// worker's worth of distinct messages would change nothing.
			for j := range benchMessages {
				out, err := smime.Encrypt([]byte(plainMsg(fmt.Sprintf("secret %d", j), benchBody)), []*x509.Certificate{p.alice.Cert}, nil)
				if err != nil {
					b.Fatal(err)
				}
				encrypted = append(encrypted, string(out))
			}
		})
		return encrypted[i]
	}
	run := func(b *testing.B, e *env, direct bool, box string) {
		u := e.lab.User(b, "alice")
		c := e.dial(b, u, direct)
		c.cmd("a EXAMINE "+box, "")
		// The first FETCH fills the cache, when there is one.
		c.cmd("w FETCH 1:* (BODY.PEEK[])", "")
		for b.Loop() {
			c.trans.Reset()
			got := c.cmd("f FETCH 1:* (BODY.PEEK[])", "")
			if len(got) != benchMessages+1 {
				b.Fatalf("FETCH answered %d responses", len(got))
			}
		}
	}
	warm := newEnv(b, envOptions{roots: []*x509.Certificate{p.ca.Root()}})
	warm.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	cold := newEnv(b, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.CacheMB = 0 }})
	cold.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	plainBox := fill(b, warm, "alice", benchMessages, func(i int) string { return plainMsg(fmt.Sprintf("plain %d", i), benchBody) })
	encBox := fill(b, warm, "alice", benchMessages, mkEncrypted)

	b.Run("plain/direct", func(b *testing.B) { run(b, warm, true, plainBox) })
	b.Run("plain/proxy", func(b *testing.B) { run(b, warm, false, plainBox) })
	b.Run("encrypted/cold", func(b *testing.B) { run(b, cold, false, encBox) })
	b.Run("encrypted/warm", func(b *testing.B) { run(b, warm, false, encBox) })
	b.Run("encrypted/crypto-bound", func(b *testing.B) {
		keys := []smime.KeyPair{{Cert: p.alice.Cert, Key: p.alice.Key}}
		for b.Loop() {
			var wg sync.WaitGroup
			next := make(chan string)
			for range runtime.GOMAXPROCS(0) {
				wg.Go(func() {
					for m := range next {
						if _, err := smime.Open([]byte(m), &smime.OpenOptions{Keys: keys}); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for _, m := range encrypted {
				next <- m
			}
			close(next)
			wg.Wait()
		}
	})
}

func BenchmarkSearch(b *testing.B) {
	p := testPKI(b)
	const everyFifth = 5
	// needle is in 100 encrypted messages and 100 plain ones.
	mk := func(i int) string {
		body := benchBody
		if i%10 < 2 {
			body += " needle"
		}
		msg := plainMsg(fmt.Sprintf("message %d", i), body)
		if i%everyFifth != 0 {
			return msg
		}
		out, err := smime.Encrypt([]byte(msg), []*x509.Certificate{p.alice.Cert}, nil)
		if err != nil {
			b.Fatal(err)
		}
		return string(out)
	}
	warm := newEnv(b, envOptions{roots: []*x509.Certificate{p.ca.Root()}})
	warm.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	cold := newEnv(b, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.CacheMB = 0 }})
	cold.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
	box := fill(b, warm, "alice", benchMessages, mk)
	run := func(b *testing.B, e *env, direct bool, want int) {
		u := e.lab.User(b, "alice")
		c := e.dial(b, u, direct)
		c.cmd("a EXAMINE "+box, "")
		// The first search fills the cache, when there is one.
		c.cmd("w SEARCH BODY needle", "")
		for b.Loop() {
			got := c.cmd("s SEARCH BODY needle", "")
			if n := len(strings.Fields(got[0])) - 2; n != want {
				b.Fatalf("SEARCH found %d messages, want %d: %.200q", n, want, got[0])
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, warm, true, 100) })
	b.Run("proxy/cold", func(b *testing.B) { run(b, cold, false, 200) })
	b.Run("proxy/warm", func(b *testing.B) { run(b, warm, false, 200) })
}

// dial logs u in at the lab's Dovecot directly or through the proxy.
func (e *env) dial(b *testing.B, u lab.User, direct bool) *client {
	if direct {
		return dialDirect(b, e.lab, u)
	}
	return e.dialProxy(b, u)
}
