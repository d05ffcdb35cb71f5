package smtp

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"smimeproxy/internal/lab"
	"smimeproxy/internal/serveproc"
	"smimeproxy/internal/smtpload"
	"smimeproxy/internal/testpki"
)

// BenchmarkLab measures, in one run against the lab's Postfix, what the
// README's table per key type says: Postfix alone (direct/SIZE), the real
// `smimeproxy serve` in front of it signing and encrypting to the
// recipient and the sender (KEY/SIZE), and the private-key operation alone
// on every core (KEY/keyop), for each key type and message size. Every
// name has two levels, so that -bench can pick a few whose ratios still
// come out, for example 'Lab/^(direct|p256)$/^(16KB|keyop)$':
//
//	CI=true go test -run '^$' -bench Lab -benchtime 3s ./proxy/smtp
//
// Besides msgs/s and MB/s, each proxy result reports:
//   - cpu_ms/msg: the serve process's CPU time per message (/proc/PID/stat);
//   - own_ms/msg: that, less one private-key operation's CPU time;
//   - of_ideal: its rate over 1/(1/direct + 1/keyops), what a proxy that
//     added nothing but the signature to Postfix's work would reach, when
//     direct and keyop of the same run were measured.
func BenchmarkLab(b *testing.B) {
	l := lab.Start(b)
	alice, bob := l.User(b, "alice"), l.User(b, "bob")
	p := testPKI(b)
	bin := serveproc.Binary(b)
	direct := map[int]float64{} // msgs/s by size
	for _, size := range labBenchSizes {
		b.Run(fmt.Sprintf("direct/%s", sizeName(size)), func(b *testing.B) {
			o := labLoad(b, l.Submission, alice, bob.Address, size)
			o.TLS, o.TLSConfig = "starttls", l.TLSConfig(b)
			r := runLoad(b, l, o, bob.Address)
			direct[size] = r.Rate()
		})
	}
	for _, kt := range labKeyTypes {
		a := p.ca.Issue(b, alice.Address, &testpki.Options{Key: kt})
		bobID := p.ca.Issue(b, bob.Address, &testpki.Options{Key: kt})
		var keyops float64
		var keyCPU time.Duration
		b.Run(kt+"/keyop", func(b *testing.B) {
			digest := sha256.Sum256([]byte("message digest"))
			before := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.Key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
			keyCPU = (processCPU(b) - before) / time.Duration(b.N)
			keyops = float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(keyops, "ops/s")
			b.ReportMetric(msPer(keyCPU), "cpu_ms/op")
		})
		proc := serveLab(b, bin, l, p, a, bobID, 1024)
		for _, size := range labBenchSizes {
			b.Run(fmt.Sprintf("%s/%s", kt, sizeName(size)), func(b *testing.B) {
				o := labLoad(b, proc.SMTP[0], alice, bob.Address, size)
				before, err := smtpload.ProcessCPU(proc.PID())
				if err != nil {
					b.Fatal(err)
				}
				r := runLoad(b, l, o, bob.Address)
				after, err := smtpload.ProcessCPU(proc.PID())
				if err != nil {
					b.Fatal(err)
				}
				cpu := (after - before) / time.Duration(r.Sent)
				b.ReportMetric(msPer(cpu), "cpu_ms/msg")
				if keyCPU > 0 {
					b.ReportMetric(msPer(cpu-keyCPU), "own_ms/msg")
				}
				if d := direct[size]; d > 0 && keyops > 0 {
					b.ReportMetric(r.Rate()*(1/d+1/keyops), "of_ideal")
				}
			})
		}
		proc.Stop(b)
	}
}

var (
	labBenchSizes = []int{4 << 10, 16 << 10, 1 << 20, 20 << 20}
	labKeyTypes   = []string{"rsa2048", "rsa3072", "rsa4096", "p256", "p384"}
)

// labBenchConns is how many connections send at once: enough to keep both
// Postfix and the proxy busy on a small machine.
const labBenchConns = 16

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

func msPer(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// labLoad is b.N messages of about size bytes from u to rcpt, sent to addr
// without TLS.
func labLoad(b *testing.B, addr string, u lab.User, rcpt string, size int) smtpload.Options {
	return smtpload.Options{
		Addr: addr, TLS: "none", User: u.Address, Password: u.Password, From: u.Address, To: []string{rcpt},
		Messages: b.N, Conns: min(labBenchConns, b.N), Size: size, Marker: marker(b), Timeout: 5 * time.Minute,
	}
}

// runLoad sends o, reports the rates, and removes what was delivered: the
// lab is shared and its disk is not large.
func runLoad(b *testing.B, l *lab.Lab, o smtpload.Options, rcpt string) smtpload.Result {
	b.SetBytes(int64(o.Size))
	since := time.Now().Add(-time.Second) // file times are coarser than the clock
	b.ResetTimer()
	r, err := smtpload.Run(b.Context(), o)
	b.StopTimer()
	if err != nil || r.Failed > 0 {
		b.Fatalf("%d sent, %d failed, %v; first errors %v", r.Sent, r.Failed, err, r.Errs)
	}
	b.ReportMetric(r.Rate(), "msgs/s")
	for _, files := range delivered(b, l.Maildir(rcpt), o.Marker+".", r.Sent, since) {
		for _, f := range files {
			_ = os.Remove(f)
		}
	}
	return r
}

// processCPU is this process's CPU time so far, user and system.
func processCPU(b *testing.B) time.Duration {
	if runtime.GOOS != "linux" {
		b.Skip("CPU time per operation is read from Linux's getrusage")
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
