package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/smime"
)

// The SMTP tests run the proxy in process between a client that speaks raw
// lines and a recording go-smtp server standing in for the upstream.

const (
	testPassword   = "alice's secret password"
	testPassphrase = "keystore passphrase"
)

// pki is the test CA, a TLS server certificate for 127.0.0.1 and the
// S/MIME identities: alice sends (her key is in the keystore), bob, carol
// and dave receive.
type pki struct {
	ca                      *testpki.CA
	caFile                  string // the root, PEM
	serverCert, serverKey   string // PEM files for 127.0.0.1 and localhost
	server                  tls.Certificate
	alice, bob, carol, dave *testpki.Identity
}

var (
	pkiOnce sync.Once
	pkiVal  *pki
)

// testPKI makes the PKI once per test binary: RSA keys are slow to make.
func testPKI(t testing.TB) *pki {
	t.Helper()
	pkiOnce.Do(func() {
		ca := testpki.NewCA(t, "smtp test root")
		dir, err := os.MkdirTemp("", "smtp-pki-")
		if err != nil {
			t.Fatal(err)
		}
		p := &pki{
			ca:    ca,
			alice: ca.Issue(t, "alice@example.com", nil),
			bob:   ca.Issue(t, "bob@example.org", nil),
			carol: ca.Issue(t, "carol@example.org", nil),
			dave:  ca.Issue(t, "dave@example.net", nil),
		}
		p.caFile = testpki.WriteFile(t, dir, "ca.pem", testpki.CertPEM(ca.Root()))
		key := testpki.NewKey(t, "p256")
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: "localhost"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		p.serverCert = testpki.WriteFile(t, dir, "server.pem", testpki.CertPEM(cert))
		p.serverKey = testpki.WriteFile(t, dir, "server.key", testpki.KeyPEM(t, key))
		if p.server, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
			t.Fatal(err)
		}
		pkiVal = p
	})
	if pkiVal == nil {
		t.Fatal("the test PKI could not be made")
	}
	return pkiVal
}

// newKeystore is an unlocked keystore holding ids' keys.
func newKeystore(t testing.TB, ids ...*testpki.Identity) *keystore.Store {
	t.Helper()
	return newKeystoreAt(t, filepath.Join(t.TempDir(), "keystore"), ids...)
}

