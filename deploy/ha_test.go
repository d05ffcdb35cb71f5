package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"gopkg.in/yaml.v3"
	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/internal/pgtest"
	"smimeproxy/internal/smtpload"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

// TestHAExample checks deploy/ha: HAProxy accepts its configuration, the
// instances' configuration validates, every backend sent the PROXY header
// reaches a listener that reads it (and no other does), health checks ask
// /readyz, and compose runs what the files name.
func TestHAExample(t *testing.T) {
	bin := testutil.NeedTool(t, "haproxy")
	out, err := exec.Command(bin, "-c", "-f", "ha/haproxy.cfg").CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "WARNING") && !strings.Contains(line, "could not resolve address") {
			t.Errorf("haproxy -c warns: %s", line)
		}
	}

	data, err := os.ReadFile("ha/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data)
	if err != nil {
		t.Fatalf("ha/config.yaml: %v", err)
	}
	dir := t.TempDir()
	for _, p := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile, &c.Keystore.PassphraseFile, &c.Storage.Postgres.PasswordFile} {
		*p = filepath.Join(dir, filepath.Base(*p))
		if err := os.WriteFile(*p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("ha/config.yaml does not validate: %v", err)
	}
	if !c.UsesPostgres() {
		t.Error("ha/config.yaml keeps the stores in directories")
	}
	proxied := map[string]bool{} // listener port: reads the PROXY header
	for _, l := range append(slices.Clone(c.SMTP.Listen), c.IMAP.Listen...) {
		proxied[l.Addr[strings.LastIndexByte(l.Addr, ':')+1:]] = l.ProxyProtocol
	}
	metricsPort := c.Metrics.Listen[strings.LastIndexByte(c.Metrics.Listen, ':')+1:]

	cfg, err := os.ReadFile("ha/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	var backend, defaults string
	servers := 0
	for line := range strings.Lines(string(cfg)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "backend":
			backend, defaults = f[1], ""
		case f[0] == "default-server":
			defaults = line
			if !strings.Contains(line, "check port "+metricsPort) {
				t.Errorf("backend %s does not check the metrics port %s: %s", backend, metricsPort, line)
			}
		case f[0] == "http-check" && f[1] == "send" && !strings.Contains(line, "uri /readyz"):
			t.Errorf("backend %s checks %s, want /readyz", backend, line)
		case f[0] == "server":
			servers++
			port := f[2][strings.LastIndexByte(f[2], ':')+1:]
			reads, ok := proxied[port]
			if !ok {
				t.Errorf("backend %s sends to port %s, where no listener is", backend, port)
			}
			if sends := strings.Contains(defaults+line, "send-proxy-v2"); sends != reads {
				t.Errorf("backend %s: sends the PROXY header %v, the listener on port %s reads it %v", backend, sends, port, reads)
			}
		}
	}
	if servers != 2*len(proxied) {
		t.Errorf("haproxy.cfg has %d servers, want two instances for each of %d listeners", servers, len(proxied))
	}

	var compose struct {
		Services map[string]struct {
			Command []string
			Ports   []string
		}
	}
	data, err = os.ReadFile("ha/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("ha/compose.yaml: %v", err)
	}
	for _, s := range []string{"postgres", "migrate", "proxy1", "proxy2", "haproxy"} {
		if _, ok := compose.Services[s]; !ok {
			t.Errorf("compose.yaml has no %s service", s)
		}
	}
	if got := compose.Services["migrate"].Command; !slices.Equal(got[:2], []string{"store", "migrate"}) {
		t.Errorf("the migrate service runs %v, want store migrate", got)
	}
	binds := regexp.MustCompile(`(?m)^\s+bind :(\d+)$`).FindAllStringSubmatch(string(cfg), -1)
	var bound, published []string
	for _, b := range binds {
		bound = append(bound, b[1])
	}
	for _, p := range compose.Services["haproxy"].Ports {
		published = append(published, p[strings.LastIndexByte(p, ':')+1:])
	}
	slices.Sort(bound)
	slices.Sort(published)
	if !slices.Equal(bound, published) {
		t.Errorf("HAProxy binds %v, compose publishes %v", bound, published)
	}
}

// instance is one smimeproxy serve process.
type instance struct {
	name               string
	config             string
	smtp, imap, health string
	cmd                *exec.Cmd
	log                testutil.Buffer
}

// haPassphrase unlocks the shared keystore.
const haPassphrase = "ha keystore passphrase"

