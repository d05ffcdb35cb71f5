package keystore

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/storage"
)

var testKDF = &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// TestBinding runs the tests of the binding of each key to the data key
// against each kind of storage: whoever can write the documents, in a
// directory or in the database, must not move a key to another address.
func TestBinding(t *testing.T) {
	storetest.Run(t, []storetest.Test{
		{Name: "Fixture", Run: testFixture},
		{Name: "Upgrade", Run: testUpgrade},
		{Name: "SwapAttack", Run: testSwapAttack},
		{Name: "RunningStoreRefusesTamperedFile", Run: testRunningStoreRefusesTamperedFile},
		{Name: "ImportRepairsBrokenKey", Run: testImportRepairsBrokenKey},
		{Name: "ImportCertificatesNeedsUnlock", Run: testImportCertificatesNeedsUnlock},
		{Name: "KeyDoesNotOpen", Run: testKeyDoesNotOpen},
	})
}

// readJSON and writeJSON edit a keystore document as someone without the
// passphrase would: field by field.
func readJSON(t *testing.T, docs storage.Docs, name string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(getDoc(t, docs, name), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeJSON(t *testing.T, docs storage.Docs, name string, m map[string]any) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	putDoc(t, docs, name, data)
}

func getDoc(t *testing.T, docs storage.Docs, name string) []byte {
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

func putDoc(t *testing.T, docs storage.Docs, name string, data []byte) {
	t.Helper()
	if err := docs.Update(context.Background(), func(tx storage.Tx) error { return tx.Put(name, data) }); err != nil {
		t.Fatal(err)
	}
}

// readAll returns every document with its contents and stamp.
func readAll(t *testing.T, docs storage.Docs) map[string]string {
	t.Helper()
	snap, err := docs.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, d := range snap.Docs {
		out[name] = d.Stamp + "\n" + string(d.Data)
	}
	return out
}

// fixtureStore copies the keystore in testdata/name into a new store of kind k.
func fixtureStore(t *testing.T, k storetest.Kind, name string) *storetest.Store {
	t.Helper()
	st := k.New(t, "keystore", Layout)
	if _, err := storage.Copy(context.Background(), st, storage.OpenDir(copyFixture(t, name), Layout)); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestUpgrade unlocks a keystore written before entries were bound to the
// data key: the first unlock binds every entry and rewrites keystore.json as
// version 2, the next ones change nothing, and from then on a file in the
// old format is refused.
func testUpgrade(t *testing.T, k storetest.Kind) {
	st := fixtureStore(t, k, "store-v1")
	entryFile := entryName("a1c0b43df5788f75fe2c2cb89d9cdfd9")
	v1Header := getDoc(t, st, headerFile)
	v1Entry := getDoc(t, st, entryFile)

	s, err := OpenDocs(st.Again(), &Options{RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if ids := s.Identities(); len(ids) != 1 || ids[0].Email != fixtureEmail || ids[0].Status != StatusActive {
		t.Fatalf("Identities() of the version 1 keystore, locked = %+v, want the fixture, active", ids)
	}
	before := readAll(t, st)
	if err := s.Unlock([]byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Unlock(wrong) = %v, want ErrWrongPassphrase", err)
	}
	if after := readAll(t, st); !maps.Equal(before, after) {
		t.Fatal("a wrong passphrase changed files")
	}

	if err := s.Unlock([]byte(fixturePassphrase)); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if !s.Upgraded() {
		t.Error("Upgraded() = false after the first unlock of a version 1 keystore")
	}
	if h := readJSON(t, st, headerFile); h["version"] != float64(formatVersion) {
		t.Errorf("keystore.json version after the upgrade = %v, want %d", h["version"], formatVersion)
	}
	if e := readJSON(t, st, entryFile); e["version"] != float64(formatVersion) || e["mac"] == nil {
		t.Errorf("entry after the upgrade: version %v, mac %v; want version %d with a MAC", e["version"], e["mac"], formatVersion)
	}
	if _, err := s.Signer(fixtureEmail, time.Now()); err != nil {
		t.Errorf("Signer after the upgrade: %v", err)
	}
	if kes, err := s.Check(); err != nil || len(kes) != 0 {
		t.Errorf("Check after the upgrade = %v, %v; want no problem", kes, err)
	}

	upgraded := readAll(t, st)
	v2Entry := getDoc(t, st, entryFile)
	again, err := OpenDocs(st.Again(), &Options{RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Unlock([]byte(fixturePassphrase)); err != nil || again.Upgraded() {
		t.Fatalf("second Unlock = %v, upgraded %v; want nil, false", err, again.Upgraded())
	}
	if after := readAll(t, st); !maps.Equal(upgraded, after) {
		t.Error("the second unlock rewrote files")
	}

	// The entry in its old form, without a MAC, is refused now.
	putDoc(t, st, entryFile, v1Entry)
	if err := again.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Signer(fixtureEmail, time.Now()); !errors.Is(err, ErrBrokenKey) || !strings.Contains(err.Error(), st.Where(entryFile)) {
		t.Errorf("Signer with the entry put back in version 1 = %v, want ErrBrokenKey naming %s", err, st.Where(entryFile))
	}
	if ids := again.Identities(); len(ids) != 1 || ids[0].Status != StatusBroken || !strings.Contains(ids[0].Problem, "no MAC") {
		t.Errorf("Identities() with the entry put back in version 1 = %+v, want it broken for lack of a MAC", ids)
	}

	// With keystore.json put back from before the upgrade too, a running
	// store still refuses an entry without a MAC.
	putDoc(t, st, headerFile, v1Header)
	moved := readJSON(t, st, entryFile)
	moved["emails"] = []any{"mallory@example.com"}
	writeJSON(t, st, entryFile, moved)
	if err := again.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := again.Emails(); len(got) != 0 {
		t.Errorf("Emails() of the running store with version 1 files put back = %v, want none", got)
	}

	// Unlocking that upgrades again, and says so: the one thing an upgrade
	// cannot tell from a first one.
	putDoc(t, st, entryFile, v2Entry)
	third, err := OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := third.Unlock([]byte(fixturePassphrase)); err != nil || !third.Upgraded() {
		t.Errorf("Unlock with keystore.json put back from before the upgrade = %v, upgraded %v; want nil, true", err, third.Upgraded())
	}

	// Only the version field turned back: the wrapped key says otherwise.
	h := readJSON(t, st, headerFile)
	h["version"] = float64(legacyVersion)
	writeJSON(t, st, headerFile, h)
	fourth, err := OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fourth.Unlock([]byte(fixturePassphrase)); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Errorf("Unlock with the version turned back = %v, want an error saying keystore.json was altered", err)
	}
}

// twoUsers makes a keystore of kind k with active keys for alice and bob,
// and returns it with the name of each one's key document.
func twoUsers(t *testing.T, k storetest.Kind) (s *Store, st *storetest.Store, alice, bob string) {
	t.Helper()
	st = k.New(t, "keystore", Layout)
	s, err := CreateDocs(st, []byte(fixturePassphrase), &Options{KDF: testKDF, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "CA")
	names := map[string]string{}
	for _, email := range []string{"alice@example.com", "bob@example.com"} {
		der, info, err := s.NewCSR(CSRRequest{Email: email, KeyType: ECDSAP256})
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ImportCertificates([]*x509.Certificate{ca.Issue(t, email, &testpki.Options{PublicKey: csr.PublicKey}).Cert}); err != nil {
			t.Fatal(err)
		}
		names[email] = entryName(info.KeyID)
	}
	return s, st, names["alice@example.com"], names["bob@example.com"]
}

// testSwapAttack is issue 9's attack: without the passphrase, swap the
// addresses of two key documents so that bob's login gets alice's key. Both
// are refused, each named, and neither key is used for anyone.
func testSwapAttack(t *testing.T, k storetest.Kind) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, docs storage.Docs, alice, bob string)
		broken []string // "alice", "bob"
	}{
		{"swap emails", func(t *testing.T, docs storage.Docs, alice, bob string) {
			a, b := readJSON(t, docs, alice), readJSON(t, docs, bob)
			a["emails"], b["emails"] = b["emails"], a["emails"]
			writeJSON(t, docs, alice, a)
			writeJSON(t, docs, bob, b)
		}, []string{"alice", "bob"}},
		{"add an address", func(t *testing.T, docs storage.Docs, alice, bob string) {
			a := readJSON(t, docs, alice)
			a["emails"] = append(a["emails"].([]any), "bob@example.com")
			writeJSON(t, docs, alice, a)
		}, []string{"alice"}},
		{"drop the MAC", func(t *testing.T, docs storage.Docs, alice, bob string) {
			a := readJSON(t, docs, alice)
			a["emails"] = []any{"bob@example.com"}
			a["version"] = float64(legacyVersion)
			delete(a, "mac")
			writeJSON(t, docs, alice, a)
		}, []string{"alice"}},
		{"another keystore's file", func(t *testing.T, docs storage.Docs, alice, bob string) {
			other, otherDocs, otherAlice, _ := twoUsers(t, k)
			other.Lock()
			// The other keystore's sealed key and MAC, under alice's id.
			o := readJSON(t, otherDocs, otherAlice)
			a := readJSON(t, docs, alice)
			a["private_key"], a["mac"] = o["private_key"], o["mac"]
			writeJSON(t, docs, alice, a)
		}, []string{"alice"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			running, st, alice, bob := twoUsers(t, k)
			running.Lock()
			tc.tamper(t, st, alice, bob)

			s, err := OpenDocs(st.Again(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Unlock([]byte(fixturePassphrase)); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			// The attack: bob's login reads with the keys listed for bob.
			kps, err := s.DecryptionKeys("bob@example.com")
			if slices.Contains(tc.broken, "alice") {
				for _, kp := range kps {
					if names(kp.Cert, "alice@example.com") {
						t.Fatalf("DecryptionKeys(bob) returned alice's key %s: the attack works", kp.KeyID)
					}
				}
			}
			// After a swap the document that lists bob is alice's.
			if slices.Contains(tc.broken, "bob") && (!errors.Is(err, ErrBrokenKey) || !strings.Contains(err.Error(), st.Where(alice))) {
				t.Errorf("DecryptionKeys(bob) = %d keys, %v; want ErrBrokenKey naming %s", len(kps), err, st.Where(alice))
			}
			got := map[string]string{}
			for _, id := range s.Identities() {
				if id.Status == StatusBroken {
					got[id.KeyID] = id.Problem
				}
			}
			paths := map[string]string{"alice": alice, "bob": bob}
			if len(got) != len(tc.broken) {
				t.Errorf("broken identities = %v, want %v", got, tc.broken)
			}
			for _, who := range tc.broken {
				id := strings.TrimSuffix(path.Base(paths[who]), ".json")
				if !strings.Contains(got[id], st.Where(paths[who])) {
					t.Errorf("%s's key: problem %q, want it to name %s", who, got[id], st.Where(paths[who]))
				}
			}
			kes, err := s.Check()
			if err != nil || len(kes) != len(tc.broken) {
				t.Errorf("Check() = %v, %v; want %d problems", kes, err, len(tc.broken))
			}
			for _, ke := range kes {
				if !slices.ContainsFunc(tc.broken, func(who string) bool { return ke.Path == st.Where(paths[who]) }) {
					t.Errorf("Check() names %s, want only %v", ke.Path, tc.broken)
				}
			}
			if !slices.Contains(tc.broken, "bob") {
				if _, err := s.Signer("bob@example.com", time.Now()); err != nil {
					t.Errorf("Signer(bob) with only alice's document tampered: %v", err)
				}
			}
		})
	}
}

// testRunningStoreRefusesTamperedFile: a store unlocked before the
// documents were changed refuses them at its next reload too.
func testRunningStoreRefusesTamperedFile(t *testing.T, k storetest.Kind) {
	s, st, alice, bob := twoUsers(t, k)
	a, b := readJSON(t, st, alice), readJSON(t, st, bob)
	a["emails"], b["emails"] = b["emails"], a["emails"]
	writeJSON(t, st, alice, a)
	writeJSON(t, st, bob, b)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if kps, err := s.DecryptionKeys("bob@example.com"); !errors.Is(err, ErrBrokenKey) {
		t.Fatalf("DecryptionKeys(bob) after the swap = %d keys, %v; want ErrBrokenKey", len(kps), err)
	}
}

// testImportRepairsBrokenKey: importing the key again from a backup
// rebuilds its refused entry; certificates for it are refused until then.
func testImportRepairsBrokenKey(t *testing.T, k storetest.Kind) {
	s, st, alice, _ := twoUsers(t, k)
	p12, err := s.Backup("alice@example.com", "pw", &BackupOptions{Iterations: MinBackupIterations})
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := pkcs12.Decode(p12, "pw")
	if err != nil {
		t.Fatal(err)
	}
	a := readJSON(t, st, alice)
	a["emails"] = []any{"mallory@example.com"}
	writeJSON(t, st, alice, a)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); !errors.Is(err, ErrBrokenKey) {
		t.Fatalf("ImportCertificates for a refused key = %v, want ErrBrokenKey", err)
	}
	if _, err := s.BackupKey(strings.TrimSuffix(path.Base(alice), ".json"), "pw", nil); !errors.Is(err, ErrBrokenKey) {
		t.Errorf("BackupKey of a refused key = %v, want ErrBrokenKey", err)
	}
	if _, err := s.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatalf("ImportPKCS12 of the backup: %v", err)
	}
	if kes, err := s.Check(); err != nil || len(kes) != 0 {
		t.Errorf("Check after the repair = %v, %v; want no problem", kes, err)
	}
	if got := s.Emails(); !slices.Equal(got, []string{"alice@example.com", "bob@example.com"}) {
		t.Errorf("Emails() after the repair = %v", got)
	}
}

// testImportCertificatesNeedsUnlock: joining a certificate rewrites an
// entry's MAC, which needs the data key; others' certificates do not.
func testImportCertificatesNeedsUnlock(t *testing.T, k storetest.Kind) {
	s, st, _, _ := twoUsers(t, k)
	ca := testpki.NewCA(t, "CA")
	der, _, err := s.NewCSR(CSRRequest{Email: "carol@example.com", KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := readAll(t, st)
	if _, err := locked.ImportCertificates([]*x509.Certificate{ca.Issue(t, "carol@example.com", &testpki.Options{PublicKey: csr.PublicKey}).Cert}); !errors.Is(err, ErrLocked) {
		t.Errorf("ImportCertificates of our certificate while locked = %v, want ErrLocked", err)
	}
	if !maps.Equal(before, readAll(t, st)) {
		t.Error("a refused import changed documents")
	}
	res, err := locked.ImportCertificates([]*x509.Certificate{ca.Issue(t, "dave@example.com", nil).Cert})
	if err != nil || len(res.Others) != 1 {
		t.Errorf("ImportCertificates of someone else's certificate while locked = %+v, %v; want it sorted as others'", res, err)
	}
}

// testKeyDoesNotOpen: a document whose MAC holds but whose private key does
// not open under the data key is refused, named, and listed as broken.
func testKeyDoesNotOpen(t *testing.T, k storetest.Kind) {
	s, st, alice, _ := twoUsers(t, k)
	err := s.write(func(state *state, tx storage.Tx) error {
		e := state.entries[strings.TrimSuffix(path.Base(alice), ".json")].clone()
		e.sealed = bytes.Clone(e.sealed)
		e.sealed[len(e.sealed)-1] ^= 1
		return s.saveEntry(state, tx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	kes, err := s.Check()
	if err != nil || len(kes) != 1 || !errors.Is(kes[0], ErrBrokenKey) || kes[0].Path != st.Where(alice) || !strings.Contains(kes[0].Error(), "does not open") {
		t.Errorf("Check = %v, %v; want alice's key named as not opening", kes, err)
	}
	if _, err := s.DecryptionKeys("alice@example.com"); !errors.Is(err, ErrBrokenKey) {
		t.Errorf("DecryptionKeys(alice) = %v, want ErrBrokenKey, not 'no key'", err)
	}
}

// TestPrivateModes: a keystore directory that others may open is refused,
// with the command that fixes it, until it is fixed.
func TestPrivateModes(t *testing.T) {
	s, st, alice, _ := twoUsers(t, storetest.Kinds[0])
	dir := st.Docs.(*storage.Dir).Path()
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o755},
		{filepath.Join(dir, keysDir), 0o750},
		{filepath.Join(dir, headerFile), 0o644},
		{st.Where(alice), 0o640},
		{st.Where(alice), 0o602},
	} {
		good := os.FileMode(fileMode)
		if fi, err := os.Stat(tc.path); err == nil && fi.IsDir() {
			good = dirMode
		}
		if err := os.Chmod(tc.path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, nil)
		if !errors.Is(err, ErrNotPrivate) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "chmod -R go-rwx "+dir) {
			t.Errorf("Open with %s at %04o = %v, want ErrNotPrivate naming it and the chmod", tc.path, tc.mode, err)
		}
		if err := s.Reload(); !errors.Is(err, ErrNotPrivate) {
			t.Errorf("Reload with %s at %04o = %v, want ErrNotPrivate", tc.path, tc.mode, err)
		}
		if err := os.Chmod(tc.path, good); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir, nil); err != nil {
		t.Errorf("Open after fixing the modes: %v", err)
	}
}
