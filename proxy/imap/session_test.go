package imap_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/proxy/imap"
)

func joined(lines []string) string { return strings.Join(lines, "") }

func mustMatch(t *testing.T, what string, got []string, pattern string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(joined(got)) {
		t.Errorf("%s: got\n%s\nwant a match for %s", what, joined(got), pattern)
	}
}

func mustNotMatch(t *testing.T, what string, got []string, pattern string) {
	t.Helper()
	if regexp.MustCompile(pattern).MatchString(joined(got)) {
		t.Errorf("%s: got\n%s\nwhich matches %s", what, joined(got), pattern)
	}
}

func TestPreauth(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := dial(t, e.addr(), nil)
	got := c.cmd("a CAPABILITY", "")
	mustMatch(t, "CAPABILITY", got, `(?m)^\* CAPABILITY IMAP4rev1 SASL-IR LITERAL\+ ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN\r\n`)
	mustMatch(t, "ID", c.cmd(`b ID ("name" "test")`, ""), `(?m)^\* ID \("name" "smimeproxy"\)\r\nb OK`)
	mustMatch(t, "NOOP", c.cmd("c NOOP", ""), `^c OK`)
	mustMatch(t, "unknown", c.cmd("d XYZZY", ""), `^d BAD`)
	mustMatch(t, "SELECT", c.cmd("e SELECT INBOX", ""), `^e BAD`)
	mustMatch(t, "bad LOGIN", c.cmd("f LOGIN onlyuser", ""), `^f BAD`)
	mustMatch(t, "literal LOGIN", c.cmd("g LOGIN "+lit("nobody@example.test")+" "+litPlus("wrong"), ""), `^g NO`)
	mustMatch(t, "LOGOUT", c.cmd("h LOGOUT", ""), `(?m)^\* BYE .*\r\nh OK`)
	if !c.closed() {
		t.Error("the connection stays open after LOGOUT")
	}

	// A client that keeps sending what the proxy cannot take is let go.
	c = dial(t, e.addr(), nil)
	for i := range 9 {
		c.cmd("x"+string(rune('a'+i))+" BOGUS", "")
	}
	mustMatch(t, "tenth bad command", c.cmd("xj BOGUS", `^\* BYE`), `Too many invalid`)
}

func TestLogin(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.lab.User(t, "alice")
	plain := func(authz, user, pass string) string {
		return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
	}
	for _, tc := range []struct {
		name  string
		steps func(c *client) []string
	}{
		{"LOGIN", func(c *client) []string { return c.cmd("a LOGIN "+quote(u.Address)+" "+quote(u.Password), "") }},
		{"AUTHENTICATE PLAIN with initial response", func(c *client) []string {
			return c.cmd("a AUTHENTICATE PLAIN "+plain("", u.Address, u.Password), "")
		}},
		{"AUTHENTICATE PLAIN", func(c *client) []string {
			c.cmd("a AUTHENTICATE PLAIN", `^\+`)
			return c.cmd(plain("", u.Address, u.Password), "^a ")
		}},
		{"AUTHENTICATE LOGIN", func(c *client) []string {
			c.cmd("a AUTHENTICATE LOGIN", `^\+ VXNlcm5hbWU6`)
			c.cmd(base64.StdEncoding.EncodeToString([]byte(u.Address)), `^\+ UGFzc3dvcmQ6`)
			return c.cmd(base64.StdEncoding.EncodeToString([]byte(u.Password)), "^a ")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.addr(), nil)
			got := tc.steps(c)
			mustMatch(t, "login", got, `(?m)^a OK`)
			mustNotMatch(t, "login", got, `LOGIN-REFERRALS|NOTIFY|CATENATE`)
			caps := c.cmd("b CAPABILITY", "")
			mustMatch(t, "CAPABILITY after login", caps, `(?m)^\* CAPABILITY .*\bCONDSTORE\b.*\bQRESYNC\b`)
			mustNotMatch(t, "CAPABILITY after login", caps, `LOGIN-REFERRALS|NOTIFY|CATENATE|URL-PARTIAL`)
			mustMatch(t, "SELECT", c.cmd("c SELECT INBOX", ""), `(?m)^c OK \[READ-WRITE\]`)
		})
	}

	t.Run("refused", func(t *testing.T) {
		c := dial(t, e.addr(), nil)
		got := c.cmd("a LOGIN "+quote(u.Address)+" wrong-password", "")
		// Dovecot's own words, with the client's tag.
		mustMatch(t, "wrong password", got, `(?m)^a NO \[AUTHENTICATIONFAILED\] Authentication failed\.`)
		mustMatch(t, "cancelled", append(c.cmd("b AUTHENTICATE PLAIN", `^\+`), c.cmd("*", "^b ")...), `(?m)^b BAD`)
		mustMatch(t, "retry", c.cmd("c LOGIN "+quote(u.Address)+" "+quote(u.Password), ""), `(?m)^c OK`)
	})
}

