package smtp

import (
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/policy"
	"smimeproxy/proxy"
)

// attachmentMessage is a message of about size bytes from alice to bob as
// mail clients send large ones: a line of text and a base64 attachment,
// 7-bit throughout.
func attachmentMessage(size int) string {
	return attachmentMessageFrom("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: the report\r\n", size)
}

// attachmentMessageFrom is attachmentMessage with the given From, To,
// Subject and whatever other header lines.
func attachmentMessageFrom(header string, size int) string {
	raw := make([]byte, size*3/4)
	for i := range raw {
		raw[i] = byte(i*7 + i/13)
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	var b strings.Builder
	b.Grow(len(enc) + len(enc)/38 + 1024)
	b.WriteString(header + "MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=XYZ\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n" +
		"--XYZ\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for i := 0; i < len(enc); i += 76 {
		b.WriteString(enc[i:min(i+76, len(enc))])
		b.WriteString("\r\n")
	}
	b.WriteString("--XYZ--\r\n")
	return b.String()
}

// eightBitMessage is about size bytes of 8-bit UTF-8 text, the costliest
// kind to canonicalize: each byte becomes three of quoted-printable.
func eightBitMessage(size int) string {
	var b strings.Builder
	b.WriteString("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: the novel\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	line := strings.Repeat("Привет, мир! ", 5) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}

// TestTransformMemory: the memory a message costs at its peak, measured as
// the growth of the heap with the collector made eager, stays within what
// the proxy reserves for it in the budget: the message as read, plus
// transformCost. The ratios are logged; memory.go and the README quote
// them.
func TestTransformMemory(t *testing.T) {
	const size = 8 << 20
	p := testPKI(t)
	tests := []struct {
		name          string
		msg           func(size int) string
		encrypt, sign bool
		opaque        bool
		bcc           []string
	}{
		{"attachment, signed", attachmentMessage, false, true, false, nil},
		{"attachment, signed opaque", attachmentMessage, false, true, true, nil},
		{"attachment, signed and encrypted", attachmentMessage, true, true, false, nil},
		{"attachment, signed opaque and encrypted", attachmentMessage, true, true, true, nil},
		{"attachment, signed and encrypted, two Bcc", attachmentMessage, true, true, false, []string{"carol@example.org", "dave@example.net"}},
		{"8-bit text, signed", eightBitMessage, false, true, false, nil},
		{"8-bit text, signed and encrypted", eightBitMessage, true, true, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg(size)
			var certs []*x509.Certificate
			if tc.encrypt {
				certs = []*x509.Certificate{p.bob.Cert, p.carol.Cert, p.dave.Cert}
			}
			e := newEnv(t, envOptions{quiet: true, certs: certs, recorder: func(r *recorder) { r.keep = false },
				upstream: upstreamOptions{maxBytes: 1 << 30},
				config:   func(c *config.Config) { c.MemoryBudgetMB = 4096 },
				policy:   func(pol *policy.Policy) { pol.Opaque = tc.opaque }})
			c, err := gosmtp.Dial(e.addr(0))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", testPassword)); err != nil {
				t.Fatal(err)
			}
			live, inuse := heapPeak(t, func() {
				if err := c.SendMail("alice@example.com", append([]string{"bob@example.org"}, tc.bcc...), strings.NewReader(msg)); err != nil {
					t.Fatal(err)
				}
			})
			size := float64(len(msg))
			reserved := float64(int64(len(msg))+transformCost(tc.sign, tc.encrypt, tc.opaque, []byte(msg))) / size
			t.Logf("at the peak, %.2f times the message live, %.2f in use; %.0f reserved", float64(live)/size, float64(inuse)/size, reserved)
			if float64(live)/size > reserved {
				t.Errorf("the message kept %.2f times its size live, more than the %.0f the proxy reserves", float64(live)/size, reserved)
			}
		})
	}
}

// heapPeak runs f with the collector made eager and returns how far the
// heap grew above where it was: the most of the live heap as collections
// found it (which may miss a copy that lived between two of them), and of
// the heap in use (which counts some garbage).
func heapPeak(t *testing.T, f func()) (live, inuse uint64) {
	t.Helper()
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	sample := func() (live, inuse uint64) {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return s[0].Value.Uint64(), ms.HeapInuse
	}
	runtime.GC()
	baseLive, baseInuse := sample()
	var peakLive, peakInuse uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			live, inuse := sample()
			peakLive, peakInuse = max(peakLive, live), max(peakInuse, inuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peakLive - min(peakLive, baseLive), peakInuse - min(peakInuse, baseInuse)
}

// TestBudget: a message the memory budget cannot hold now gets a
// temporary failure and the session goes on; one it could never hold is
// refused for good; every byte reserved is given back.
func TestBudget(t *testing.T) {
	p := testPKI(t)
	e := newEnv(t, envOptions{certs: []*x509.Certificate{p.bob.Cert}, config: func(c *config.Config) { c.MemoryBudgetMB = 12 }})
	c := e.dial()
	ehlo := strings.Join(c.cmd("EHLO client.test", "250 *"), "\n")
	if want := fmt.Sprintf("SIZE %d", (12<<20)/(1+encryptCost)); !strings.Contains(ehlo, want) {
		t.Errorf("EHLO = %q, want %s: what the budget can sign and encrypt", ehlo, want)
	}
	c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "235 *")
	small := message("bob@example.org", "small", "Hi Bob\r\n")
	large := attachmentMessage(1 << 20) // costs seven times its size: 7.4 MiB

	// Someone else holds 7 MiB: too much for the message to be read.
	if !e.budget.TryAcquire(7 << 20) {
		t.Fatal("TryAcquire(7 MiB) of 12 refused")
	}
	if got := c.send("alice@example.com", []string{"bob@example.org"}, large); got != "452 4.3.1 Too many large messages at once; try again later" {
		t.Errorf("DATA reply with the budget in use %q, want 452 4.3.1", got)
	}
	if got := c.send("alice@example.com", []string{"bob@example.org"}, small); !match("250 *", got) {
		t.Errorf("a small message after the 452: %q, want 250", got)
	}
	e.budget.Release(7 << 20)
	if got := c.send("alice@example.com", []string{"bob@example.org"}, large); !match("250 *", got) {
		t.Errorf("DATA reply with the budget free %q, want 250", got)
	}

	// 8-bit text costs up to three times as much as reading reserved: with
	// 8 MiB held elsewhere, 300 KiB of it is read, but not signed and
	// encrypted.
	if !e.budget.TryAcquire(8 << 20) {
		t.Fatal("TryAcquire(8 MiB) of 12 refused")
	}
	if got := c.send("alice@example.com", []string{"bob@example.org"}, eightBitMessage(300<<10)); got != "452 4.3.1 Too many large messages at once; try again later" {
		t.Errorf("DATA reply for 8-bit text with the budget in use %q, want 452 4.3.1", got)
	}
	if got := e.metric("smimeproxy_messages_total", "action", "sign_encrypt", "result", "tempfail"); got != 1 {
		t.Errorf("messages_total{sign_encrypt,tempfail} = %v, want 1", got)
	}
	e.budget.Release(8 << 20)
	// 1 MiB of it is more than the whole budget could sign and encrypt.
	if got := c.send("alice@example.com", []string{"bob@example.org"}, eightBitMessage(1<<20)); !match("552 5.3.4 *", got) {
		t.Errorf("DATA reply for a message the budget could never hold %q, want 552 5.3.4", got)
	}
	c.cmd("QUIT", "221 *")
	e.waitMetric(0, "smimeproxy_memory_budget_used_bytes")
	if txns := e.up.transactions(); len(txns) != 2 {
		t.Errorf("the upstream got %d messages, want the two accepted", len(txns))
	}
	if got := e.metric("smimeproxy_memory_budget_refused_total"); got < 2 {
		t.Errorf("memory_budget_refused_total = %v, want at least 2", got)
	}
}

// TestBudgetWhileReading: a message is reserved as it arrives; when the
// budget runs out in the middle, the rest is read and dropped, and the
// client gets the temporary failure.
func TestBudgetWhileReading(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *config.Config) { c.MemoryBudgetMB = 12 }})
	if !e.budget.TryAcquire(11 << 20) {
		t.Fatal("TryAcquire(11 MiB) of 12 refused")
	}
	c := e.login()
	if got := c.send("alice@example.com", []string{"bob@example.org"}, attachmentMessage(1<<20)); got != "452 4.3.1 Too many large messages at once; try again later" {
		t.Errorf("DATA reply %q, want 452 4.3.1", got)
	}
	c.cmd("NOOP", "250 *")
	if started, _, _ := e.up.counts(); started != 0 {
		t.Errorf("the upstream got %d DATA commands, want none", started)
	}
	e.budget.Release(11 << 20)
	c.cmd("QUIT", "221 *")
	e.waitMetric(0, "smimeproxy_memory_budget_used_bytes")
}

