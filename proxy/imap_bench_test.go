package proxy_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"smimeproxy/smime"
)

// BenchmarkIMAPLab measures, in one run against the lab's Dovecot: FETCH of
// 1,000 plain messages (headers, then whole bodies) straight from Dovecot
// and through the proxy; 1,000 encrypted messages through the proxy with
// the cache cold and warm; and one private-key decryption, the crypto
// bound of the cold case. The ratios are logged at the end.
//
//	go test ./proxy -run '^$' -bench BenchmarkIMAPLab -benchtime 5x
func BenchmarkIMAPLab(b *testing.B) {
	const n = 1000
	e := newLabEnv(b, "", slog.New(slog.DiscardHandler))
	body := strings.Repeat("A line of text of the kind people write in mail, repeated to make a message of a few KB.\r\n", 40)
	var plain, enc [][]byte
	for i := range n {
		m := mailMessage("alice@example.test", "bob@example.test", fmt.Sprintf("bench %d", i), body)
		plain = append(plain, m)
		enc = append(enc, mustEncrypt(b, m, e.pki.bob.Cert))
	}
	plainUIDs := imap.UIDSetNum(e.appendAll(b, plain)...)
	encUIDs := imap.UIDSetNum(e.appendAll(b, enc)...)

	direct := e.upstream
	if _, err := direct.Select(e.mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		b.Fatal(err)
	}
	proxied, err := imapclient.DialInsecure(e.plain, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer proxied.Close()
	if err := proxied.Login(e.bob.Address, e.bob.Password).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := proxied.Select(e.mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		b.Fatal(err)
	}

	headers := &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}}}
	bodies := &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}
	fetch := func(b *testing.B, c *imapclient.Client, set imap.UIDSet, opts *imap.FetchOptions) {
		msgs, err := c.Fetch(set, opts).Collect()
		if err != nil || len(msgs) != n {
			b.Fatalf("FETCH: %d messages, %v", len(msgs), err)
		}
	}
	per := map[string]time.Duration{} // per FETCH of n messages, or per decryption
	run := func(name string, f func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			f(b)
			per[name] = b.Elapsed() / time.Duration(b.N)
		})
	}
	run("plain-headers/direct", func(b *testing.B) {
		for b.Loop() {
			fetch(b, direct, plainUIDs, headers)
		}
	})
	run("plain-headers/proxy", func(b *testing.B) {
		for b.Loop() {
			fetch(b, proxied, plainUIDs, headers)
		}
	})
	run("plain-bodies/direct", func(b *testing.B) {
		for b.Loop() {
			fetch(b, direct, plainUIDs, bodies)
		}
	})
	run("plain-bodies/proxy", func(b *testing.B) {
		for b.Loop() {
			fetch(b, proxied, plainUIDs, bodies)
		}
	})
	run("encrypted-bodies/proxy-cold", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			// Reload drops every opened message from the cache.
			if err := e.proxy.Reload(e.opts); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			fetch(b, proxied, encUIDs, bodies)
		}
	})
	run("encrypted-bodies/proxy-warm", func(b *testing.B) {
		fetch(b, proxied, encUIDs, bodies)
		b.ResetTimer()
		for b.Loop() {
			fetch(b, proxied, encUIDs, bodies)
		}
	})
	// 100 decryptions an op: one is too short to time among the rest.
	run("decrypt-100", func(b *testing.B) {
		opts := &smime.OpenOptions{Keys: e.keys}
		for b.Loop() {
			for i := range 100 {
				o, err := smime.Open(enc[i], opts)
				if err != nil || !o.Decrypted {
					b.Fatalf("decrypt: %v", err)
				}
			}
		}
	})
	per["decrypt-one"] = per["decrypt-100"] / 100
	ratio := func(a, b string) float64 { return float64(per[a]) / float64(per[b]) }
	b.Logf("per FETCH of %d: headers direct %v, proxy %v (x%.2f); bodies direct %v, proxy %v (x%.2f)", n,
		per["plain-headers/direct"], per["plain-headers/proxy"], ratio("plain-headers/proxy", "plain-headers/direct"),
		per["plain-bodies/direct"], per["plain-bodies/proxy"], ratio("plain-bodies/proxy", "plain-bodies/direct"))
	b.Logf("encrypted, %d: cold %v (%v a message), warm %v (%v a message; cold/warm x%.1f)", n,
		per["encrypted-bodies/proxy-cold"], per["encrypted-bodies/proxy-cold"]/n,
		per["encrypted-bodies/proxy-warm"], per["encrypted-bodies/proxy-warm"]/n, ratio("encrypted-bodies/proxy-cold", "encrypted-bodies/proxy-warm"))
	b.Logf("one decryption %v: %d of them are %.0f%% of the cold FETCH", per["decrypt-one"], n,
		100*float64(per["decrypt-one"]*n)/float64(per["encrypted-bodies/proxy-cold"]))
}
