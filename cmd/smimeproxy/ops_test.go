package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestOpsEndpoints(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	ready := &readiness{check: func(context.Context) error {
		if broken.Load() {
			return errors.New("imap upstream: connection refused")
		}
		return nil
	}}
	reg := newRegistry()
	reg.MustRegister(ready)
	o, err := startOps("127.0.0.1:0", reg, ready, false, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer o.shutdown(context.Background())
	base := "http://" + o.ln.Addr().String()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz while broken = %d %q, want 503 with the reason", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "smimeproxy_ready 0") || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Errorf("/metrics lacks smimeproxy_ready 0 or the Go and process collectors:\n%s", body)
	}
	broken.Store(false)
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz when fixed = %d, want 200", code)
	}

	c := newCLI(t)
	if code, out, _ := c.run("health", "--addr", o.ln.Addr().String(), "--ready"); code != exitOK || out != "ready\n" {
		t.Errorf("health --ready = exit %d %q, want 0 and ready", code, out)
	}
	broken.Store(true)
	ready.maxAge = 0
	if code, _, errOut := c.run("health", "--addr", o.ln.Addr().String(), "--ready"); code != exitFailure || !strings.Contains(errOut, "connection refused") {
		t.Errorf("health --ready when broken = exit %d %q, want 1 with the reason", code, errOut)
	}
	if code, _, _ := c.run("health", "--addr", "127.0.0.1:1"); code != exitFailure {
		t.Errorf("health with nothing listening = exit %d, want 1", code)
	}
}

// TestExpiry reports each address by its newest certificate: a renewed key's
// old certificate neither shows nor warns.
func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	ks, err := keystore.Create(dir+"/keystore", []byte("pw"), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "Expiry CA")
	now := time.Now()
	issue := func(email string, notAfter time.Time) {
		der, _, err := ks.NewCSR(keystore.CSRRequest{Email: email, KeyType: keystore.ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		id := ca.Issue(t, email, &testpki.Options{PublicKey: csr.PublicKey, NotBefore: now.AddDate(-1, 0, 0), NotAfter: notAfter})
		if _, err := ks.ImportCertificates([]*x509.Certificate{id.Cert}); err != nil {
			t.Fatal(err)
		}
	}
	issue("soon@example.com", now.Add(10*24*time.Hour))
	issue("renewed@example.com", now.Add(-24*time.Hour))
	issue("renewed@example.com", now.AddDate(1, 0, 0))
	cc, err := certcache.Open(dir+"/certcache", &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Add(ca.Issue(t, "peer@example.org", &testpki.Options{NotAfter: now.Add(-time.Hour)}).Cert, nil); err != nil {
		t.Fatal(err)
	}

	x := &expiry{ks: ks, cc: cc, now: func() time.Time { return now }}
	reg := newRegistry()
	reg.MustRegister(x)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "smimeproxy_cert_expiry_seconds" {
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["kind"]+" "+labels["email"]] = m.GetGauge().GetValue()
		}
	}
	days := func(s float64) int { return int(math.Round(s / 86400)) }
	if len(got) != 3 || days(got["identity soon@example.com"]) != 10 || days(got["identity renewed@example.com"]) < 360 || got["cached peer@example.org"] >= 0 {
		t.Errorf("smimeproxy_cert_expiry_seconds = %v, want soon 10 days, renewed about a year (not the expired old one), peer negative", got)
	}

	var log bytes.Buffer
	x.warn(slog.New(slog.NewTextHandler(&log, nil)))
	if !strings.Contains(log.String(), "email=soon@example.com") || strings.Contains(log.String(), "renewed@example.com") {
		t.Errorf("warn logged:\n%s\nwant soon@example.com only", log.String())
	}
}