// TestHA runs two real smimeproxy serve processes, sharing one keystore and
// certificate cache in the test PostgreSQL, behind a real HAProxy, in front
// of the lab's Postfix and Dovecot:
//   - bob's signed mail read by alice through instance 1 teaches both
//     instances his certificate: her reply through instance 2 goes out
//     encrypted to him;
//   - `certs remove` on the CLI stops encryption to him on both;
//   - killing instance 1 in the middle of a load loses and duplicates
//     nothing: every message the client saw accepted arrives exactly once,
//     and the client saw a failure for every one that did not arrive.
//
// Changes reach the other instance within the poll interval plus the
// stores' recheck interval: 2 seconds with the defaults, which the test
// waits.
func TestHA(t *testing.T) {
	l := lab.Start(t)
	pg := pgtest.Start(t)
	haproxyBin := testutil.NeedTool(t, "haproxy")
	bin := buildStatic(t)
	alice, bob := l.User(t, "alice"), l.User(t, "bob")
	marker := fmt.Sprintf("ha-%d", time.Now().UnixNano())

	dir := t.TempDir()
	url := pg.Schema(t)
	root := testpki.NewCA(t, "HA Root")
	aliceID := root.Issue(t, alice.Address, nil)
	bobID := root.Issue(t, bob.Address, nil)
	setupStores(t, pg, url, root, aliceID)

	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("passphrase", haPassphrase)
	write("dbpassword", pg.Password)
	var insts [2]*instance
	for i := range insts {
		in := &instance{
			name: fmt.Sprintf("proxy%d", i+1), smtp: testutil.UnusedAddr(t), imap: testutil.UnusedAddr(t), health: testutil.UnusedAddr(t),
		}
		in.config = write(in.name+".yaml", fmt.Sprintf(`server_name: %s.test
smtp:
  listen: [{addr: %q, tls: none, proxy_protocol: true}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
imap:
  listen: [{addr: %q, tls: none, proxy_protocol: true}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
keystore:
  passphrase_file: passphrase
storage:
  postgres: {url: %q, password_file: dbpassword}
trust: {system_roots: false}
metrics: {listen: %q}
shutdown_timeout: 5s
`, in.name, in.smtp, l.Submission, l.CA, in.imap, l.IMAP, l.CA, url, in.health))
		in.start(t, bin)
		insts[i] = in
	}
	for _, in := range insts {
		in.waitReady(t)
	}

	// HAProxy: one frontend balanced over both instances, and one per
	// instance for the steps that must go through a given one.
	lb := map[string]string{"smtp": testutil.UnusedAddr(t), "smtp1": testutil.UnusedAddr(t), "smtp2": testutil.UnusedAddr(t), "imap1": testutil.UnusedAddr(t)}
	health := func(in *instance) string { return in.health[strings.LastIndexByte(in.health, ':')+1:] }
	haCfg := fmt.Sprintf(`global
    maxconn 500
defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    retries 2
    option redispatch
backend smtp
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    server p1 %[1]s check port %[2]s inter 200ms fall 1 rise 2 send-proxy-v2
    server p2 %[3]s check port %[4]s inter 200ms fall 1 rise 2 send-proxy-v2
backend smtp1
    server p1 %[1]s send-proxy-v2
backend smtp2
    server p2 %[3]s send-proxy-v2
backend imap1
    server p1 %[5]s send-proxy-v2
frontend smtp
    bind %[6]s
    default_backend smtp
frontend smtp1
    bind %[7]s
    default_backend smtp1
frontend smtp2
    bind %[8]s
    default_backend smtp2
frontend imap1
    bind %[9]s
    default_backend imap1
`, insts[0].smtp, health(insts[0]), insts[1].smtp, health(insts[1]), insts[0].imap, lb["smtp"], lb["smtp1"], lb["smtp2"], lb["imap1"])
	ha := exec.Command(haproxyBin, "-db", "-f", write("haproxy.cfg", haCfg))
	var haLog testutil.Buffer
	ha.Stdout, ha.Stderr = &haLog, &haLog
	if err := ha.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ha.Process.Kill()
		_ = ha.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", haLog.String())
		}
	})
	for _, addr := range lb {
		waitListening(t, addr)
	}

	// bob writes to alice, signed; alice reads it through instance 1.
	signed, err := smime.Sign([]byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s from bob\r\nMessage-ID: <%s.bob@example.test>\r\n\r\nHello alice\r\n",
		bob.Address, alice.Address, marker, marker)), &smime.Identity{Cert: bobID.Cert, Key: bobID.Key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Deliver(t, bob.Address, []string{alice.Address}, signed)
	body := fetch(t, lb["imap1"], alice, marker+" from bob")
	if !bytes.Contains(body, []byte("smime=pass")) {
		t.Fatalf("alice's copy of bob's message through instance 1 has no passing S/MIME verdict:\n%s", head(body))
	}
	time.Sleep(propagation)

	// Her reply goes out through instance 2, which never saw bob's mail.
	from := sendVia(t, lb["smtp2"], alice, bob.Address, marker+" reply")
	got := l.WaitMessage(t, bob.Address, marker+".reply")
	if ct := contentType(got); !strings.Contains(strings.ToLower(ct), "enveloped-data") {
		t.Fatalf("alice's reply through instance 2 arrived as %q, want encrypted to bob", ct)
	}
	if !strings.Contains(insts[1].log.String(), "remote="+from) {
		t.Errorf("instance 2's log does not name the client %s (the PROXY header's):\n%s", from, insts[1].log.String())
	}

	// The CLI removes bob's certificate; neither instance encrypts to him.
	if out, err := exec.Command(bin, "certs", "remove", bob.Address, "--config", insts[0].config).CombinedOutput(); err != nil {
		t.Fatalf("certs remove: %v\n%s", err, out)
	}
	time.Sleep(propagation)
	for i, fe := range []string{"smtp1", "smtp2"} {
		subject := fmt.Sprintf("%s after removal %d", marker, i+1)
		sendVia(t, lb[fe], alice, bob.Address, subject)
		got := l.WaitMessage(t, bob.Address, strings.ReplaceAll(subject, " ", "."))
		if ct := contentType(got); !strings.Contains(ct, "multipart/signed") {
			t.Errorf("after certs remove, instance %d sent bob %q, want signed only", i+1, ct)
		}
	}

	killMidLoad(t, l, lb["smtp"], insts[0], alice, bob.Address, marker+"-load")
}