// newKeystoreAt is newKeystore in dir, whose passphrase is testPassphrase.
func newKeystoreAt(t testing.TB, dir string, ids ...*testpki.Identity) *keystore.Store {
	t.Helper()
	ks, err := keystore.Create(dir, []byte(testPassphrase),
		&keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		p12, err := pkcs12.Modern.Encode(id.Key, id.Cert, id.Chain, "pw")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.ImportPKCS12(p12, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

// certCache is a certificate cache that trusts the test CA alone and
// holds certs.
func certCache(t testing.TB, p *pki, certs ...*x509.Certificate) *certcache.Cache {
	t.Helper()
	return certCacheAt(t, filepath.Join(t.TempDir(), "certcache"), p, certs...)
}

// certCacheAt is certCache in dir.
func certCacheAt(t testing.TB, dir string, p *pki, certs ...*x509.Certificate) *certcache.Cache {
	t.Helper()
	cc, err := certcache.Open(dir, &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Trust(p.ca.Root()); err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if _, err := cc.Add(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	return cc
}

// recorded is one transaction the recording upstream received.
type recorded struct {
	from  string
	opts  gosmtp.MailOptions
	rcpts []string
	notes []string // RCPT parameters, as "NOTIFY=..." and "ORCPT=..."
	data  []byte
	bdat  bool // the message came in BDAT chunks, not as DATA
}

// recorder is the upstream: a go-smtp server that records what reaches
// it and can be told to refuse, stall or drop.
type recorder struct {
	t    testing.TB
	srv  *gosmtp.Server
	addr string

	// Hooks, set before the proxy connects; nil accepts.
	onMail func(from string) error
	onRcpt func(to string) error
	// onData may refuse (an error), stall or drop; it has the message read.
	onData func(c *gosmtp.Conn, rcpts []string, data []byte) error
	users  map[string]string // PLAIN and LOGIN credentials it accepts
	tokens map[string]bool   // OAuth tokens it accepts
	mechs  []string
	keep   bool // false: count messages but hold no bytes (benchmarks, memory)

	mu          sync.Mutex
	txns        []recorded
	auths       []string // "MECH user", for each AUTH that reached it
	dataStarted int      // DATA commands that reached it
	logouts     int
	queued      int
}

// upstreamOptions tune the recording upstream.
type upstreamOptions struct {
	noTLS    bool  // offer no STARTTLS
	maxBytes int64 // SIZE; 0: 10 MB
	noDSN    bool
	noUTF8   bool
	mechs    []string // default PLAIN
	// noChunking hides CHUNKING, which go-smtp's server always offers, by
	// editing its EHLO reply on the way out; then TLS, if any, is implicit
	// (under the edit), not STARTTLS.
	noChunking bool
}

func newSMTPRecorder(t testing.TB, p *pki, o upstreamOptions) *recorder {
	t.Helper()
	r := &recorder{t: t, users: map[string]string{"alice@example.com": testPassword}, tokens: map[string]bool{}, keep: true, mechs: o.mechs}
	if r.mechs == nil {
		r.mechs = []string{sasl.Plain}
	}
	r.srv = gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) { return &recorderSession{r: r, c: c}, nil }))
	r.srv.Domain = "upstream.test"
	r.srv.MaxMessageBytes = 10 << 20
	if o.maxBytes > 0 {
		r.srv.MaxMessageBytes = o.maxBytes
	}
	r.srv.EnableDSN = !o.noDSN
	r.srv.EnableSMTPUTF8 = !o.noUTF8
	r.srv.ErrorLog = errorLog{slog.New(slog.DiscardHandler)}
	if !o.noTLS {
		r.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{p.server}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	if o.noChunking {
		ln = &chunklessListener{Listener: ln, tls: r.srv.TLSConfig}
		r.srv.TLSConfig = nil
		r.srv.AllowInsecureAuth = true // TLS is under go-smtp's connection, where it cannot see it
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		r.srv.Close()
		<-done
	})
	return r
}

// chunklessListener's connections, TLS when tls is set, write go-smtp's
// EHLO reply without CHUNKING.
type chunklessListener struct {
	net.Listener
	tls *tls.Config
}

func (l *chunklessListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.tls != nil {
		c = tls.Server(c, l.tls)
	}
	return chunklessConn{c}, nil
}

type chunklessConn struct{ net.Conn }

func (c chunklessConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(bytes.Replace(p, []byte("250-CHUNKING\r\n"), []byte("250-X-NO-CHUNKING\r\n"), 1)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *recorder) transactions() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.txns)
}

func (r *recorder) counts() (dataStarted, logouts int, auths []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dataStarted, r.logouts, slices.Clone(r.auths)
}

// waitLogouts waits until n upstream sessions have ended, so that a test
// can say what never reached the upstream.
func (r *recorder) waitLogouts(n int) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, l, _ := r.counts()
		if l >= n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("upstream sessions ended: %d, want %d", l, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorderSession struct {
	r    *recorder
	c    *gosmtp.Conn
	user string
	cur  *recorded
}

func (s *recorderSession) AuthMechanisms() []string { return s.r.mechs }

func (s *recorderSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		s.r.mu.Lock()
		s.r.auths = append(s.r.auths, mech+" "+user)
		s.r.mu.Unlock()
		if want, ok := s.r.users[user]; !ok || want != pass {
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: upstream says no"}
		}
		s.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{auth: func(_, user, pass string) error { return check(user, pass) }}, nil
	case mechOAuthBearer, mechXOAuth2:
		return &testTokenServer{s: s, mech: mech}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// testTokenServer accepts the tokens in r.tokens and answers others as
// Gmail does: an error challenge, then 535 after the client's reply.
type testTokenServer struct {
	s      *recorderSession
	mech   string
	failed bool
}

func (t *testTokenServer) Next(resp []byte) ([]byte, bool, error) {
	if t.failed {
		want := []byte{1}
		if t.mech == mechXOAuth2 {
			want = []byte{}
		}
		if !bytes.Equal(resp, want) {
			return nil, true, fmt.Errorf("client answered the error challenge with %q", resp)
		}
		return nil, true, &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}
	}
	user, _ := tokenLogin(t.mech, resp)
	t.s.r.mu.Lock()
	t.s.r.auths = append(t.s.r.auths, t.mech+" "+user)
	t.s.r.mu.Unlock()
	for tok := range t.s.r.tokens {
		if bytes.Contains(resp, []byte("auth=Bearer "+tok+"\x01")) {
			t.s.user = user
			return nil, true, nil
		}
	}
	t.failed = true
	return []byte(`{"status":"401","schemes":"bearer"}`), false, nil
}

func (s *recorderSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if s.user == "" {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if s.r.onMail != nil {
		if err := s.r.onMail(from); err != nil {
			return err
		}
	}
	s.cur = &recorded{from: from}
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *recorderSession) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if s.r.onRcpt != nil {
		if err := s.r.onRcpt(to); err != nil {
			return err
		}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil && len(opts.Notify) > 0 {
		s.cur.notes = append(s.cur.notes, fmt.Sprintf("NOTIFY=%v", opts.Notify))
	}
	if opts != nil && opts.OriginalRecipient != "" {
		s.cur.notes = append(s.cur.notes, "ORCPT="+opts.OriginalRecipient)
	}
	return nil
}

func (s *recorderSession) Data(r io.Reader) error {
	s.r.mu.Lock()
	s.r.dataStarted++
	s.r.mu.Unlock()
	var data []byte
	var err error
	if s.r.keep || s.r.onData != nil {
		data, err = io.ReadAll(r)
	} else {
		_, err = io.Copy(io.Discard, r) // benchmarks and memory tests: hold nothing
	}
	if err != nil {
		return err
	}
	if s.r.onData != nil {
		if err := s.r.onData(s.c, s.cur.rcpts, data); err != nil {
			return err
		}
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.queued++
	if s.r.keep {
		s.cur.data = data
		_, s.cur.bdat = r.(*io.PipeReader)
		s.r.txns = append(s.r.txns, *s.cur)
	}
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("Ok: queued as Q%04d", s.r.queued)}
}

func (s *recorderSession) Reset() { s.cur = nil }

func (s *recorderSession) Logout() error {
	s.r.mu.Lock()
	s.r.logouts++
	s.r.mu.Unlock()
	return nil
}

// env is a proxy in front of a recording upstream.
type env struct {
	t       testing.TB
	pki     *pki
	up      *recorder
	cfg     *config.Config
	opts    proxy.Options
	proxy   *Proxy
	keys    *keystore.Store
	certs   *certcache.Cache
	logs    *testutil.Buffer
	metrics *proxy.Metrics
	budget  *proxy.Budget
	reg     *prometheus.Registry
}

// metric returns the value of a counter or gauge with the given labels.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
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

// envOptions tune newEnv.
type envOptions struct {
	upstream upstreamOptions
	certs    []*x509.Certificate    // in the certificate cache
	config   func(c *config.Config) // edits before the proxy is made
	policy   func(p *policy.Policy) // edits of the policy made from it
	recorder func(r *recorder)      // sets hooks before the proxy starts
	listen   []config.Listener      // default: one plain loopback listener
	upAddr   string                 // overrides the upstream address
	quiet    bool                   // log warnings only, for benchmarks
	// keys wraps the keystore the proxy uses, as a store in a database would.
	keys func(*keystore.Store) proxy.Keys
	// store keeps the keystore and the certificate cache in a store of
	// this kind; zero: in directories, with no recheck.
	store storetest.Kind
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	p := testPKI(t)
	e := &env{t: t, pki: p, logs: &testutil.Buffer{}}
	e.up = newSMTPRecorder(t, p, o.upstream)
	if o.recorder != nil {
		o.recorder(e.up)
	}
	if o.store.New != nil {
		e.keys, e.certs = storesIn(t, o.store, p, o.certs...)
	} else {
		e.keys = newKeystore(t, p.alice)
		e.certs = certCache(t, p, o.certs...)
	}
	c := config.Default()
	c.ServerName = "proxy.test"
	c.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	if o.listen != nil {
		c.SMTP.Listen = o.listen
	}
	c.SMTP.Upstream = config.Upstream{Addr: e.up.addr, TLS: config.TLSStartTLS, CAFile: p.caFile}
	if o.upstream.noChunking && !o.upstream.noTLS {
		c.SMTP.Upstream.TLS = config.TLSImplicit
	}
	if o.upAddr != "" {
		c.SMTP.Upstream.Addr = o.upAddr
	}
	c.SMTP.Timeouts = config.Timeouts{Connect: config.Duration(2 * time.Second), Command: config.Duration(5 * time.Second), Data: config.Duration(10 * time.Second)}
	if o.config != nil {
		o.config(c)
	}
	e.cfg = c
	pol := policy.FromConfig(c.Policy)
	if o.policy != nil {
		o.policy(pol)
	}
	var cert *proxy.Certificate
	if slices.ContainsFunc(c.SMTP.Listen, func(l config.Listener) bool { return l.TLS != config.TLSNone }) {
		var err error
		if cert, err = proxy.LoadCertificate(p.serverCert, p.serverKey); err != nil {
			t.Fatal(err)
		}
	}
	e.reg = prometheus.NewRegistry()
	e.metrics = proxy.NewMetrics(e.reg)
	level := slog.LevelInfo
	if o.quiet {
		level = slog.LevelWarn
	}
	e.budget = proxy.NewBudget(int64(c.MemoryBudgetMB)<<20, e.metrics)
	var keys proxy.Keys = e.keys
	if o.keys != nil {
		keys = o.keys(e.keys)
	}
	e.opts = proxy.Options{Config: c, Policy: pol, Keys: keys, Certs: e.certs, Cert: cert, Metrics: e.metrics, Budget: e.budget,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), e.logs), &slog.HandlerOptions{Level: level}))}
	var err error
	if e.proxy, err = New(e.opts); err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.proxy.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if strings.Contains(e.logs.String(), testPassword) {
			t.Errorf("the log holds the password")
		}
	})
	return e
}

