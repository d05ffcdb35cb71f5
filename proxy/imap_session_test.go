package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/policy"
	"smimeproxy/proxy"
)

// capsOf returns the capabilities in a CAPABILITY response.
func capsOf(t *testing.T, untagged []string) []string {
	t.Helper()
	for _, l := range untagged {
		if strings.HasPrefix(l, "* CAPABILITY ") {
			return strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "* CAPABILITY "))
		}
	}
	t.Fatalf("no CAPABILITY in %q", untagged)
	return nil
}

func TestIMAPCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name      string
		upstream  []imap.Cap
		want, not []string
	}{
		{
			name:     "full upstream",
			upstream: nil,
			want: []string{"IMAP4rev1", "NAMESPACE", "UIDPLUS", "MOVE", "ESEARCH", "LIST-EXTENDED", "LIST-STATUS",
				"SPECIAL-USE", "CHILDREN", "BINARY", "LITERAL+", "STATUS=SIZE", "IDLE", "UNSELECT", "ENABLE"},
			not: []string{"IMAP4rev2", "CONDSTORE", "QRESYNC", "SEARCHRES", "AUTH=PLAIN", "STARTTLS"},
		},
		{
			name:     "minimal upstream",
			upstream: []imap.Cap{imap.CapIMAP4rev1},
			want:     []string{"IMAP4rev1", "NAMESPACE", "ESEARCH", "IDLE", "UNSELECT"},
			not:      []string{"UIDPLUS", "MOVE", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "BINARY", "LITERAL+", "STATUS=SIZE"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startIMAPUpstream(t, tc.upstream...)
			env := newIMAPEnv(t, up, nil)
			const user = "bob@example.test"
			up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, "x", "y"))
			c, greeting := dialIMAPRaw(t, env.addr)
			if !strings.Contains(greeting, "[CAPABILITY IMAP4rev1 ") {
				t.Errorf("greeting: %q", greeting)
			}
			pre := capsOf(t, c.expectOK("CAPABILITY"))
			for _, want := range []string{"IMAP4rev1", "AUTH=PLAIN", "SASL-IR"} {
				if !slices.Contains(pre, want) {
					t.Errorf("before login: %v lacks %s", pre, want)
				}
			}
			for _, not := range []string{"MOVE", "UIDPLUS", "NAMESPACE"} {
				if slices.Contains(pre, not) {
					t.Errorf("before login: %v offers %s", pre, not)
				}
			}
			_, tagged := c.do("LOGIN " + user + " pw-" + user)
			post := capsOf(t, c.expectOK("CAPABILITY"))
			if !strings.Contains(tagged, "OK [CAPABILITY ") {
				t.Errorf("LOGIN: %q", tagged)
			}
			for _, want := range tc.want {
				if !slices.Contains(post, want) {
					t.Errorf("after login: %v lacks %s", post, want)
				}
			}
			for _, not := range tc.not {
				if slices.Contains(post, not) {
					t.Errorf("after login: %v offers %s", post, not)
				}
			}
			untagged := c.expectOK("NAMESPACE")
			if !containsPrefix(untagged, `* NAMESPACE (("" "/")) NIL NIL`) {
				t.Errorf("NAMESPACE: %q", untagged)
			}
			c.expectOK("SELECT INBOX")
			untagged = c.expectOK("SEARCH RETURN (COUNT) ALL")
			if !containsMatch(untagged, `^\* ESEARCH \(TAG "a\d+"\) COUNT 1`) {
				t.Errorf("ESEARCH: %q", untagged)
			}
			if tc.upstream != nil {
				c.expectOK("CREATE Other")
				_, tagged := c.do("MOVE 1 Other")
				if !strings.Contains(tagged, "NO [CANNOT]") {
					t.Errorf("MOVE without upstream MOVE: %q", tagged)
				}
				_, tagged = c.do("UID EXPUNGE 1")
				if !strings.Contains(tagged, "NO [CANNOT]") {
					t.Errorf("UID EXPUNGE without upstream UIDPLUS: %q", tagged)
				}
			}
		})
	}
}