// TestReadMessage: a message is read whole, declared size or not; one as
// large as declared is read into one chunk, with no copy; a declared size
// never costs more than a chunk, nor makes a message fail that fits; what
// stays reserved is cost for each byte.
func TestReadMessage(t *testing.T) {
	const cost = 7
	msg := strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.\r\n", 20000) // 1.2 MB
	for _, tc := range []struct {
		name     string
		declared int64
		budget   int64 // free in the budget; 0: plenty
		oneChunk bool  // read into one chunk of declared+1 bytes
	}{
		{"no SIZE", 0, 0, false},
		{"SIZE as sent", int64(len(msg)), 0, true},
		{"SIZE too small", int64(len(msg)) / 2, 0, false},
		{"SIZE too large", 1 << 40, 0, false},
		{"SIZE beyond what the budget has now", int64(len(msg)), 1 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := int64(1 << 30)
			b := proxy.NewBudget(total, proxy.NewMetrics(nil))
			if tc.budget > 0 && !b.TryAcquire(total-tc.budget) {
				t.Fatal("TryAcquire refused")
			}
			m := msg
			if tc.budget > 0 {
				m = msg[:4096] // what fits, SIZE as for the whole
			}
			got, held, err := readMessage(strings.NewReader(m), b, cost, tc.declared)
			if err != nil || string(got) != m {
				t.Fatalf("readMessage = %d bytes, %v; want the %d sent", len(got), err, len(m))
			}
			if held != cost*int64(len(m)) {
				t.Errorf("held %d, want %d", held, cost*int64(len(m)))
			}
			if one := cap(got) == int(tc.declared)+1; one != tc.oneChunk {
				t.Errorf("read into one chunk of the declared size: %v, want %v (cap %d)", one, tc.oneChunk, cap(got))
			}
			if cap(got) > max(len(m), maxChunk) {
				t.Errorf("a chunk of %d bytes for %d", cap(got), len(m))
			}
		})
	}
}