// addr is the address of listener i.
func (e *env) addr(i int) string { return e.proxy.Addrs()[i].String() }

// dial connects a raw client to the first listener and reads the greeting.
func (e *env) dial() *testClient {
	e.t.Helper()
	return dialTest(e.t, e.addr(0))
}

// login dials, says EHLO and logs in as alice with PLAIN.
func (e *env) login() *testClient {
	e.t.Helper()
	c := e.dial()
	c.cmd("EHLO client.test", "250 *")
	c.cmd("AUTH PLAIN "+plain("alice@example.com", testPassword), "235 2.0.0 *")
	return c
}

// send runs one transaction from alice and returns the final reply's last line.
func (c *testClient) send(from string, rcpts []string, msg string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 *")
	for _, r := range rcpts {
		c.cmd("RCPT TO:<"+r+">", "250 *")
	}
	c.cmd("DATA", "354 *")
	return c.data(msg)
}

// data writes msg with dot-stuffing and the final dot, and returns the reply.
func (c *testClient) data(msg string) string {
	c.t.Helper()
	c.write(dotStuffed(msg))
	lines := c.read()
	return lines[len(lines)-1]
}

// dotStuffed is msg as DATA sends it: leading dots doubled, then the final dot.
func dotStuffed(msg string) string {
	var b strings.Builder
	for line := range strings.Lines(msg) {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	if !strings.HasSuffix(msg, "\r\n") {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// testClient speaks SMTP as raw lines.
type testClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialTest(t testing.TB, addr string) *testClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("220 *")
	return c
}

func (c *testClient) write(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", firstLine(s), err)
	}
}

// read reads one reply, every line of it.
func (c *testClient) read() []string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply (after %q): %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// expect reads a reply and checks its last line against want, where *
// matches anything.
func (c *testClient) expect(want string) []string {
	c.t.Helper()
	lines := c.read()
	if last := lines[len(lines)-1]; !match(want, last) {
		c.t.Fatalf("reply %q, want %q", lines, want)
	}
	return lines
}

// cmd sends a command line and expects a reply.
func (c *testClient) cmd(line, want string) []string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(want)
}

