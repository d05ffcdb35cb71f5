package proxy

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
)

type downKeys struct{ *keystore.Store }

func (downKeys) Available() error { return errors.New("postgres: unreachable") }

// TestStoresHooks: StoresGeneration moves when another process changes a
// store the proxy uses (here the CLI trusting a root), and StoresAvailable
// says why a store cannot be reached.
func TestStoresHooks(t *testing.T) {
	dir := t.TempDir()
	ks, err := keystore.Create(filepath.Join(dir, "keystore"), []byte("pw"), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.Open(filepath.Join(dir, "certcache"), &certcache.Options{NoSystemRoots: true, RecheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{Keys: ks, Certs: cc}
	if err := o.StoresAvailable(); err != nil {
		t.Errorf("StoresAvailable() with directories = %v, want nil", err)
	}
	g0 := o.StoresGeneration()
	if g := o.StoresGeneration(); g != g0 {
		t.Fatalf("StoresGeneration() moved from %d to %d with nothing changed", g0, g)
	}
	cli, err := certcache.Open(filepath.Join(dir, "certcache"), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Trust(testpki.NewCA(t, "Hook Root").Cert); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for o.StoresGeneration() == g0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if o.StoresGeneration() == g0 {
		t.Error("StoresGeneration() did not move when the CLI trusted a root")
	}
	o.Keys = downKeys{ks}
	if err := o.StoresAvailable(); err == nil {
		t.Error("StoresAvailable() with the keystore's database down = nil")
	}
}
