package keystore_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
	"smimeproxy/storage"
)

// fastKDF keeps tests quick; production uses keystore.DefaultKDF.
var fastKDF = &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

var passphrase = []byte("correct horse battery staple")

// fastBackup keeps tests that make many backups quick; TestBackupParameters
// checks the defaults.
var fastBackup = &keystore.BackupOptions{Iterations: keystore.MinBackupIterations}

// TestStores runs every test that depends on where the keystore is kept
// against each kind of storage: a directory and a PostgreSQL database.
func TestStores(t *testing.T) {
	storetest.Run(t, []storetest.Test{
		{Name: "CreateOpenUnlock", Run: testCreateOpenUnlock},
		{Name: "CreateRefusesOrphanKeys", Run: testCreateRefusesOrphanKeys},
		{Name: "ChangePassphrase", Run: testChangePassphrase},
		{Name: "DamagedFilesAreErrors", Run: testDamagedFilesAreErrors},
		{Name: "ConcurrentSignerAndReload", Run: testConcurrentSignerAndReload},
		{Name: "RecheckIntervalNegativeNeedsReload", Run: testRecheckIntervalNegativeNeedsReload},
		{Name: "Generation", Run: testGeneration},
		{Name: "NewCSRKeyTypes", Run: testNewCSRKeyTypes},
		{Name: "NewCSRRejects", Run: testNewCSRRejects},
		{Name: "ImportCertificatesSorts", Run: testImportCertificatesSorts},
		{Name: "IntermediateArrivesLater", Run: testIntermediateArrivesLater},
		{Name: "RenewalJoinsEntry", Run: testRenewalJoinsEntry},
		{Name: "NewKeyKeepsOldOne", Run: testNewKeyKeepsOldOne},
		{Name: "SeparateSigningAndEncryptionKeys", Run: testSeparateSigningAndEncryptionKeys},
		{Name: "LookupErrors", Run: testLookupErrors},
		{Name: "LookupNormalizesNames", Run: testLookupNormalizesNames},
		{Name: "StatusNotYetValid", Run: testStatusNotYetValid},
		{Name: "EmailsIndexedFromCertificates", Run: testEmailsIndexedFromCertificates},
		{Name: "RSAKeyUsage", Run: testRSAKeyUsage},
		{Name: "ImportPKCS12", Run: testImportPKCS12},
		{Name: "ImportPKCS12Rejects", Run: testImportPKCS12Rejects},
		{Name: "PKCS12JoinsCSRKey", Run: testPKCS12JoinsCSRKey},
		{Name: "BackupRoundTrip", Run: testBackupRoundTrip},
		{Name: "BackupExpiredKey", Run: testBackupExpiredKey},
	})
}

// dirKind is for the tests of the directory store alone, and for those
// whose subject (an encoding checked by another program) does not depend
// on the storage.
var dirKind = storetest.Kinds[0]

// newStore makes an unlocked keystore of kind k.
func newStore(t *testing.T, k storetest.Kind) (*keystore.Store, *storetest.Store) {
	t.Helper()
	st := k.New(t, "keystore", keystore.Layout)
	s, err := keystore.CreateDocs(st, passphrase, &keystore.Options{KDF: fastKDF, RecheckInterval: -1})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return s, st
}

// newCSR makes a key for email and returns its CSR, parsed.
func newCSR(t *testing.T, s *keystore.Store, email string, kt keystore.KeyType) (*x509.CertificateRequest, *keystore.IdentityInfo) {
	t.Helper()
	der, info, err := s.NewCSR(keystore.CSRRequest{Email: email, KeyType: kt})
	if err != nil {
		t.Fatalf("NewCSR(%s): %v", email, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, info
}

// issue has ca certify the CSR's key.
func issue(t *testing.T, ca *testpki.CA, email string, csr *x509.CertificateRequest, opts testpki.Options) *x509.Certificate {
	t.Helper()
	opts.PublicKey = csr.PublicKey
	return ca.Issue(t, email, &opts).Cert
}

// snapshot records every document of a store: name, stamp and content hash.
func snapshot(t *testing.T, docs storage.Docs) map[string]string {
	t.Helper()
	snap, err := docs.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, d := range snap.Docs {
		out[name] = fmt.Sprintf("%s %x", d.Stamp, sha256.Sum256(d.Data))
	}
	return out
}

// keysOnly keeps the keys/ part of a snapshot.
func keysOnly(snap map[string]string) map[string]string {
	maps.DeleteFunc(snap, func(name, _ string) bool { return !strings.HasPrefix(name, "keys/") })
	return snap
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed %s: %q -> %q", what, k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s added %s", what, k)
		}
	}
}