func TestIMAPLoginPassedThrough(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	up.user(user)
	c, _ := dialIMAPRaw(t, env.addr)
	if _, tagged := c.do("LOGIN " + user + " wrong"); tagged != "a1 NO [AUTHENTICATIONFAILED] Authentication failed" {
		t.Errorf("wrong password: %q", tagged)
	}
	if _, tagged := c.do("SELECT INBOX"); !strings.Contains(tagged, "BAD") {
		t.Errorf("SELECT before login: %q", tagged)
	}
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00pw-" + user))
	if _, tagged := c.do("AUTHENTICATE PLAIN " + ir); !strings.HasPrefix(tagged, "a3 OK") {
		t.Errorf("AUTHENTICATE PLAIN: %q", tagged)
	}
	c.expectOK("SELECT INBOX")
	if got := env.metric(t, "smimeproxy_auth_failures_total", "proto", "imap"); got != 1 {
		t.Errorf("auth failures = %v, want 1", got)
	}
	if strings.Contains(env.log.String(), "pw-"+user) || strings.Contains(env.log.String(), "wrong") {
		t.Errorf("a password reached the log")
	}
}

func TestIMAPIdleUpdates(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, "one", "1"))
	up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, "two", "2"))

	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN " + user + " pw-" + user)
	c.expectOK("SELECT INBOX")
	c.send("a9 IDLE")
	if resp, _ := c.read(); !strings.HasPrefix(resp, "+") {
		t.Fatalf("IDLE: %q", resp)
	}

	other, err := imapclient.DialInsecure(up.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Login(user, "pw-"+user).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	expect := func(re string) {
		t.Helper()
		for {
			resp, err := c.read()
			if err != nil {
				t.Fatalf("waiting for %s: %v", re, err)
			}
			if containsMatch([]string{resp}, re) {
				return
			}
		}
	}
	msg := mailMessage("a@example.test", user, "three", "3")
	appendCmd := other.Append("INBOX", int64(len(msg)), nil)
	appendCmd.Write(msg)
	appendCmd.Close()
	if _, err := appendCmd.Wait(); err != nil {
		t.Fatal(err)
	}
	expect(`^\* \d+ EXISTS`)
	if err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	expect(`^\* 1 FETCH \(.*FLAGS \(.*\\Flagged`)
	if err := other.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	expect(`^\* 2 EXPUNGE`)
	c.send("DONE")
	expect(`^a9 OK`)
	// The client's numbering is the upstream's: the message that was 3 is 2.
	untagged := c.expectOK("FETCH 2 (UID)")
	if !containsMatch(untagged, `^\* 2 FETCH \(UID 3\)`) {
		t.Errorf("after IDLE: %q", untagged)
	}
}

func TestIMAPNoopUpdates(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, "one", "1"))
	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN " + user + " pw-" + user)
	c.expectOK("SELECT INBOX")
	up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, "two", "2"))
	if untagged := c.expectOK("NOOP"); !containsPrefix(untagged, "* 2 EXISTS") {
		t.Errorf("NOOP: %q", untagged)
	}
}

