package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/prometheus/client_golang/prometheus"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/smime"
)

// imapPKI is a CA with alice and bob, whose keys the proxy's keystore holds.
type imapPKI struct {
	ca         *testpki.CA
	alice, bob *testpki.Identity
}

var (
	imapPKIOnce sync.Once
	imapPKIVal  *imapPKI
)

// imapTestPKI is made once per test binary: RSA key generation is slow.
func imapTestPKI(t testing.TB) *imapPKI {
	imapPKIOnce.Do(func() {
		ca := testpki.NewCA(t, "IMAP Test CA")
		imapPKIVal = &imapPKI{
			ca:    ca,
			alice: ca.Issue(t, "alice@example.test", nil),
			bob:   ca.Issue(t, "bob@example.test", nil),
		}
	})
	return imapPKIVal
}

func (p *imapPKI) identity(id *testpki.Identity) *smime.Identity {
	return &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain}
}

// imapKeys is the keystore as the proxy sees it: each address's keys.
type imapKeys struct {
	mu     sync.Mutex
	keys   map[string][]keystore.KeyPair
	locked bool
}

func (k *imapKeys) add(addr string, id *testpki.Identity) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = map[string][]keystore.KeyPair{}
	}
	k.keys[addr] = append(k.keys[addr], keystore.KeyPair{KeyID: addr, Cert: id.Cert, Key: id.Key})
}

func (k *imapKeys) Signer(string, time.Time) (*keystore.Signer, error) {
	return nil, errors.New("imapKeys: no signing in the IMAP proxy")
}

func (k *imapKeys) EncryptionCert(string, time.Time) (*x509.Certificate, error) {
	return nil, errors.New("imapKeys: no encryption in the IMAP proxy")
}

func (k *imapKeys) DecryptionKeys(email string) ([]keystore.KeyPair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locked {
		return nil, keystore.ErrLocked
	}
	l := k.keys[strings.ToLower(email)]
	if len(l) == 0 {
		return nil, fmt.Errorf("imapKeys: no identity for %s", email)
	}
	return l, nil
}

func (k *imapKeys) Locked() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.locked
}

// imapUpstream is an in-memory IMAP server (go-imap's imapmemserver) on
// 127.0.0.1:0, with hooks to misbehave and a record of what it was asked.
type imapUpstream struct {
	t    testing.TB
	addr string
	mem  *imapmemserver.Server
	srv  *imapserver.Server

	mu    sync.Mutex
	users map[string]*imapmemserver.User
	alias map[string]string // login -> user whose mailboxes it sees
	conns []*imapserver.Conn
	// fetchHook, when set, may answer a FETCH itself.
	fetchHook func(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) (bool, error)

	fetches     atomic.Int64 // FETCH commands
	fullFetches atomic.Int64 // FETCH commands asking for a whole message
}

var imapUpstreamCaps = []imap.Cap{
	imap.CapIMAP4rev1, imap.CapNamespace, imap.CapUIDPlus, imap.CapMove, imap.CapESearch,
	imap.CapListExtended, imap.CapListStatus, imap.CapSpecialUse, imap.CapChildren,
	imap.CapBinary, imap.CapLiteralPlus, imap.CapStatusSize,
}

func startIMAPUpstream(t testing.TB, caps ...imap.Cap) *imapUpstream {
	t.Helper()
	return startIMAPUpstreamTLS(t, "", nil, caps...)
}