// propagation is how long a change takes to reach every instance with the
// default intervals: storage.postgres.poll_interval (1s) plus the stores'
// recheck (1s), with a margin.
const propagation = 2500 * time.Millisecond

// killMidLoad sends through the balanced frontend and kills in's process
// once some messages went through.
func killMidLoad(t *testing.T, l *lab.Lab, addr string, in *instance, from lab.User, to, marker string) {
	const messages = 60
	var (
		mu       sync.Mutex
		accepted = map[int]bool{}
		failed   = map[int]error{}
		kill     sync.Once
	)
	o := smtpload.Options{
		Addr: addr, TLS: "none", User: from.Address, Password: from.Password, From: from.Address, To: []string{to},
		Messages: messages, Conns: 6, Size: 2048, Marker: marker, Timeout: 30 * time.Second,
		Done: func(i int, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[i] = err
				return
			}
			accepted[i] = true
			if len(accepted) == messages/4 {
				kill.Do(func() { _ = in.cmd.Process.Signal(syscall.SIGKILL) })
			}
		},
	}
	r, err := smtpload.Run(t.Context(), o)
	// Kill it now if the load ended before a quarter got through, so that
	// the wait below cannot hang; the count of accepted ones then fails.
	kill.Do(func() { _ = in.cmd.Process.Signal(syscall.SIGKILL) })
	if err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Wait(); err == nil {
		t.Fatalf("%s was not killed", in.name)
	}
	t.Logf("load with %s killed: %d accepted, %d failed (first errors %v)", in.name, r.Sent, r.Failed, r.Errs)
	if r.Sent < messages/2 {
		t.Errorf("only %d of %d messages were accepted: the other instance did not take over", r.Sent, messages)
	}
	found := countDelivered(t, l.Maildir(to), marker, r.Sent)
	for i := range messages {
		id := smtpload.MessageID(marker, i)
		switch n := found[id]; {
		case n > 1:
			t.Errorf("%s arrived %d times", id, n)
		case accepted[i] && n != 1:
			t.Errorf("%s was accepted but arrived %d times", id, n)
		case n == 0 && failed[i] == nil:
			t.Errorf("%s did not arrive, and the client saw no failure", id)
		}
	}
}

