package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/internal/demo"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

const crashPassphrase = "crash test passphrase 7f3c"

// TestNoCoreDump runs the real binary's serve, with its keys unlocked,
// GOTRACEBACK=crash and no core size limit, as an unprivileged user (so
// that /proc shows whether it is dumpable: the kernel makes the files in a
// non-dumpable process's /proc/PID root's). It must be non-dumpable with a core
// limit of 0 while it serves, and a SIGQUIT, which GOTRACEBACK=crash turns
// into an abort, must leave no core; what it prints must hold no
// passphrase.
func TestNoCoreDump(t *testing.T) {
	if os.Getuid() != 0 {
		testutil.Absent(t, "this test runs the proxy as the user nobody, which needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		testutil.Absent(t, "no user nobody: "+err.Error())
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	work := t.TempDir()
	// nobody must reach work, run the binary and own what serve reads.
	if err := os.Chmod(filepath.Dir(work), 0o711); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "smimeproxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	asNobody := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.Dir = work
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}

	// Control: a process started the same way does dump here, and /proc
	// shows it as its own.
	control := asNobody(exec.Command("/bin/sh", "-c", "ulimit -c unlimited && exec sleep 60"))
	if err := os.Chown(work, uid, gid); err != nil { // where the core goes
		t.Fatal(err)
	}
	if err := control.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let sh exec sleep
	controlOwner := procOwner(t, control.Process.Pid)
	control.Process.Signal(syscall.SIGQUIT)
	control.Wait()
	controlDumped := control.ProcessState.Sys().(syscall.WaitStatus).CoreDump()
	removeCores(t, work)
	if controlOwner != uid {
		t.Fatalf("/proc/%d/status of a dumpable process belongs to uid %d, want %d: this test cannot tell", control.Process.Pid, controlOwner, uid)
	}

	up, err := demo.StartUpstream(map[string]string{"alice@demo.test": "apw"}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	pki, err := demo.NewPKI([]string{"alice@demo.test"})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.Create(filepath.Join(work, "state", "keystore"), []byte(crashPassphrase), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.Open(filepath.Join(work, "state", "certcache"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Install(ks, cc); err != nil {
		t.Fatal(err)
	}
	metrics := testutil.UnusedAddr(t)
	cfg := fmt.Sprintf(`smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
keystore:
  dir: state/keystore
trust:
  system_roots: false
metrics:
  listen: %q
`, up.SMTPAddr, up.IMAPAddr, metrics)
	if err := os.WriteFile(filepath.Join(work, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(work, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}

	cmd := asNobody(exec.Command("/bin/sh", "-c", `ulimit -c unlimited && exec "$0" "$@"`, bin, "serve", "--config", "config.yaml"))
	cmd.Env = append(os.Environ(), "GOTRACEBACK=crash", passphraseEnv+"="+crashPassphrase)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var printed strings.Builder
	started := make(chan bool, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(io.TeeReader(stderr, &printed))
		for sc.Scan() {
			if strings.Contains(sc.Text(), "smimeproxy started") {
				started <- true
			}
		}
		started <- false
	}()
	select {
	case ok := <-started:
		if !ok {
			<-copied
			t.Fatalf("serve stopped before it started:\n%s", printed.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	pid := cmd.Process.Pid
	if owner := procOwner(t, pid); owner != 0 {
		t.Errorf("/proc/%d/status belongs to uid %d while serve runs: the process is dumpable", pid, owner)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Max core file size\s+0\s+0\s`).Match(limits) {
		t.Errorf("serve's core size limit is not 0, soft and hard:\n%s", limits)
	}
	// The metrics still read /proc/self, which a non-dumpable process may.
	if code, body := get(t, "http://"+metrics+"/metrics"); code != 200 || !strings.Contains(body, "process_open_fds") {
		t.Errorf("/metrics of a non-dumpable process = %d, lacks process_open_fds", code)
	}

	cmd.Process.Signal(syscall.SIGQUIT)
	cmd.Wait()
	<-copied
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("serve after SIGQUIT with GOTRACEBACK=crash: %v, want killed by SIGABRT", cmd.ProcessState)
	}
	if !strings.Contains(printed.String(), "goroutine ") {
		t.Errorf("serve printed no traceback:\n%s", printed.String())
	}
	if strings.Contains(printed.String(), crashPassphrase) {
		t.Error("the crash printed the keystore passphrase")
	}
	if ws.CoreDump() || len(removeCores(t, work)) > 0 {
		t.Error("serve left a core dump")
	}
	if !controlDumped {
		t.Logf("note: a dumpable process left no core here either (core_pattern %q): the absence of serve's core shows little; its /proc entries and limits do", corePattern())
	}
}

// procOwner is the owner of /proc/PID/status, which the kernel makes root
// for a non-dumpable process.
func procOwner(t *testing.T, pid int) int {
	t.Helper()
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// removeCores removes the core files in dir and returns their names.
func removeCores(t *testing.T, dir string) []string {
	t.Helper()
	cores, err := filepath.Glob(filepath.Join(dir, "core*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cores {
		os.Remove(c)
	}
	return cores
}

func corePattern() string {
	b, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	return strings.TrimSpace(string(b))
}