// startIMAPUpstreamTLS starts an upstream with TLS: mode "starttls" or
// "implicit" with conf, or none when mode is "".
func startIMAPUpstreamTLS(t testing.TB, mode string, conf *tls.Config, caps ...imap.Cap) *imapUpstream {
	t.Helper()
	if caps == nil {
		caps = imapUpstreamCaps
	}
	set := imap.CapSet{}
	for _, c := range caps {
		set[c] = struct{}{}
	}
	var starttls *tls.Config
	if mode == "starttls" {
		starttls = conf
	}
	u := &imapUpstream{t: t, mem: imapmemserver.New(), users: map[string]*imapmemserver.User{}, alias: map[string]string{}}
	u.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			return &imapUpstreamSession{Session: u.mem.NewSession(), up: u}, nil, nil
		},
		Caps:         set,
		InsecureAuth: true,
		TLSConfig:    starttls,
		Logger:       imapNopLog{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if mode == "implicit" {
		ln = tls.NewListener(ln, conf)
	}
	u.addr = ln.Addr().String()
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

type imapNopLog struct{}

func (imapNopLog) Printf(string, ...any) {}

// user adds a user with an INBOX, or returns the one there is.
func (u *imapUpstream) user(name string) *imapmemserver.User {
	u.mu.Lock()
	defer u.mu.Unlock()
	if usr := u.users[name]; usr != nil {
		return usr
	}
	usr := imapmemserver.NewUser(name, "pw-"+name)
	if err := usr.Create("INBOX", nil); err != nil {
		u.t.Fatal(err)
	}
	u.mem.AddUser(usr)
	u.users[name] = usr
	return usr
}

// share lets login see owner's mailboxes: a shared mailbox.
func (u *imapUpstream) share(login, owner string) {
	u.user(owner)
	u.mu.Lock()
	u.alias[login] = owner
	u.mu.Unlock()
}

// appendMsg stores msg in the user's mailbox and returns its UID.
func (u *imapUpstream) appendMsg(user, mailbox string, msg []byte, flags ...imap.Flag) imap.UID {
	u.t.Helper()
	data, err := u.user(user).Append(mailbox, literal{bytes.NewReader(msg), int64(len(msg))}, &imap.AppendOptions{Flags: flags, Time: time.Now()})
	if err != nil {
		u.t.Fatal(err)
	}
	return data.UID
}

// dropAll closes every connection the upstream has, as a crash would.
func (u *imapUpstream) dropAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.conns {
		c.NetConn().Close()
	}
}

type literal struct {
	io.Reader
	n int64
}

func (l literal) Size() int64 { return l.n }

type imapUpstreamSession struct {
	imapserver.Session
	up *imapUpstream
}

func (s *imapUpstreamSession) Login(username, password string) error {
	s.up.mu.Lock()
	owner, ok := s.up.alias[username]
	s.up.mu.Unlock()
	if ok {
		if password != "pw-"+username {
			return imapserver.ErrAuthFailed
		}
		return s.Session.Login(owner, "pw-"+owner)
	}
	return s.Session.Login(username, password)
}

func (s *imapUpstreamSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) error {
	s.up.fetches.Add(1)
	for _, bs := range opts.BodySection {
		if bs.Specifier == imap.PartSpecifierNone && len(bs.Part) == 0 {
			s.up.fullFetches.Add(1)
			break
		}
	}
	s.up.mu.Lock()
	hook := s.up.fetchHook
	s.up.mu.Unlock()
	if hook != nil {
		if done, err := hook(w, numSet, opts); done {
			return err
		}
	}
	return s.Session.Fetch(w, numSet, opts)
}