// setupStores makes the shared keystore with alice's key and trusts root in
// the shared certificate cache.
func setupStores(t *testing.T, pg *pgtest.Server, url string, root *testpki.CA, alice *testpki.Identity) {
	t.Helper()
	db := pg.Open(t, url, 0)
	ks, err := keystore.CreateDocs(db.Docs("keystore"), []byte(haPassphrase), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	p12, err := pkcs12.Modern.WithIterations(keystore.MinBackupIterations).Encode(alice.Key, alice.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.OpenDocs(db.Docs("certcache"), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Trust(root.Cert); err != nil {
		t.Fatal(err)
	}
}

func (in *instance) start(t *testing.T, bin string) {
	t.Helper()
	in.cmd = exec.Command(bin, "serve", "--config", in.config)
	in.cmd.Dir = filepath.Dir(in.config)
	in.cmd.Stdout, in.cmd.Stderr = &in.log, &in.log
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if in.cmd.ProcessState == nil {
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			_ = in.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s:\n%s", in.name, in.log.String())
		}
	})
}

// waitReady waits for the instance's /readyz to answer 200.
func (in *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + in.health + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never got ready: %v\n%s", in.name, err, in.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fetch logs in as u on the IMAP listener at addr and returns the whole
// message whose subject holds subject, as the proxy serves it.
func fetch(t *testing.T, addr string, u lab.User, subject string) []byte {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(u.Address, u.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var uids []imap.UID
	deadline := time.Now().Add(15 * time.Second)
	for len(uids) == 0 {
		data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if uids = data.AllUIDs(); len(uids) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no message %q in %s's INBOX", subject, u.Address)
			}
			time.Sleep(200 * time.Millisecond)
			if err := c.Noop().Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uids[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %d messages, %v", len(msgs), err)
	}
	for _, b := range msgs[0].BodySection {
		return b.Bytes
	}
	t.Fatal("FETCH returned no body")
	return nil
}

// sendVia submits one message from u to rcpt through addr, with a
// Message-ID made of subject, and returns the client's own address, which
// the instance must log.
func sendVia(t *testing.T, addr string, u lab.User, rcpt, subject string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", u.Address, u.Password)); err != nil {
		t.Fatal(err)
	}
	id := strings.ReplaceAll(subject, " ", ".")
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\nHello bob\r\n", u.Address, rcpt, subject, id)
	if err := c.SendMail(u.Address, []string{rcpt}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send %q: %v", subject, err)
	}
	_ = c.Quit()
	return conn.LocalAddr().String()
}

// countDelivered counts the messages of a load in a Maildir by Message-ID,
// waiting until want arrived and nothing more came for two seconds.
func countDelivered(t *testing.T, dir, marker string, want int) map[string]int {
	t.Helper()
	found := map[string]int{}
	seen := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	var settled time.Time
	for {
		for _, sub := range []string{"new", "cur"} {
			entries, err := os.ReadDir(filepath.Join(dir, sub))
			if errors.Is(err, os.ErrPermission) {
				testutil.Absent(t, "reading the lab's Maildirs needs root")
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			for _, ent := range entries {
				key, _, _ := strings.Cut(ent.Name(), ":")
				if seen[key] {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, sub, ent.Name()))
				if err != nil {
					continue // moved from new to cur meanwhile
				}
				seen[key] = true
				if id := headerValue(b, "Message-Id"); strings.Contains(id, marker+".") {
					found[strings.Trim(id, "<>")]++
				}
			}
		}
		n := 0
		for c := range maps.Values(found) {
			n += c
		}
		switch {
		case n >= want && settled.IsZero():
			settled = time.Now().Add(2 * time.Second)
		case !settled.IsZero() && time.Now().After(settled):
			return found
		case time.Now().After(deadline):
			t.Errorf("%d of %d messages arrived within a minute", n, want)
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// headerValue returns a header field's value, unfolded.
func headerValue(msg []byte, name string) string {
	r := bufio.NewReader(bytes.NewReader(msg))
	var value string
	in := false
	for {
		line, err := r.ReadString('\n')
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" {
			break
		}
		switch {
		case (line[0] == ' ' || line[0] == '\t') && in:
			value += " " + strings.TrimSpace(trimmed)
		default:
			k, v, _ := strings.Cut(trimmed, ":")
			in = strings.EqualFold(k, name)
			if in {
				value = strings.TrimSpace(v)
			}
		}
		if err != nil {
			break
		}
	}
	return value
}

func contentType(msg []byte) string { return headerValue(msg, "Content-Type") }

// head is the header of a message, for failure messages.
func head(msg []byte) string {
	h, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return string(h)
}
