package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"smimeproxy/certcache"
	"smimeproxy/internal/demo"
	"smimeproxy/internal/pgtest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

const storePassphrase = "store copy passphrase"

// fillStores makes a keystore and a certificate cache in dir with something
// of every kind: keys with certificates and chains, a pending key, others'
// certificates, an intermediate and a trust anchor.
func fillStores(t *testing.T, dir string) {
	t.Helper()
	ks, err := keystore.Create(filepath.Join(dir, "keystore"), []byte(storePassphrase), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	root := testpki.NewCA(t, "Copy Root")
	inter := root.Intermediate(t, "Copy Issuing CA")
	for _, email := range []string{"alice@example.com", "bob@example.com", "pending@example.com"} {
		der, _, err := ks.NewCSR(keystore.CSRRequest{Email: email, KeyType: keystore.ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		if email == "pending@example.com" {
			continue
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		cert := inter.Issue(t, email, &testpki.Options{PublicKey: csr.PublicKey}).Cert
		if _, err := ks.ImportCertificates([]*x509.Certificate{cert, inter.Cert}); err != nil {
			t.Fatal(err)
		}
	}
	cc, err := certcache.Open(filepath.Join(dir, "certcache"), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Trust(root.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.AddIntermediates(inter.Cert); err != nil {
		t.Fatal(err)
	}
	for _, email := range []string{"carol@example.org", "dave@example.org"} {
		if err := cc.Harvest(inter.Issue(t, email, nil).Cert, nil, time.Now().Add(-time.Hour), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// files returns every file under dir but the lock files, by relative path.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".lock" {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// served is what the stores return: every identity with its certificates,
// chain and private key, every certificate of others with its metadata, the
// anchors and the intermediates.
type served struct {
	Identities    []keystore.IdentityInfo
	Keys          map[string][]byte // PKCS #8 of each key, by id
	Certs         []certcache.Entry
	Anchors       [][]byte
	Intermediates [][]byte
}

func serve(t *testing.T, ks *keystore.Store, cc *certcache.Cache) served {
	t.Helper()
	if err := ks.Unlock([]byte(storePassphrase)); err != nil {
		t.Fatal(err)
	}
	s := served{Identities: ks.Identities(), Keys: map[string][]byte{}, Certs: cc.List()}
	for _, id := range ks.Identities() {
		kps, err := ks.DecryptionKeys(id.Email)
		if err != nil {
			continue // pending: no certificate, no key to decrypt with
		}
		for _, kp := range kps {
			der, err := x509.MarshalPKCS8PrivateKey(kp.Key.(crypto.Signer))
			if err != nil {
				t.Fatal(err)
			}
			s.Keys[kp.KeyID] = der
		}
	}
	for _, c := range cc.Anchors() {
		s.Anchors = append(s.Anchors, c.Raw)
	}
	for _, c := range cc.IntermediateCerts() {
		s.Intermediates = append(s.Intermediates, c.Raw)
	}
	return s
}

// TestStoreCopyRoundTrip moves a deployment from directories into
// PostgreSQL and back: the files come back byte for byte, and the stores
// in the database and in the new directories return exactly what the old
// ones did.
func TestStoreCopyRoundTrip(t *testing.T) {
	srv := pgtest.Start(t)
	c := newCLI(t)
	fillStores(t, c.path("old"))
	pwFile := testpki.WriteFile(t, c.dir, "dbpassword", []byte(srv.Password+"\n"))
	url := srv.Schema(t)

	out := c.ok("store", "copy", "--from", c.path("old/keystore"), "--to", url, "--db-password-file", pwFile)
	if !strings.Contains(out, "Copied 4 keystore documents") || !strings.Contains(out, "Copied 4 certificate cache documents") {
		t.Errorf("store copy to the database said:\n%s\nwant 4 keystore documents (header, three keys) and 4 of the cache", out)
	}
	if code, _, errOut := c.run("store", "copy", "--from", c.path("old/keystore"), "--to", url, "--db-password-file", pwFile); code != exitFailure || !strings.Contains(errOut, "holds documents already") {
		t.Errorf("store copy into a database that holds a keystore = exit %d %q, want 1, refused", code, errOut)
	}
	c.ok("store", "copy", "--from", url, "--to", c.path("new/keystore"), "--db-password-file", pwFile)

	if before, after := files(t, c.path("old")), files(t, c.path("new")); !reflect.DeepEqual(before, after) {
		t.Errorf("the round trip changed the files:\nbefore %v\nafter  %v", keysOf(before), keysOf(after))
	}

	open := func(ks *keystore.Store, err error) *keystore.Store {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	openCache := func(cc *certcache.Cache, err error) *certcache.Cache {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	noSys := &certcache.Options{NoSystemRoots: true}
	want := serve(t, open(keystore.Open(c.path("old/keystore"), nil)), openCache(certcache.Open(c.path("old/certcache"), noSys)))
	db := srv.Open(t, url, 0)
	inDB := serve(t, open(keystore.OpenDocs(db.Docs("keystore"), nil)), openCache(certcache.OpenDocs(db.Docs("certcache"), noSys)))
	back := serve(t, open(keystore.Open(c.path("new/keystore"), nil)), openCache(certcache.Open(c.path("new/certcache"), noSys)))
	if len(want.Identities) != 3 || len(want.Keys) != 2 || len(want.Certs) != 2 || len(want.Anchors) != 1 || len(want.Intermediates) != 1 {
		t.Fatalf("the stores to copy hold %d identities, %d keys, %d certificates, %d anchors, %d intermediates; want 3, 2, 2, 1, 1",
			len(want.Identities), len(want.Keys), len(want.Certs), len(want.Anchors), len(want.Intermediates))
	}
	for name, got := range map[string]served{"the database": inDB, "the directories copied back": back} {
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s return other than the original stores:\ngot  %+v\nwant %+v", name, got, want)
		}
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestStoreMigrate: several instances may migrate at once; the schema ends
// at the current version, once, and a second run has nothing to do.
func TestStoreMigrate(t *testing.T) {
	srv := pgtest.Start(t)
	c := newCLI(t)
	pwFile := testpki.WriteFile(t, c.dir, "dbpassword", []byte(srv.Password+"\n"))
	url := srv.EmptySchema(t)
	cfg := testpki.WriteFile(t, c.dir, "config.yaml", fmt.Appendf(nil, "keystore: {dir: keystore}\nstorage:\n  postgres: {url: %q, password_file: %q}\n", url, pwFile))

	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Go(func() {
			cl := newCLI(t)
			code, out, errOut := cl.run("store", "migrate", "--config", cfg)
			outs[i] = fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		})
	}
	wg.Wait()
	migrated := 0
	for _, out := range outs {
		switch {
		case strings.Contains(out, "exit 0: Migrated the schema from version 0"):
			migrated++
		case !strings.Contains(out, "exit 0: The schema is at version"):
			t.Errorf("store migrate run at once with others: %s", out)
		}
	}
	if migrated != 1 {
		t.Errorf("%d of the concurrent runs migrated, want exactly one:\n%s", migrated, strings.Join(outs, "\n"))
	}
	if out := c.ok("store", "migrate", "--config", cfg); !strings.Contains(out, "nothing to do") {
		t.Errorf("store migrate again = %q, want nothing to do", out)
	}
	// On a schema not migrated yet, commands say what to run, unless the
	// configuration asks them to migrate first.
	unmigrated := srv.EmptySchema(t)
	plain := testpki.WriteFile(t, c.dir, "plain.yaml", fmt.Appendf(nil, "keystore: {dir: keystore}\nstorage:\n  postgres: {url: %q, password_file: %q}\n", unmigrated, pwFile))
	if code, _, errOut := c.run("certs", "list", "--config", plain); code != exitFailure || !strings.Contains(errOut, "run 'smimeproxy store migrate'") {
		t.Errorf("certs list on a schema not migrated = exit %d %q, want 1 and what to run", code, errOut)
	}
	auto := testpki.WriteFile(t, c.dir, "auto.yaml", fmt.Appendf(nil, "keystore: {dir: keystore}\nstorage:\n  postgres: {url: %q, password_file: %q, migrate: true}\n", unmigrated, pwFile))
	c.ok("certs", "list", "--config", auto)
	c.ok("certs", "list", "--config", plain)

	// An instance finds the schema ready, and makes its keystore there.
	c.vars["SMIMEPROXY_PASSPHRASE"] = storePassphrase
	if out := c.ok("csr", "--config", cfg, "--email", "alice@example.com", "--key-type", "ecdsa-p256", "--out", c.path("alice.csr")); !strings.Contains(out, "Created keystore keystore in postgres://") {
		t.Errorf("csr with the stores in the database said %q, want a keystore made there", out)
	}
}

// cuttable forwards TCP connections to a server until cut: then it drops
// every connection and refuses new ones, as a database that went away;
// mend lets them through again.
type cuttable struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func forward(t *testing.T, target string) *cuttable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &cuttable{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); f.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.pipe(c)
		}
	}()
	return f
}

func (f *cuttable) pipe(c net.Conn) {
	up, err := net.Dial("tcp", f.target)
	f.mu.Lock()
	if err != nil || f.cut {
		f.mu.Unlock()
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	f.conns[c], f.conns[up] = struct{}{}, struct{}{}
	f.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (f *cuttable) setCut(cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = cut
	if cut {
		for c := range f.conns {
			c.Close()
		}
		clear(f.conns)
	}
}

// TestServeStoreDown: with the stores in PostgreSQL, a database that goes
// away makes /readyz fail, so a balancer drains the instance, and new
// submissions get a temporary failure rather than going out on what may
// be stale; when it comes back, both recover without a restart.
func TestServeStoreDown(t *testing.T) {
	srv := pgtest.Start(t)
	dir := t.TempDir()
	users := map[string]string{"alice@demo.test": "apw", "bob@demo.test": "bpw"}
	up, err := demo.StartUpstream(users, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	pki, err := demo.NewPKI([]string{"alice@demo.test", "bob@demo.test"})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.Schema(t)
	db := srv.Open(t, url, 0)
	ks, err := keystore.CreateDocs(db.Docs("keystore"), []byte(storePassphrase), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.OpenDocs(db.Docs("certcache"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Install(ks, cc); err != nil {
		t.Fatal(err)
	}

	link := forward(t, srv.Addr)
	viaLink := strings.Replace(url, srv.Addr, link.ln.Addr().String(), 1)
	pwFile := testpki.WriteFile(t, dir, "dbpassword", []byte(srv.Password))
	metrics := testutil.UnusedAddr(t)
	cfg := testpki.WriteFile(t, dir, "config.yaml", fmt.Appendf(nil, `smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
storage:
  postgres: {url: %q, password_file: %q, poll_interval: 200ms, timeout: 2s}
trust: {system_roots: false}
metrics: {listen: %q}
shutdown_timeout: 5s
`, up.SMTPAddr, up.IMAPAddr, viaLink, pwFile, metrics))

	var log testutil.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &log,
			getenv: func(k string) string {
				if k == passphraseEnv {
					return storePassphrase
				}
				return ""
			}}
		done <- run(ctx, []string{"serve", "--config", cfg}, e)
	}()
	smtpAddr := waitFor(t, &log, `msg="smimeproxy started" smtp=\[([0-9.:]+)\]`)[1]
	readyz := func(want int) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second) // the readiness check is cached for 5s
		for {
			code, body := get(t, "http://"+metrics+"/readyz")
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %q, want %d", code, body, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	readyz(http.StatusOK)
	msg := "From: alice@demo.test\r\nTo: bob@demo.test\r\nSubject: store down\r\n\r\nHello\r\n"
	if _, err := submit(smtpAddr, "alice@demo.test", "apw", "bob@demo.test", msg); err != nil {
		t.Fatalf("submit with the database up: %v", err)
	}

	link.setCut(true)
	if body := readyz(http.StatusServiceUnavailable); !strings.Contains(body, "store") {
		t.Errorf("/readyz with the database down says %q, want the store named", body)
	}
	_, err = submit(smtpAddr, "alice@demo.test", "apw", "bob@demo.test", msg)
	if se, ok := errors.AsType[*smtp.SMTPError](err); !ok || se.Code != 451 {
		t.Errorf("submit with the database down = %v, want 451", err)
	}

	link.setCut(false)
	readyz(http.StatusOK)
	if _, err := submit(smtpAddr, "alice@demo.test", "apw", "bob@demo.test", msg); err != nil {
		t.Errorf("submit after the database came back: %v", err)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("serve exited %d, want 0; log:\n%s", code, log.String())
	}
}