// closed reports whether the server closed the connection.
func (c *testClient) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// startTLS upgrades the connection, verifying the proxy's certificate.
func (c *testClient) startTLS(p *pki) {
	c.t.Helper()
	c.cmd("STARTTLS", "220 *")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

// match matches s against pattern, where * matches any run of characters.
func match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return s == ""
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// message is a small message from alice; extra header lines come first.
func message(to, subject, body string, extra ...string) string {
	var b strings.Builder
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "From: Alice <alice@example.com>\r\nTo: %s\r\nSubject: %s\r\n", to, subject)
	b.WriteString("Date: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	b.WriteString(body)
	return b.String()
}

// open decrypts and verifies msg as the holder of id would.
func open(t testing.TB, p *pki, msg []byte, ids ...*testpki.Identity) *smime.Opened {
	t.Helper()
	var keys []smime.KeyPair
	for _, id := range ids {
		keys = append(keys, smime.KeyPair{Cert: id.Cert, Key: id.Key})
	}
	o, err := smime.Open(msg, &smime.OpenOptions{Keys: keys, Verify: smime.VerifyOptions{Roots: p.ca.Pool()}})
	if err != nil {
		t.Fatalf("smime.Open: %v", err)
	}
	return o
}

// goroutines waits until no more goroutines run than before, and
// fails the test with a dump of them if some are left.
func goroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialTLS connects to an implicit TLS listener, verifying the proxy's
// certificate, and reads the greeting.
func dialTLS(t testing.TB, e *env, addr string) *testClient {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: e.pki.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("220 *")
	return c
}
