package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// counter is an SMTP server that counts what it accepts; it refuses every
// message whose Message-ID ends in refuse.
type counter struct {
	n      atomic.Int64
	refuse string
}

type counterSession struct{ c *counter }

func (s counterSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s counterSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "alice" || pass != "pw" {
			return errors.New("no")
		}
		return nil
	}), nil
}
func (s counterSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s counterSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s counterSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.c.refuse != "" && bytes.Contains(b, []byte(s.c.refuse+"@smtpload>")) {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "no"}
	}
	s.c.n.Add(1)
	return nil
}
func (s counterSession) Reset()        {}
func (s counterSession) Logout() error { return nil }

func serve(t *testing.T, c *counter) string {
	t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return counterSession{c}, nil }))
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestRun(t *testing.T) {
	direct, proxied := &counter{}, &counter{}
	args := []string{"-upstream", serve(t, direct), "-upstream-tls", "none", "-proxy", serve(t, proxied), "-proxy-tls", "none",
		"-user", "alice", "-from", "alice@example.test", "-to", "bob@example.test", "-n", "40", "-c", "4", "-size", "200"}
	var out, errb bytes.Buffer
	getenv := func(k string) string { return map[string]string{"SMTPLOAD_PASSWORD": "pw"}[k] }
	if code := run(t.Context(), args, &out, &errb, getenv); code != 0 {
		t.Fatalf("run = %d, stderr %q", code, errb.String())
	}
	if direct.n.Load() != 40 || proxied.n.Load() != 40 {
		t.Errorf("accepted %d directly and %d through the proxy, want 40 each", direct.n.Load(), proxied.n.Load())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "direct") || !strings.Contains(lines[1], "40 sent, 0 failed") || !strings.HasPrefix(lines[2], "ratio   proxy/direct ") {
		t.Errorf("output %q", out.String())
	}
}

// TestRunCPU: -pid reports the CPU time of the given process per message;
// here the proxy is this test process itself.
func TestRunCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("-pid reads /proc/PID/stat, which is Linux's")
	}
	proxied := &counter{}
	args := []string{"-proxy", serve(t, proxied), "-proxy-tls", "none", "-pid", strconv.Itoa(os.Getpid()),
		"-from", "alice@example.test", "-to", "bob@example.test", "-n", "200", "-c", "4", "-size", "20000"}
	var out, errb bytes.Buffer
	if code := run(t.Context(), args, &out, &errb, func(string) string { return "" }); code != 0 {
		t.Fatalf("run = %d, stderr %q", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var pid int
	var total, per float64
	if len(lines) != 2 {
		t.Fatalf("output %q, want the proxy's line and the cpu line", out.String())
	}
	if _, err := fmt.Sscanf(lines[1], "cpu process %d %fs in all, %f ms per message", &pid, &total, &per); err != nil || pid != os.Getpid() {
		t.Fatalf("cpu line %q: %v", lines[1], err)
	}
	if want := total * 1000 / 200; math.Abs(per-want) > 0.001 {
		t.Errorf("%.3f ms per message, want %.2fs / 200 = %.3f", per, total, want)
	}
	if code := run(t.Context(), []string{"-upstream", "x:1", "-pid", "1", "-from", "a", "-to", "b"}, &out, &errb, func(string) string { return "" }); code != 2 {
		t.Errorf("-pid without -proxy = exit %d, want 2", code)
	}
}

func TestRunFailures(t *testing.T) {
	c := &counter{refuse: ".7"}
	var out, errb bytes.Buffer
	args := []string{"-proxy", serve(t, c), "-proxy-tls", "none", "-from", "a@example.test", "-to", "b@example.test", "-n", "10", "-c", "2"}
	if code := run(t.Context(), args, &out, &errb, func(string) string { return "" }); code != 1 {
		t.Errorf("run with a refused message = %d, want 1", code)
	}
	if !strings.Contains(out.String(), "9 sent, 1 failed") || !strings.Contains(errb.String(), "message 7") {
		t.Errorf("output %q, stderr %q", out.String(), errb.String())
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-from", "a", "-to", "b"}, "-upstream or -proxy is required"},
		{[]string{"-proxy", "x:1", "-to", "b"}, "-from and -to are required"},
		{[]string{"-proxy", "x:1", "-from", "a", "-to", "b", "-proxy-tls", "ssl"}, `invalid value "ssl" for -proxy-tls; options are starttls, implicit, none`},
		{[]string{"-proxy", "x:1", "-from", "a", "-to", "b", "-user", "alice"}, "-user needs a password"},
		{[]string{"-proxy", "x:1", "-from", "a", "-to", "b", "-n", "0"}, "at least 1"},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		if code := run(t.Context(), tc.args, &out, &errb, func(string) string { return "" }); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