// Move is COPY, STORE \Deleted and UID EXPUNGE of those: imapmemserver's
// own MOVE reports each expunge twice.
func (s *imapUpstreamSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	data, err := s.Session.Copy(numSet, dest)
	if err != nil {
		return err
	}
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := s.Session.Store(&imapserver.FetchWriter{}, data.SourceUIDs, store, &imap.StoreOptions{}); err != nil {
		return err
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	return s.Session.Expunge(&imapserver.ExpungeWriter{}, &data.SourceUIDs)
}

func (s *imapUpstreamSession) Namespace() (*imap.NamespaceData, error) {
	return s.Session.(imapserver.SessionNamespace).Namespace()
}

// imapEnv is a proxy in front of an upstream, with the keys, certificate
// cache and metrics it uses.
type imapEnv struct {
	proxy   *proxy.IMAP
	addr    string
	up      *imapUpstream
	keys    *imapKeys
	certs   *certcache.Cache
	reg     *prometheus.Registry
	cfg     *config.Config
	pki     *imapPKI
	log     *imapLogBuffer
	tlsCert *proxy.Certificate
	caPEM   []byte
}

type imapEnvOptions struct {
	listeners []config.Listener
	upstream  string // address; default: the in-memory upstream
	policy    config.Policy
	configure func(*config.Config)
}

func newIMAPEnv(t *testing.T, up *imapUpstream, o *imapEnvOptions) *imapEnv {
	t.Helper()
	if o == nil {
		o = &imapEnvOptions{}
	}
	p := imapTestPKI(t)
	cfg := config.Default()
	cfg.ServerName = "proxy.example.test"
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	if o.listeners != nil {
		cfg.IMAP.Listen = o.listeners
	}
	cfg.IMAP.Upstream = config.Upstream{Addr: up.addr, TLS: config.TLSNone}
	if o.upstream != "" {
		cfg.IMAP.Upstream.Addr = o.upstream
	}
	cfg.IMAP.Timeouts.Connect = config.Duration(5 * time.Second)
	cfg.IMAP.Timeouts.Command = config.Duration(10 * time.Second)
	cfg.IMAP.Timeouts.Data = config.Duration(30 * time.Second)
	cfg.Policy = o.policy
	if o.configure != nil {
		o.configure(cfg)
	}
	keys := &imapKeys{}
	keys.add("alice@example.test", p.alice)
	keys.add("bob@example.test", p.bob)
	certs := imapCerts(t)
	reg := prometheus.NewRegistry()
	logBuf := &imapLogBuffer{}
	env := &imapEnv{up: up, keys: keys, certs: certs, reg: reg, cfg: cfg, pki: p, log: logBuf}
	env.tlsCert, env.caPEM = imapTLSCert(t)
	px, err := proxy.NewIMAP(proxy.Options{
		Config:  cfg,
		Policy:  policy.FromConfig(cfg.Policy),
		Keys:    keys,
		Certs:   certs,
		Cert:    env.tlsCert,
		Logger:  logBuf.logger(t),
		Metrics: proxy.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := px.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := px.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	env.proxy = px
	env.addr = px.Addrs()[0].String()
	return env
}

// client logs in to the proxy with go-imap's client.
func (e *imapEnv) client(t *testing.T, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(e.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, "pw-"+user).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c
}

// metric returns the value of a counter or gauge with the given labels.
func (e *imapEnv) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// imapLogBuffer keeps the proxy's log for assertions and shows it in the
// test's output.
type imapLogBuffer struct{ testutil.Buffer }

func (b *imapLogBuffer) logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), b), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// imapTLSCert makes a self-signed certificate for 127.0.0.1 and localhost.
func imapTLSCert(t testing.TB) (*proxy.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM := testpki.CertPEM(cert)
	certFile := testpki.WriteFile(t, dir, "cert.pem", certPEM)
	keyFile := testpki.WriteFile(t, dir, "key.pem", testpki.KeyPEM(t, key))
	c, err := proxy.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM
}

// imapRaw speaks IMAP line by line, for what go-imap's client hides.
type imapRaw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func dialIMAPRaw(t testing.TB, addr string) (*imapRaw, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &imapRaw{t: t, conn: conn, r: bufio.NewReader(conn)}
	greeting, err := c.read()
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c, greeting
}

var literalRE = regexp.MustCompile(`~?\{(\d+)\+?\}\r\n$`)

// read returns one response, literals included, with its line endings.
func (c *imapRaw) read() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var out strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			return out.String(), err
		}
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return out.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return out.String(), err
		}
		out.Write(buf)
	}
}

// do sends a command and returns the untagged responses and the tagged one.
func (c *imapRaw) do(cmd string) (untagged []string, tagged string) {
	c.t.Helper()
	c.n++
	tag := fmt.Sprintf("a%d", c.n)
	c.send(tag + " " + cmd)
	for {
		resp, err := c.read()
		if err != nil {
			c.t.Fatalf("%s %s: %v (read %q, untagged %q)", tag, cmd, err, resp, untagged)
		}
		if strings.HasPrefix(resp, tag+" ") {
			return untagged, strings.TrimRight(resp, "\r\n")
		}
		untagged = append(untagged, resp)
	}
}

func (c *imapRaw) send(line string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// expectOK fails the test unless cmd ends in OK.
func (c *imapRaw) expectOK(cmd string) []string {
	c.t.Helper()
	untagged, tagged := c.do(cmd)
	if !strings.Contains(tagged, " OK") {
		c.t.Fatalf("%s: %s", cmd, tagged)
	}
	return untagged
}

// waitGoroutines waits for the number of goroutines to come back to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left, want at most %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mailMessage is a small RFC 5322 message with CRLF line ends.
func mailMessage(from, to, subject, body string) []byte {
	return []byte("From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") +
		"@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
}

// imapSign signs msg as alice.
func imapSign(env *imapEnv, msg []byte) ([]byte, error) {
	return smime.Sign(msg, env.pki.identity(env.pki.alice), nil)
}

// imapCerts is a certificate cache that trusts the test CA alone.
func imapCerts(t testing.TB) *certcache.Cache {
	t.Helper()
	certs, err := certcache.Open(t.TempDir(), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.Trust(imapTestPKI(t).ca.Root()); err != nil {
		t.Fatal(err)
	}
	return certs
}

func imapLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
