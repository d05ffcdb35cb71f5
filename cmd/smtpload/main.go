// Command smtpload measures what the SMTP proxy costs: it submits N
// messages on C connections once directly to the upstream server and once
// through the proxy, and prints both rates and their ratio.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"smimeproxy/internal/smtpload"
)

const usage = `usage: smtpload [flags]

Submits -n messages on -c connections to -upstream (directly) and then to
-proxy (the smimeproxy SMTP listener in front of it), each logged in as
-user, and prints the rate of each and the ratio proxy/direct. Either
address may be left out to measure one alone.

With -pid, the proxy's process ID on this machine (Linux), it also prints
the CPU time (user and system, from /proc/PID/stat) that process used per
message it took, over the proxy run: what the proxy costs besides the
upstream. Keep other load off it meanwhile; the clock ticks at 10 ms, so
send enough messages for a second or more of CPU.

The password comes from -password-file or $SMTPLOAD_PASSWORD, never from a
flag value.

EXAMPLES
  SMTPLOAD_PASSWORD=secret smtpload -upstream 127.0.0.1:10587 -upstream-ca lab-ca.pem \
      -proxy 127.0.0.1:1587 -proxy-tls none -user alice@example.test \
      -from alice@example.test -to bob@example.test -n 1000 -c 50
  SMTPLOAD_PASSWORD=secret smtpload -proxy 127.0.0.1:1587 -proxy-tls none \
      -pid $(pidof smimeproxy) -user alice@example.test \
      -from alice@example.test -to bob@example.test -n 2000 -c 16 -size 16384

EXIT CODES
  0  every message was accepted
  1  a message failed, or a run could not start
  2  usage error

FLAGS
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// target is one address to measure.
type target struct {
	name, addr, tls, ca string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("smtpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	direct := target{name: "direct"}
	proxied := target{name: "proxy"}
	fs.StringVar(&direct.addr, "upstream", "", "the upstream submission server, host:port")
	fs.StringVar(&direct.tls, "upstream-tls", "starttls", "TLS to the upstream: starttls, implicit or none")
	fs.StringVar(&direct.ca, "upstream-ca", "", "PEM file of the CA that signed the upstream's certificate (default: system roots)")
	fs.StringVar(&proxied.addr, "proxy", "", "the proxy's SMTP listener, host:port")
	fs.StringVar(&proxied.tls, "proxy-tls", "starttls", "TLS to the proxy: starttls, implicit or none")
	fs.StringVar(&proxied.ca, "proxy-ca", "", "PEM file of the CA that signed the proxy's certificate (default: system roots)")
	user := fs.String("user", "", "log in as this user with AUTH PLAIN (default: no AUTH)")
	passFile := fs.String("password-file", "", "file holding the password (default: $SMTPLOAD_PASSWORD)")
	from := fs.String("from", "", "envelope and header sender")
	to := fs.String("to", "", "recipients, comma-separated")
	n := fs.Int("n", 1000, "messages to send to each address")
	c := fs.Int("c", 50, "connections at once")
	size := fs.Int("size", 4096, "body size in bytes")
	timeout := fs.Duration("timeout", 2*time.Minute, "limit for each command and message")
	pid := fs.Int("pid", 0, "the proxy's process ID: report its CPU time per message (Linux)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "smtpload: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q; see -help", fs.Arg(0))
	case direct.addr == "" && proxied.addr == "":
		return bad("-upstream or -proxy is required")
	case *from == "" || *to == "":
		return bad("-from and -to are required")
	case *n < 1 || *c < 1:
		return bad("-n and -c must be at least 1")
	case *pid < 0 || *pid > 0 && proxied.addr == "":
		return bad("-pid needs -proxy and a process ID")
	}
	for _, t := range []target{direct, proxied} {
		if t.tls != "starttls" && t.tls != "implicit" && t.tls != "none" {
			return bad("invalid value %q for -%s-tls; options are starttls, implicit, none", t.tls, map[string]string{"direct": "upstream", "proxy": "proxy"}[t.name])
		}
	}
	password := getenv("SMTPLOAD_PASSWORD")
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			fmt.Fprintf(stderr, "smtpload: %v\n", err)
			return 1
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if *user != "" && password == "" {
		return bad("-user needs a password in -password-file or $SMTPLOAD_PASSWORD")
	}

	marker := fmt.Sprintf("load%d", time.Now().UnixNano())
	rates := map[string]float64{}
	code := 0
	for _, t := range []target{direct, proxied} {
		if t.addr == "" {
			continue
		}
		conf, err := tlsConfig(t)
		if err != nil {
			fmt.Fprintf(stderr, "smtpload: %v\n", err)
			return 1
		}
		var cpuBefore time.Duration
		if *pid > 0 && t.name == "proxy" {
			if cpuBefore, err = smtpload.ProcessCPU(*pid); err != nil {
				fmt.Fprintf(stderr, "smtpload: -pid: %v\n", err)
				return 1
			}
		}
		r, err := smtpload.Run(ctx, smtpload.Options{
			Addr: t.addr, TLS: t.tls, TLSConfig: conf, User: *user, Password: password,
			From: *from, To: strings.Split(*to, ","), Messages: *n, Conns: *c, Size: *size,
			Marker: marker + "-" + t.name, Timeout: *timeout,
		})
		fmt.Fprintf(stdout, "%-7s %-22s %d sent, %d failed in %.2fs: %.1f msgs/s\n", t.name, t.addr, r.Sent, r.Failed, r.Elapsed.Seconds(), r.Rate())
		if *pid > 0 && t.name == "proxy" {
			after, cerr := smtpload.ProcessCPU(*pid)
			if cerr != nil {
				fmt.Fprintf(stderr, "smtpload: -pid: %v\n", cerr)
				return 1
			}
			used := after - cpuBefore
			fmt.Fprintf(stdout, "cpu     process %-14d %.2fs in all, %.3f ms per message\n", *pid, used.Seconds(), perMessage(used, r.Sent))
		}
		for _, e := range r.Errs {
			fmt.Fprintf(stderr, "smtpload: %s: %v\n", t.name, e)
		}
		if err != nil {
			fmt.Fprintf(stderr, "smtpload: %s: %v\n", t.name, err)
			return 1
		}
		if r.Failed > 0 {
			code = 1
		}
		rates[t.name] = r.Rate()
	}
	if d, p := rates["direct"], rates["proxy"]; d > 0 && p > 0 {
		fmt.Fprintf(stdout, "ratio   proxy/direct %.2f\n", p/d)
	}
	return code
}

// perMessage is used in milliseconds per message of n; 0 for none.
func perMessage(used time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return used.Seconds() * 1000 / float64(n)
}

// tlsConfig verifies t's certificate against its CA file, or the system roots.
func tlsConfig(t target) (*tls.Config, error) {
	if t.ca == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", t.ca)
	}
	host, _, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.addr, err)
	}
	return &tls.Config{RootCAs: pool, ServerName: host}, nil
}