// put writes a document as someone without the passphrase would.
func put(t *testing.T, docs storage.Docs, name string, data []byte) {
	t.Helper()
	if err := docs.Update(context.Background(), func(tx storage.Tx) error { return tx.Put(name, data) }); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, docs storage.Docs, name string) []byte {
	t.Helper()
	var data []byte
	err := docs.Update(context.Background(), func(tx storage.Tx) (err error) {
		data, err = tx.Get(name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func testCreateOpenUnlock(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	if s.Locked() {
		t.Fatal("a new keystore is locked, want unlocked")
	}
	if _, err := keystore.CreateDocs(st.Again(), passphrase, &keystore.Options{KDF: fastKDF}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("Create over an existing keystore: %v, want ErrExists", err)
	}
	empty := k.New(t, "keystore", keystore.Layout)
	if _, err := keystore.CreateDocs(empty, nil, nil); !errors.Is(err, keystore.ErrEmptyPassphrase) {
		t.Fatalf("Create with an empty passphrase: %v, want ErrEmptyPassphrase", err)
	}
	if _, err := keystore.OpenDocs(empty, nil); !errors.Is(err, keystore.ErrNoKeystore) {
		t.Fatalf("Open(empty store): %v, want ErrNoKeystore", err)
	}
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)

	o, err := keystore.OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Locked() {
		t.Fatal("Open returned an unlocked store")
	}
	if got := o.Emails(); !slices.Equal(got, []string{"alice@example.com"}) {
		t.Errorf("Emails() while locked = %v, want [alice@example.com]", got)
	}
	if _, _, err := o.NewCSR(keystore.CSRRequest{Email: "bob@example.com", KeyType: keystore.ECDSAP256}); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("NewCSR while locked: %v, want ErrLocked", err)
	}

	before := snapshot(t, st)
	for _, wrong := range [][]byte{[]byte("wrong"), nil, append(passphrase, ' ')} {
		if err := o.Unlock(wrong); !errors.Is(err, keystore.ErrWrongPassphrase) {
			t.Errorf("Unlock(%q) = %v, want ErrWrongPassphrase", wrong, err)
		}
	}
	if err := o.ChangePassphrase([]byte("wrong"), []byte("new")); !errors.Is(err, keystore.ErrWrongPassphrase) {
		t.Errorf("ChangePassphrase(wrong old) = %v, want ErrWrongPassphrase", err)
	}
	sameSnapshot(t, "a wrong passphrase", before, snapshot(t, st))
	if !o.Locked() {
		t.Fatal("store unlocked by a wrong passphrase")
	}
	if err := o.Unlock(passphrase); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if o.Locked() {
		t.Fatal("Locked() after Unlock = true")
	}
	o.Lock()
	if !o.Locked() {
		t.Fatal("Locked() after Lock = false")
	}
}

func testCreateRefusesOrphanKeys(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if err := st.Update(context.Background(), func(tx storage.Tx) error { return tx.Delete("keystore.json") }); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.CreateDocs(st, passphrase, &keystore.Options{KDF: fastKDF}); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("Create over keys without keystore.json: %v, want ErrExists", err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keystore")
	s, err := keystore.Create(dir, passphrase, &keystore.Options{KDF: fastKDF, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if err := s.ChangePassphrase(passphrase, []byte("another")); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700 | fs.ModeDir
		}
		if fi.Mode() != want {
			t.Errorf("mode of %s = %v, want %v", p, fi.Mode(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("walked %d paths, want at least dir, keys/, keystore.json and a key", n)
	}
}

func testChangePassphrase(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, "alice@example.com", csr, testpki.Options{})}); err != nil {
		t.Fatal(err)
	}
	keysBefore := keysOnly(snapshot(t, st))
	newPass := []byte("a brand new passphrase")
	if err := s.ChangePassphrase(passphrase, nil); !errors.Is(err, keystore.ErrEmptyPassphrase) {
		t.Fatalf("ChangePassphrase to empty: %v, want ErrEmptyPassphrase", err)
	}
	if err := s.ChangePassphrase(passphrase, newPass); err != nil {
		t.Fatalf("ChangePassphrase: %v", err)
	}
	sameSnapshot(t, "ChangePassphrase (keys/)", keysBefore, keysOnly(snapshot(t, st)))

	o, err := keystore.OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Unlock(passphrase); !errors.Is(err, keystore.ErrWrongPassphrase) {
		t.Fatalf("Unlock(old passphrase) = %v, want ErrWrongPassphrase", err)
	}
	if err := o.Unlock(newPass); err != nil {
		t.Fatalf("Unlock(new passphrase): %v", err)
	}
	if _, err := o.Signer("alice@example.com", time.Now()); err != nil {
		t.Fatalf("Signer after a passphrase change: %v", err)
	}
	// The store that changed it keeps working.
	if _, err := s.Signer("alice@example.com", time.Now()); err != nil {
		t.Fatalf("Signer in the changing store: %v", err)
	}
}

// TestLeftoverTempFiles is what a crash in the middle of a write leaves.
func TestLeftoverTempFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keystore")
	s, err := keystore.Create(dir, passphrase, &keystore.Options{KDF: fastKDF, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	junk := map[string]string{
		".keystore.json.tmp-123456":          `{"version":1,"store_id":"torn`,
		"keys/.0123456789abcdef.json.tmp-99": "torn",
	}
	for name, data := range junk {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	fresh := filepath.Join(dir, ".keystore.json.tmp-fresh") // another process may be writing it now
	if err := os.WriteFile(fresh, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := keystore.Open(dir, nil)
	if err != nil {
		t.Fatalf("Open with leftover temporary files: %v", err)
	}
	if err := o.Unlock(passphrase); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if got := len(o.Identities()); got != 1 {
		t.Errorf("Identities() = %d entries, want 1", got)
	}
	for name := range junk {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s still there after Open (err %v)", name, err)
		}
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("Open removed a fresh temporary file: %v", err)
	}
}

func testDamagedFilesAreErrors(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	_, info := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	name := "keys/" + info.KeyID + ".json"
	data := get(t, st, name)
	put(t, st, name, data[:len(data)/2])
	if _, err := keystore.OpenDocs(st.Again(), nil); err == nil || !strings.Contains(err.Error(), st.Where(name)) {
		t.Fatalf("Open with a torn key: %v, want an error naming %s", err, st.Where(name))
	}
	// A running store keeps its last good state and reports the damage on Reload.
	if err := s.Reload(); err == nil {
		t.Fatal("Reload with a torn key succeeded")
	}
	if got := s.Emails(); len(got) != 1 {
		t.Errorf("Emails() after a failed Reload = %v, want the last good state", got)
	}
}

func TestParseKeyType(t *testing.T) {
	for _, kt := range keystore.KeyTypes() {
		got, err := keystore.ParseKeyType(strings.ToUpper(string(kt)))
		if err != nil || got != kt {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q", strings.ToUpper(string(kt)), got, err, kt)
		}
	}
	_, err := keystore.ParseKeyType("rsa1024")
	want := `invalid key type "rsa1024"; options are rsa2048, rsa3072, rsa4096, ecdsa-p256, ecdsa-p384`
	if err == nil || err.Error() != want {
		t.Fatalf("ParseKeyType(rsa1024) error = %v, want %q", err, want)
	}
	if _, ok := errors.AsType[*keystore.KeyTypeError](err); !ok {
		t.Errorf("ParseKeyType error is %T, want *KeyTypeError", err)
	}
}

// testConcurrentSignerAndReload: the CLI (or another instance) writes while
// a daemon's lookups run, and the daemon follows without a restart.
func testConcurrentSignerAndReload(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, "alice@example.com", csr, testpki.Options{})}); err != nil {
		t.Fatal(err)
	}
	// The daemon's view checks for changes on every call.
	daemon, err := keystore.OpenDocs(st.Again(), &keystore.Options{RecheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Unlock(passphrase); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sg, err := daemon.Signer("alice@example.com", time.Now())
				if err != nil {
					errs <- err
					return
				}
				if _, err := daemon.DecryptionKeys("alice@example.com"); err != nil {
					errs <- err
					return
				}
				if sg.Key == nil {
					errs <- errors.New("Signer returned no key")
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := daemon.Reload(); err != nil {
				errs <- err
				return
			}
		}
	})
	// Meanwhile "the CLI" adds keys for others and renews alice's certificate.
	for i := range 5 {
		newCSR(t, s, fmt.Sprintf("user%d@example.com", i), keystore.ECDSAP256)
	}
	renewed := issue(t, ca, "alice@example.com", csr, testpki.Options{NotAfter: time.Now().Add(2 * 365 * 24 * time.Hour)})
	if _, err := s.ImportCertificates([]*x509.Certificate{renewed}); err != nil {
		t.Fatal(err)
	}
	// The daemon may see the new addresses before the renewal, written last.
	renewedSeen := func() bool {
		sg, err := daemon.Signer("alice@example.com", time.Now())
		return err == nil && sg.Cert.Equal(renewed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for (len(daemon.Emails()) != 6 || !renewedSeen()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(daemon.Emails()); got != 6 {
		t.Fatalf("the daemon sees %d addresses, want 6: it did not notice the CLI's writes", got)
	}
	sg, err := daemon.Signer("alice@example.com", time.Now())
	if err != nil || !sg.Cert.Equal(renewed) {
		t.Fatalf("daemon Signer after renewal = %v, %v; want the renewed certificate", sg, err)
	}
}

func testRecheckIntervalNegativeNeedsReload(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	daemon, err := keystore.OpenDocs(st.Again(), &keystore.Options{RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if got := daemon.Emails(); len(got) != 0 {
		t.Fatalf("Emails() = %v before Reload with rechecks off, want none", got)
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := daemon.Emails(); len(got) != 1 {
		t.Fatalf("Emails() = %v after Reload, want one", got)
	}
}

// testGeneration: the generation moves when another process's write is
// picked up, and when the keystore is locked or unlocked, and stays put
// otherwise, so that caches of what was opened with the keys can follow.
func testGeneration(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	daemon, err := keystore.OpenDocs(st.Again(), &keystore.Options{RecheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	g0 := daemon.Generation()
	if again := daemon.Generation(); again != g0 {
		t.Fatalf("Generation() moved from %d to %d with nothing changed", g0, again)
	}
	newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	deadline := time.Now().Add(10 * time.Second)
	for daemon.Generation() == g0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	g1 := daemon.Generation()
	if g1 == g0 || len(daemon.Emails()) != 1 {
		t.Fatalf("after another process wrote a key: generation %d (was %d), %d addresses; want it moved and one address", g1, g0, len(daemon.Emails()))
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := daemon.Generation(); got != g1 {
		t.Errorf("Generation() after a Reload that found nothing new = %d, want %d", got, g1)
	}
	if err := daemon.Unlock(passphrase); err != nil {
		t.Fatal(err)
	}
	if got := daemon.Generation(); got == g1 {
		t.Error("Generation() did not move on Unlock")
	}
}