func TestCheckConfig(t *testing.T) {
	c := newCLI(t)
	c.ok("csr", c.keystore(), "--email", "a@example.com", "--key-type", "ecdsa-p256", "--out", c.path("a.csr"))
	cfg := testpki.WriteFile(t, c.dir, "config.yaml", []byte("keystore:\n  dir: state/keystore\ntrust:\n  system_roots: false\n"))
	out := c.ok("check-config", "--config", cfg)
	for _, want := range []string{"valid", "1 key(s), unlocked", "0 trust anchor(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config said %q, want %q", out, want)
		}
	}
	c.vars["SMIMEPROXY_PASSPHRASE"] = "wrong"
	if code, _, errOut := c.run("check-config", "--config", cfg); code != exitFailure || !strings.Contains(errOut, "wrong passphrase") {
		t.Errorf("check-config with a wrong passphrase: exit %d, %q", code, errOut)
	}
	c.vars["SMIMEPROXY_PASSPHRASE"] = "correct horse battery staple"

	// A key file changed without the passphrase: named, and exit 1.
	files, err := filepath.Glob(c.path("state/keystore/keys/*.json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("key files: %v, %v", files, err)
	}
	data := must(os.ReadFile(files[0]))
	if err := os.WriteFile(files[0], bytes.Replace(data, []byte("a@example.com"), []byte("b@example.com"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := c.run("check-config", "--config", cfg)
	if code != exitFailure || !strings.Contains(out, "is refused") || !strings.Contains(out, files[0]) || !strings.Contains(errOut, "1 key(s)") {
		t.Errorf("check-config with a changed key file: exit %d\nstdout %s\nstderr %s\nwant 1, naming the file", code, out, errOut)
	}
	code, out, errOut = c.run("identities", "--config", cfg)
	if code != exitOK || !strings.Contains(out, "broken") || !strings.Contains(errOut, files[0]) {
		t.Errorf("identities with a changed key file: exit %d\nstdout %s\nstderr %s\nwant the key broken, naming the file", code, out, errOut)
	}
	delete(c.vars, "SMIMEPROXY_PASSPHRASE")
	if code, out, errOut = c.run("identities", "--config", cfg); code != exitOK || strings.Contains(out, "broken") || !strings.Contains(errOut, "not checked") {
		t.Errorf("identities without a passphrase: exit %d\nstdout %s\nstderr %s\nwant the key listed, unchecked", code, out, errOut)
	}
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}

	// A keystore others may read is refused, with the fix.
	if err := os.Chmod(c.path("state/keystore"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := c.run("identities", "--config", cfg); code != exitFailure || !strings.Contains(errOut, "chmod -R go-rwx "+c.path("state/keystore")) {
		t.Errorf("identities of a keystore open to others: exit %d, %q; want 1 and the chmod to run", code, errOut)
	}
	if err := os.Chmod(c.path("state/keystore"), 0o700); err != nil {
		t.Fatal(err)
	}

	bad := testpki.WriteFile(t, c.dir, "bad.yaml", []byte("smtp:\n  listen:\n    - {addr: \"0.0.0.0:25\", tls: none}\n"))
	if code, _, errOut := c.run("check-config", "--config", bad); code != exitFailure || !strings.Contains(errOut, "insecure_plaintext") {
		t.Errorf("check-config of a plaintext listener on the network: exit %d, %q", code, errOut)
	}
}

// TestOpsPprof: the profiler is served only when metrics.pprof asks for it.
func TestOpsPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		ready := &readiness{check: func(context.Context) error { return nil }}
		o, err := startOps("127.0.0.1:0", newRegistry(), ready, on, testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + o.ln.Addr().String()
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/symbol"} {
			code, body := get(t, base+path)
			switch {
			case on && code != 200:
				t.Errorf("with pprof on, %s = %d, want 200", path, code)
			case !on && code != 404:
				t.Errorf("with pprof off, %s = %d %q, want 404", path, code, body)
			}
		}
		if on {
			if _, body := get(t, base+"/debug/pprof/heap?debug=1"); !strings.Contains(body, "heap profile") {
				t.Errorf("with pprof on, /debug/pprof/heap?debug=1 is not a heap profile:\n%.200s", body)
			}
		}
		if code, _ := get(t, base+"/healthz"); code != 200 {
			t.Errorf("pprof %v: /healthz = %d, want 200", on, code)
		}
		o.shutdown(context.Background())
	}
}