// tlsCert makes the listeners' certificate for localhost and 127.0.0.1,
// and the pool that trusts it.
func tlsCert(t testing.TB) (*proxy.Certificate, *x509.CertPool) {
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
	certFile := testpki.WriteFile(t, dir, "cert.pem", testpki.CertPEM(cert))
	keyFile := testpki.WriteFile(t, dir, "key.pem", testpki.KeyPEM(t, key))
	c, err := proxy.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return c, pool
}

func TestListenersAndTLS(t *testing.T) {
	cert, pool := tlsCert(t)
	e := newEnv(t, envOptions{cert: cert, configure: func(c *config.Config) {
		c.IMAP.Listen = []config.Listener{
			{Addr: "127.0.0.1:0", TLS: config.TLSStartTLS},
			{Addr: "127.0.0.1:0", TLS: config.TLSImplicit},
		}
	}})
	u := e.lab.User(t, "alice")
	login := "l LOGIN " + quote(u.Address) + " " + quote(u.Password)

	c := dial(t, e.proxy.Addrs()[0].String(), nil)
	caps := c.cmd("a CAPABILITY", "")
	mustMatch(t, "before STARTTLS", caps, `STARTTLS LOGINDISABLED`)
	mustNotMatch(t, "before STARTTLS", caps, `AUTH=`)
	mustMatch(t, "LOGIN before STARTTLS", c.cmd(login, ""), `^l NO \[PRIVACYREQUIRED\]`)
	mustMatch(t, "AUTHENTICATE before STARTTLS", c.cmd("m AUTHENTICATE PLAIN AGZvbwBiYXI=", ""), `^m NO \[PRIVACYREQUIRED\]`)
	c.cmd("s STARTTLS", "^s OK")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.br = tc, bufio.NewReader(tc)
	caps = c.cmd("b CAPABILITY", "")
	mustMatch(t, "after STARTTLS", caps, `AUTH=PLAIN`)
	mustNotMatch(t, "after STARTTLS", caps, `STARTTLS|LOGINDISABLED`)
	mustMatch(t, "LOGIN after STARTTLS", c.cmd(login, ""), `(?m)^l OK`)

	ic := dialTLS(t, e.proxy.Addrs()[1].String(), pool)
	mustMatch(t, "implicit TLS", ic.cmd(login, ""), `(?m)^l OK`)

	// Commands piped behind STARTTLS would be injected into the TLS session.
	c = dial(t, e.proxy.Addrs()[0].String(), nil)
	c.write("s STARTTLS\r\nx LOGIN a b\r\n")
	mustMatch(t, "STARTTLS with more behind it", c.expect(`^s `), `^s BAD`)
}

// dialTLS connects to an implicit TLS listener and reads the greeting.
func dialTLS(t testing.TB, addr string, pool *x509.CertPool) *client {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, br: bufio.NewReader(conn)}
	c.expect(`^\* OK`)
	c.trans.Reset()
	return c
}

func TestRefusedCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT INBOX", "")
	for _, cmd := range []string{"COMPRESS DEFLATE", "UNAUTHENTICATE", "NOTIFY SET (SELECTED MessageNew)", "STARTTLS", "LOGIN a b", "GENURLAUTH x INTERNAL"} {
		mustMatch(t, cmd, c.cmd("r "+cmd, ""), `^r BAD .*proxy|^r BAD Already|^r BAD TLS`)
	}
	mustMatch(t, "after the refusals", c.cmd("b NOOP", ""), `(?m)^b OK`)
}

func TestUpstreamUnreachableAtLogin(t *testing.T) {
	e := newEnv(t, envOptions{})
	cfg := *e.cfg
	cfg.IMAP.Upstream = config.Upstream{Addr: testutil.UnusedAddr(t), TLS: config.TLSNone}
	p, err := imap.New(proxy.Options{Config: &cfg, Policy: policy.FromConfig(cfg.Policy), Keys: e.keys, Certs: e.certs})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start with the upstream down: %v", err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	c := dial(t, p.Addrs()[0].String(), nil)
	mustMatch(t, "LOGIN", c.cmd("a LOGIN x y", ""), `^a NO \[UNAVAILABLE\] Cannot reach the mail server`)
	mustMatch(t, "after", c.cmd("b LOGOUT", ""), `(?m)^b OK`)
}

// fakeUpstream is a scripted IMAP server: it greets, logs anyone in, and
// hands the connection to then.
func fakeUpstream(t *testing.T, then func(c net.Conn, r *bufio.Reader)) string {
	return testutil.Serve(t, func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] fake ready\r\n"))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(line, " ")
			switch verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(rest)), " "); verb {
			case "CAPABILITY":
				c.Write([]byte("* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n" + tag + " OK done\r\n"))
			case "LOGIN":
				c.Write([]byte(tag + " OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] logged in\r\n"))
				then(c, r)
				return
			case "LOGOUT":
				c.Write([]byte("* BYE bye\r\n" + tag + " OK done\r\n"))
				return
			default:
				c.Write([]byte(tag + " BAD what\r\n"))
			}
		}
	})
}

