// Package deploy_test checks the deployment files: the systemd unit with
// systemd-analyze, the alert rules with promtool, and that the container
// files agree with each other and with the configuration they ship.
package deploy_test

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"smimeproxy/config"
	"smimeproxy/internal/testutil"
	"smimeproxy/proxy"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	bin := testutil.NeedTool(t, name)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var static struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if static.dir != "" {
		os.RemoveAll(static.dir)
	}
	os.Exit(code)
}

// buildStatic builds the binary the way the Containerfile does, once.
func buildStatic(t *testing.T) string {
	t.Helper()
	static.once.Do(func() {
		if static.dir, static.err = os.MkdirTemp("", "smimeproxy-deploy-"); static.err != nil {
			return
		}
		static.bin = filepath.Join(static.dir, "smimeproxy")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", static.bin, "./cmd/smimeproxy")
		cmd.Dir = testutil.ModuleRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			static.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if static.err != nil {
		t.Fatal(static.err)
	}
	return static.bin
}

func TestSystemdUnit(t *testing.T) {
	testutil.NeedTool(t, "systemd-analyze")
	unit, err := os.ReadFile("systemd/smimeproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^LimitCORE=0$`).Match(unit) {
		t.Error("the unit does not set LimitCORE=0: a core dump would hold private keys")
	}
	bin := buildStatic(t)
	// verify wants the binary where ExecStart says.
	local := strings.Replace(string(unit), "/usr/local/bin/smimeproxy", bin, 1)
	path := filepath.Join(t.TempDir(), "smimeproxy.service")
	if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "systemd-analyze", "verify", path); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify complains:\n%s", out)
	}
	// --threshold is in tenths: fail above an exposure of 2.5.
	out := run(t, "systemd-analyze", "security", "--offline=true", "--threshold=25", "--no-pager", path)
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
}

// servedByCommand are the metrics cmd/smimeproxy adds to proxy.NewMetrics'.
var servedByCommand = []string{"smimeproxy_ready", "smimeproxy_cert_expiry_seconds"}

// TestMetricNames checks that every smimeproxy metric the alert rules and the
// dashboard use exists.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics(reg)
	// Vectors show in Gather only once they have a child.
	m.SessionsOpen.WithLabelValues("smtp")
	m.Sessions.WithLabelValues("smtp")
	m.AuthFailures.WithLabelValues("smtp")
	m.UpstreamErrors.WithLabelValues("smtp", "connect")
	m.UpstreamSeconds.WithLabelValues("smtp", "connect")
	m.Messages.WithLabelValues("sign", "ok")
	m.TransformSeconds.WithLabelValues("sign")
	m.IMAPCommands.WithLabelValues("FETCH", "ok")
	m.Opened.WithLabelValues("decrypt", "ok")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range families {
		known[f.GetName()] = true
	}
	for _, n := range servedByCommand {
		known[n] = true
	}
	used := regexp.MustCompile(`smimeproxy_[a-z_]+`)
	for _, file := range []string{"prometheus/alerts.yaml", "grafana/smimeproxy.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range used.FindAllString(string(data), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !known[base] {
				t.Errorf("%s uses %s, which smimeproxy does not export", file, name)
			}
		}
	}
}

func TestAlertRules(t *testing.T) {
	run(t, "promtool", "check", "rules", "prometheus/alerts.yaml")
	run(t, "promtool", "test", "rules", "prometheus/alerts_test.yaml")
}

// TestContainer checks that the image's pieces fit: a static binary, a
// configuration that loads, and the ports the Containerfile exposes, the
// configuration listens on and compose publishes being the same.
func TestContainer(t *testing.T) {
	f, err := elf.Open(buildStatic(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the container binary is dynamically linked; distroless/static has no libc")
		}
	}

	data, err := os.ReadFile("container/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data)
	if err != nil {
		t.Fatalf("container/config.yaml: %v", err)
	}
	dir := t.TempDir()
	for _, p := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile, &c.SMTP.Upstream.CAFile, &c.IMAP.Upstream.CAFile, &c.Keystore.PassphraseFile} {
		*p = filepath.Join(dir, filepath.Base(*p))
		if err := os.WriteFile(*p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("container/config.yaml does not validate: %v", err)
	}
	var listening []string
	for _, l := range append(append([]config.Listener{}, c.SMTP.Listen...), c.IMAP.Listen...) {
		listening = append(listening, l.Addr[strings.LastIndexByte(l.Addr, ':')+1:])
	}
	listening = append(listening, c.Metrics.Listen[strings.LastIndexByte(c.Metrics.Listen, ':')+1:])
	slices.Sort(listening)

	containerfile, err := os.ReadFile("container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	expose := regexp.MustCompile(`(?m)^EXPOSE (.+)$`).FindSubmatch(containerfile)
	if expose == nil {
		t.Fatal("the Containerfile exposes no port")
	}
	exposed := strings.Fields(string(expose[1]))
	slices.Sort(exposed)
	if !slices.Equal(exposed, listening) {
		t.Errorf("the Containerfile exposes %v, the container's configuration listens on %v", exposed, listening)
	}

	var compose struct {
		Services map[string]struct {
			Build struct{ Context, Dockerfile string }
			Ports []string
		}
	}
	data, err = os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("compose/compose.yaml: %v", err)
	}
	svc, ok := compose.Services["smimeproxy"]
	if !ok {
		t.Fatal("compose.yaml has no smimeproxy service")
	}
	if _, err := os.Stat(filepath.Join("compose", svc.Build.Context, svc.Build.Dockerfile)); err != nil {
		t.Errorf("compose.yaml builds from a Containerfile that is not there: %v", err)
	}
	var published []string
	for _, p := range svc.Ports {
		published = append(published, p[strings.LastIndexByte(p, ':')+1:])
	}
	slices.Sort(published)
	if !slices.Equal(published, listening) {
		t.Errorf("compose.yaml publishes container ports %v, the configuration listens on %v", published, listening)
	}
}
