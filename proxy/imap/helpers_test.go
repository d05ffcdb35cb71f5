package imap_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/proxy/imap"
)

// keys is an in-memory keystore for the tests: the identities they add,
// by address.
type keys struct {
	mu     sync.Mutex
	byAddr map[string][]keystore.KeyPair
	locked bool
}

func newKeys() *keys { return &keys{byAddr: map[string][]keystore.KeyPair{}} }

func (k *keys) add(addr string, kp keystore.KeyPair) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.byAddr[strings.ToLower(addr)] = append(k.byAddr[strings.ToLower(addr)], kp)
}

// Signer is the first key of email that can sign.
func (k *keys) Signer(email string, _ time.Time) (*keystore.Signer, error) {
	kps, err := k.DecryptionKeys(email)
	if err != nil {
		return nil, err
	}
	for _, kp := range kps {
		if s, ok := kp.Key.(crypto.Signer); ok {
			return &keystore.Signer{KeyID: kp.KeyID, Key: s, Cert: kp.Cert, EncryptionCert: kp.Cert}, nil
		}
	}
	return nil, keystore.ErrNoUsableCert
}

func (k *keys) EncryptionCert(email string, _ time.Time) (*x509.Certificate, error) {
	kps, err := k.DecryptionKeys(email)
	if err != nil {
		return nil, err
	}
	return kps[0].Cert, nil
}

func (k *keys) DecryptionKeys(email string) ([]keystore.KeyPair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locked {
		return nil, keystore.ErrLocked
	}
	kps, ok := k.byAddr[strings.ToLower(email)]
	if !ok {
		return nil, keystore.ErrNoIdentity
	}
	return kps, nil
}

func (k *keys) Locked() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.locked
}

// env is the IMAP proxy in front of the lab's Dovecot.
type env struct {
	lab      *lab.Lab
	registry *prometheus.Registry
	proxy    *imap.Proxy
	keys     *keys
	certs    *certcache.Cache
	log      *testutil.Buffer
	cfg      *config.Config
}

type envOptions struct {
	configure func(*config.Config)
	cert      *proxy.Certificate  // for TLS listeners
	roots     []*x509.Certificate // trust anchors in the certificate cache
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	l := lab.Start(t)
	c := config.Default()
	c.ServerName = "proxy.test"
	c.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	c.IMAP.Upstream = config.Upstream{Addr: l.IMAP, TLS: config.TLSStartTLS, CAFile: l.CA}
	if o.configure != nil {
		o.configure(c)
	}
	cc, err := certcache.Open(filepath.Join(t.TempDir(), "certcache"), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range o.roots {
		if err := cc.Trust(r); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{lab: l, keys: newKeys(), certs: cc, log: &testutil.Buffer{}, cfg: c}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(e.log, t.Output()), nil))
	e.registry = prometheus.NewRegistry()
	p, err := imap.New(proxy.Options{Config: c, Policy: policy.FromConfig(c.Policy), Keys: e.keys, Certs: cc, Cert: o.cert,
		Logger: logger, Metrics: proxy.NewMetrics(e.registry)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	e.proxy = p
	return e
}

func (e *env) addr() string { return e.proxy.Addrs()[0].String() }

// client is a raw IMAP client: it sends what it is told, byte for byte, and
// keeps a transcript of everything it receives.
type client struct {
	t       testing.TB
	conn    net.Conn
	br      *bufio.Reader
	trans   bytes.Buffer
	timeout time.Duration // for each read and write; 0: ioTimeout
}

func (c *client) deadline() time.Time {
	if c.timeout > 0 {
		return time.Now().Add(c.timeout)
	}
	return time.Now().Add(ioTimeout)
}

const ioTimeout = 20 * time.Second

// dial connects and reads the greeting; with conf, it does STARTTLS first.
func dial(t testing.TB, addr string, conf *tls.Config) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, br: bufio.NewReader(conn)}
	c.expect(`^\* OK`)
	if conf != nil {
		c.cmd("s0 STARTTLS", `^s0 OK`)
		tc := tls.Client(conn, conf)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c.conn, c.br = tc, bufio.NewReader(tc)
	}
	c.trans.Reset()
	return c
}