func TestIMAPUIDsAreTheUpstreams(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	var want []imap.UID
	for i := range 5 {
		want = append(want, up.appendMsg(user, "INBOX", mailMessage("a@example.test", user, fmt.Sprint(i), "x")))
	}
	// Holes, as deleting messages leaves them.
	c := env.client(t, user)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	direct, err := imapclient.DialInsecure(up.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	direct.Login(user, "pw-"+user).Wait()
	dsel, err := direct.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.UIDValidity != dsel.UIDValidity || sel.UIDNext != dsel.UIDNext {
		t.Errorf("UIDVALIDITY/UIDNEXT %d/%d, upstream %d/%d", sel.UIDValidity, sel.UIDNext, dsel.UIDValidity, dsel.UIDNext)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var got []imap.UID
	for _, m := range msgs {
		got = append(got, m.UID)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("UIDs %v, upstream %v", got, want)
	}
}

func TestIMAPShutdown(t *testing.T) {
	up := startIMAPUpstream(t)
	const user = "bob@example.test"
	up.user(user)
	base := runtime.NumGoroutine()
	env := newIMAPEnv(t, up, nil)
	idle, _ := dialIMAPRaw(t, env.addr)
	idle.expectOK("LOGIN " + user + " pw-" + user)
	idle.expectOK("SELECT INBOX")
	idle.send("a9 IDLE")
	idle.read()
	busy, _ := dialIMAPRaw(t, env.addr)
	busy.expectOK("LOGIN " + user + " pw-" + user)
	anon, _ := dialIMAPRaw(t, env.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := env.proxy.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*imapRaw{idle, busy, anon} {
		expectBye(t, c)
	}
	waitGoroutines(t, base)
	if got := env.metric(t, "smimeproxy_sessions_open", "proto", "imap"); got != 0 {
		t.Errorf("sessions open after Shutdown: %v", got)
	}
}

func TestIMAPReload(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	// A second address of bob's, with a key of its own.
	other := env.pki.ca.Issue(t, "robert@example.test", nil)
	env.keys.add("robert@example.test", other)
	uid := up.appendMsg(user, "INBOX", mustEncrypt(t, mailMessage("a@example.test", "robert@example.test", "old name", "for robert"), other.Cert))
	whole := &imap.FetchItemBodySection{Peek: true}
	read := func(c *imapclient.Client) bool {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		b := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).FindBodySection(whole)
		return strings.Contains(string(b), "for robert")
	}
	before := env.client(t, user)
	if read(before) {
		t.Fatal("decrypted for an address bob may not read for")
	}
	addr := env.proxy.Addrs()[0].String()

	cfg := *env.cfg
	cfg.Policy.Users = map[string]config.UserRules{user: {Addresses: []string{"robert@example.test"}}}
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}, {Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	err := env.proxy.Reload(proxy.Options{Config: &cfg, Policy: policy.FromConfig(cfg.Policy), Keys: env.keys, Certs: env.certs, Cert: env.tlsCert})
	if err != nil {
		t.Fatal(err)
	}
	if got := env.proxy.Addrs(); len(got) != 1 || got[0].String() != addr {
		t.Errorf("listeners moved on Reload: %v, was %s", got, addr)
	}
	if read(before) {
		t.Error("an open session took the new policy")
	}
	if !read(env.client(t, user)) {
		t.Error("a new session did not take the new policy")
	}
	if err := env.proxy.Reload(proxy.Options{Config: &cfg}); err == nil {
		t.Error("Reload with incomplete options: no error")
	}
}

func TestIMAPListenersAndTLS(t *testing.T) {
	up := startIMAPUpstream(t)
	const user = "bob@example.test"
	up.user(user)
	env := newIMAPEnv(t, up, &imapEnvOptions{listeners: []config.Listener{
		{Addr: "127.0.0.1:0", TLS: config.TLSStartTLS},
		{Addr: "127.0.0.1:0", TLS: config.TLSImplicit},
	}})
	addrs := env.proxy.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs = %v", addrs)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(env.caPEM)
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}

	c, _ := dialIMAPRaw(t, addrs[0].String())
	pre := capsOf(t, c.expectOK("CAPABILITY"))
	if !slices.Contains(pre, "STARTTLS") || !slices.Contains(pre, "LOGINDISABLED") {
		t.Errorf("STARTTLS listener before STARTTLS: %v", pre)
	}
	if _, tagged := c.do("LOGIN " + user + " pw-" + user); !strings.Contains(tagged, "NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN in the clear: %q", tagged)
	}

	sc, err := imapclient.DialStartTLS(addrs[0].String(), &imapclient.Options{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Login(user, "pw-"+user).Wait(); err != nil {
		t.Errorf("LOGIN after STARTTLS: %v", err)
	}
	ic, err := imapclient.DialTLS(addrs[1].String(), &imapclient.Options{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login(user, "pw-"+user).Wait(); err != nil {
		t.Errorf("LOGIN over implicit TLS: %v", err)
	}

	// Plaintext is for loopback, unless the configuration says otherwise.
	cfg := *env.cfg
	cfg.IMAP.Listen = []config.Listener{{Addr: "0.0.0.0:0", TLS: config.TLSNone}}
	opts := proxy.Options{Config: &cfg, Policy: policy.Default(), Keys: env.keys, Certs: env.certs}
	if _, err := proxy.NewIMAP(opts); err == nil || !strings.Contains(err.Error(), "insecure_plaintext") {
		t.Errorf("plaintext on 0.0.0.0: %v", err)
	}
	cfg.IMAP.Listen[0].InsecurePlaintext = true
	if _, err := proxy.NewIMAP(opts); err != nil {
		t.Errorf("plaintext on 0.0.0.0 with insecure_plaintext: %v", err)
	}
	cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSImplicit}}
	if _, err := proxy.NewIMAP(opts); err == nil {
		t.Error("TLS listener without a certificate: no error")
	}
}

func TestIMAPUpstreamTLS(t *testing.T) {
	cert, caPEM := imapTLSCert(t)
	caFile := testpki.WriteFile(t, t.TempDir(), "ca.pem", caPEM)
	const user = "bob@example.test"
	for _, tc := range []struct {
		name, upMode string
		mode         config.TLSMode
		caFile       string
		wantStart    string // error Start returns, "" for none
	}{
		{"starttls", "starttls", config.TLSStartTLS, caFile, ""},
		{"implicit", "implicit", config.TLSImplicit, caFile, ""},
		{"no STARTTLS offered", "", config.TLSStartTLS, caFile, "starttls"},
		{"unknown CA", "implicit", config.TLSImplicit, "", "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startIMAPUpstreamTLS(t, tc.upMode, cert.ServerConfig())
			up.user(user)
			p := imapTestPKI(t)
			cfg := config.Default()
			cfg.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
			cfg.IMAP.Upstream = config.Upstream{Addr: up.addr, TLS: tc.mode, CAFile: tc.caFile, ServerName: "localhost"}
			keys := &imapKeys{}
			keys.add(user, p.bob)
			px, err := proxy.NewIMAP(proxy.Options{Config: cfg, Policy: policy.Default(), Keys: keys, Certs: imapCerts(t), Logger: imapLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			err = px.Start(t.Context())
			if tc.wantStart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantStart) {
					t.Errorf("Start: %v, want an error about %s", err, tc.wantStart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer px.Shutdown(context.Background())
			if err := px.Check(t.Context()); err != nil {
				t.Errorf("Check: %v", err)
			}
			c, err := imapclient.DialInsecure(px.Addrs()[0].String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login(user, "pw-"+user).Wait(); err != nil {
				t.Errorf("LOGIN: %v", err)
			}
		})
	}
}

func TestIMAPMessageLogLine(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	signed, err := imapSign(env, mailMessage("alice@example.test", user, "Confidential subject", "the confidential body"))
	if err != nil {
		t.Fatal(err)
	}
	uid := up.appendMsg(user, "INBOX", mustEncrypt(t, signed, env.pki.bob.Cert))
	c := env.client(t, user)
	c.Select("INBOX", nil).Wait()
	fetchOne(t, c, uid, &imap.FetchOptions{RFC822Size: true})
	log := env.log.String()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "S/MIME message opened") {
			line = l
		}
	}
	for _, want := range []string{"proto=imap", "session=", "remote=", "user=" + user, fmt.Sprintf("uid=%d", uid),
		"action=decrypt", "result=ok", "cipher=aes-256-cbc", "bytes=", "dur_ms=", "signatures=valid"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %s", line, want)
		}
	}
	for _, secret := range []string{"Confidential", "confidential body", "pw-"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	if got := env.metric(t, "smimeproxy_opened_total", "action", "verify", "result", "ok"); got != 1 {
		t.Errorf("verified = %v", got)
	}
	if got := env.metric(t, "smimeproxy_imap_commands_total", "command", "FETCH", "result", "ok"); got < 1 {
		t.Errorf("FETCH commands = %v", got)
	}
	if got := env.metric(t, "smimeproxy_sessions_total", "proto", "imap"); got != 1 {
		t.Errorf("sessions = %v", got)
	}
}