func newFakeEnv(t *testing.T, upstream string) *imap.Proxy {
	cfg := config.Default()
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	cfg.IMAP.Upstream = config.Upstream{Addr: upstream, TLS: config.TLSNone}
	cc, err := certcache.Open(t.TempDir(), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := imap.New(proxy.Options{Config: cfg, Policy: policy.FromConfig(cfg.Policy), Keys: newKeys(), Certs: cc})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p
}

func TestUpstreamDropsMidSession(t *testing.T) {
	addr := fakeUpstream(t, func(c net.Conn, r *bufio.Reader) {
		line, _ := r.ReadString('\n')
		tag, _, _ := strings.Cut(line, " ")
		c.Write([]byte("* 3 EXISTS\r\n" + tag + " OK [READ-WRITE] selected\r\n"))
		r.ReadString('\n') // then it goes away mid-command
	})
	p := newFakeEnv(t, addr)
	c := dial(t, p.Addrs()[0].String(), nil)
	c.cmd("a LOGIN x y", "")
	c.cmd("b SELECT INBOX", "")
	mustMatch(t, "upstream gone", c.cmd("c NOOP", `^\* BYE`), `\* BYE Connection to the mail server lost`)
	if !c.closed() {
		t.Error("the client connection stays open without an upstream")
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dialProxy(t, e.lab.User(t, "alice"))
	c.cmd("a SELECT INBOX", "")
	c.cmd("b IDLE", `^\+`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.proxy.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mustMatch(t, "shutdown", c.expect(`^\* BYE`), `Server shutting down`)
	if !c.closed() {
		t.Error("the connection stays open after shutdown")
	}
}

func TestUpstreamTLSVerified(t *testing.T) {
	e := newEnv(t, envOptions{})
	cfg := *e.cfg
	cfg.IMAP.Upstream.CAFile = "" // the system roots do not know the lab's CA
	p, err := imap.New(proxy.Options{Config: &cfg, Policy: policy.FromConfig(cfg.Policy), Keys: e.keys, Certs: e.certs})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err == nil {
		p.Shutdown(context.Background())
		t.Fatal("Start accepted an upstream certificate that does not verify")
	}
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.IMAP.Limits = config.Limits{MaxConnections: 10, MaxConnectionsPerIP: 2,
			PreAuthIdle: config.Duration(300 * time.Millisecond), PreAuthTime: config.Duration(time.Second)}
	}})
	u := e.lab.User(t, "alice")

	// Silence before login ends the session; after login it does not.
	idle := dial(t, e.addr(), nil)
	mustMatch(t, "silent before login", idle.expect(`^\* BYE`), `inactivity`)
	if !idle.closed() {
		t.Error("a silent connection stays open before login")
	}
	busy := dial(t, e.addr(), nil)
	var got []string
	for range 8 {
		time.Sleep(200 * time.Millisecond)
		busy.write("n NOOP\r\n")
		resp, err := busy.response()
		got = append(got, string(resp))
		if err != nil || strings.HasPrefix(string(resp), "* BYE") {
			break
		}
	}
	mustMatch(t, "busy but not logged in", got, `\* BYE Too long without logging in`)

	// Both count against the address until their sessions have ended.
	e.waitMetric(t, 0, "smimeproxy_sessions_open", "imap")
	in := e.dialProxy(t, u)
	time.Sleep(1500 * time.Millisecond)
	mustMatch(t, "logged in, then quiet", in.cmd("a NOOP", ""), `^a OK`)

	// A third connection from the same address is refused at once.
	second := dial(t, e.addr(), nil)
	conn, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	third := &client{t: t, conn: conn, br: bufio.NewReader(conn)}
	mustMatch(t, "third connection", third.expect(`^\* BYE`), `Too many connections`)
	second.cmd("z LOGOUT", "")
	if n := e.metric(t, "smimeproxy_connections_refused_total", "imap", "max_connections_per_ip"); n != 1 {
		t.Errorf("refused connections counted %v, want 1", n)
	}
}

func TestProxyProtocol(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		c.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone, ProxyProtocol: true}}
	}})
	conn, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A PROXY protocol v2 header for TCP over IPv4, from 192.0.2.7:4444.
	header := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x7f\x00\x00\x01\x11\x5c\x00\x8f")
	if _, err := conn.Write(header); err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, br: bufio.NewReader(conn)}
	c.expect(`^\* OK`)
	u := e.lab.User(t, "alice")
	c.cmd("l LOGIN "+quote(u.Address)+" "+quote(u.Password), "^l OK")
	c.cmd("z LOGOUT", "")
	if !strings.Contains(e.log.String(), "remote=192.0.2.7:4444") {
		t.Errorf("the session does not know the client's address from the PROXY header:\n%s", e.log.String())
	}
}

// unavailable is a keystore whose database cannot be reached.
type unavailable struct{ *keys }

func (unavailable) Available() error { return errors.New("store: the database does not answer") }

func TestStoreUnavailable(t *testing.T) {
	e := newEnv(t, envOptions{})
	cfg := *e.cfg
	p, err := imap.New(proxy.Options{Config: &cfg, Policy: policy.FromConfig(cfg.Policy), Keys: unavailable{e.keys}, Certs: e.certs})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	c := dial(t, p.Addrs()[0].String(), nil)
	u := e.lab.User(t, "alice")
	mustMatch(t, "LOGIN", c.cmd("a LOGIN "+quote(u.Address)+" "+quote(u.Password), ""), `^a NO \[UNAVAILABLE\]`)
}