// dialDirect logs in to the lab's Dovecot as u, and dialProxy to the proxy.
func dialDirect(t testing.TB, l *lab.Lab, u lab.User) *client {
	conf := l.TLSConfig(t)
	conf.ServerName = "localhost"
	c := dial(t, l.IMAP, conf)
	c.login(u)
	return c
}

func (e *env) dialProxy(t testing.TB, u lab.User) *client {
	c := dial(t, e.addr(), nil)
	c.login(u)
	return c
}

func (c *client) login(u lab.User) {
	c.t.Helper()
	c.cmd("l0 LOGIN "+quote(u.Address)+" "+quote(u.Password), `^l0 OK`)
	c.trans.Reset()
}

func quote(s string) string { return strconv.Quote(s) }

// send writes raw, waiting for the server's continuation request after each
// synchronising literal announcement.
func (c *client) send(raw string) {
	c.t.Helper()
	c.conn.SetDeadline(c.deadline())
	for {
		m := syncLiteral.FindStringIndex(raw)
		if m == nil {
			break
		}
		c.write(raw[:m[1]])
		c.expect(`^\+`)
		raw = raw[m[1]:]
	}
	c.write(raw)
}

var syncLiteral = regexp.MustCompile(`~?\{\d+\}\r\n`)

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// response reads one response, literals included.
func (c *client) response() ([]byte, error) {
	c.conn.SetDeadline(c.deadline())
	var resp []byte
	for {
		line, err := c.br.ReadBytes('\n')
		resp = append(resp, line...)
		if err != nil {
			return resp, err
		}
		m := literalEnd.FindSubmatch(line)
		if m == nil {
			return resp, nil
		}
		n, _ := strconv.Atoi(string(m[1]))
		lit := make([]byte, n)
		if _, err := io.ReadFull(c.br, lit); err != nil {
			return resp, err
		}
		resp = append(resp, lit...)
	}
}

var literalEnd = regexp.MustCompile(`~?\{(\d+)\+?\}\r\n$`)

// expect reads responses until one matches pattern, and returns them all.
func (c *client) expect(pattern string) []string {
	c.t.Helper()
	re := regexp.MustCompile(pattern)
	var got []string
	for {
		resp, err := c.response()
		c.trans.Write(resp)
		got = append(got, string(resp))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v; got:\n%s", pattern, err, strings.Join(got, ""))
		}
		if re.Match(resp) {
			return got
		}
	}
}

// cmd sends a command and reads up to the response that matches until
// (its tagged response when until is empty).
func (c *client) cmd(raw, until string) []string {
	c.t.Helper()
	raw += "\r\n"
	c.send(raw)
	if until == "" {
		tag, _, _ := strings.Cut(raw, " ")
		until = "^" + regexp.QuoteMeta(tag) + " (OK|NO|BAD)"
	}
	return c.expect(until)
}

// closed reports whether the server closed the connection.
func (c *client) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil
}

// lit, litPlus and binLitPlus write s as a literal of each form.
func lit(s string) string        { return fmt.Sprintf("{%d}\r\n%s", len(s), s) }
func litPlus(s string) string    { return fmt.Sprintf("{%d+}\r\n%s", len(s), s) }
func binLitPlus(s string) string { return fmt.Sprintf("~{%d+}\r\n%s", len(s), s) }

// waitMetric waits until a metric of the proxy's has the value want: what
// a session does as it ends happens after the client has seen it close.
func (e *env) waitMetric(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for got := e.metric(t, name, labels...); got != want; got = e.metric(t, name, labels...) {
		if time.Now().After(deadline) {
			t.Fatalf("%s %v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric reads a counter of the proxy's metrics by its label values.
func (e *env) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if i >= len(labels) || lp.GetValue() != labels[i] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
