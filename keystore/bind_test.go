package keystore

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/internal/testpki"
)

var testKDF = &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// readJSON and writeJSON edit a keystore file as someone without the
// passphrase would: field by field.
func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeJSON(t *testing.T, path string, m map[string]any) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, fileMode); err != nil {
		t.Fatal(err)
	}
}

// readAll returns every file under dir with its contents and mtime.
func readAll(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pattern := range []string{headerFile, filepath.Join(keysDir, "*.json")} {
		files, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			out[f] = fi.ModTime().String() + "\n" + string(data)
		}
	}
	return out
}

// TestUpgrade unlocks a keystore written before entries were bound to the
// data key: the first unlock binds every entry and rewrites keystore.json as
// version 2, the next ones change nothing, and from then on a file in the
// old format is refused.
func TestUpgrade(t *testing.T) {
	dir := copyFixture(t, "store-v1")
	entryFile := filepath.Join(dir, keysDir, "a1c0b43df5788f75fe2c2cb89d9cdfd9.json")
	v1Header, err := os.ReadFile(filepath.Join(dir, headerFile))
	if err != nil {
		t.Fatal(err)
	}
	v1Entry, err := os.ReadFile(entryFile)
	if err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, &Options{RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if ids := s.Identities(); len(ids) != 1 || ids[0].Email != fixtureEmail || ids[0].Status != StatusActive {
		t.Fatalf("Identities() of the version 1 keystore, locked = %+v, want the fixture, active", ids)
	}
	before := readAll(t, dir)
	if err := s.Unlock([]byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Unlock(wrong) = %v, want ErrWrongPassphrase", err)
	}
	if after := readAll(t, dir); !maps.Equal(before, after) {
		t.Fatal("a wrong passphrase changed files")
	}

	if err := s.Unlock([]byte(fixturePassphrase)); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if !s.Upgraded() {
		t.Error("Upgraded() = false after the first unlock of a version 1 keystore")
	}
	if h := readJSON(t, filepath.Join(dir, headerFile)); h["version"] != float64(formatVersion) {
		t.Errorf("keystore.json version after the upgrade = %v, want %d", h["version"], formatVersion)
	}
	if e := readJSON(t, entryFile); e["version"] != float64(formatVersion) || e["mac"] == nil {
		t.Errorf("entry after the upgrade: version %v, mac %v; want version %d with a MAC", e["version"], e["mac"], formatVersion)
	}
	if _, err := s.Signer(fixtureEmail, time.Now()); err != nil {
		t.Errorf("Signer after the upgrade: %v", err)
	}
	if kes, err := s.Check(); err != nil || len(kes) != 0 {
		t.Errorf("Check after the upgrade = %v, %v; want no problem", kes, err)
	}

	upgraded := readAll(t, dir)
	v2Entry, err := os.ReadFile(entryFile)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir, &Options{RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Unlock([]byte(fixturePassphrase)); err != nil || again.Upgraded() {
		t.Fatalf("second Unlock = %v, upgraded %v; want nil, false", err, again.Upgraded())
	}
	if after := readAll(t, dir); !maps.Equal(upgraded, after) {
		t.Error("the second unlock rewrote files")
	}

	// The entry in its old form, without a MAC, is refused now.
	if err := os.WriteFile(entryFile, v1Entry, fileMode); err != nil {
		t.Fatal(err)
	}
	if err := again.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Signer(fixtureEmail, time.Now()); !errors.Is(err, ErrBrokenKey) || !strings.Contains(err.Error(), entryFile) {
		t.Errorf("Signer with the entry put back in version 1 = %v, want ErrBrokenKey naming %s", err, entryFile)
	}
	if ids := again.Identities(); len(ids) != 1 || ids[0].Status != StatusBroken || !strings.Contains(ids[0].Problem, "no MAC") {
		t.Errorf("Identities() with the entry put back in version 1 = %+v, want it broken for lack of a MAC", ids)
	}

	// With keystore.json put back from before the upgrade too, a running
	// store still refuses an entry without a MAC.
	if err := os.WriteFile(filepath.Join(dir, headerFile), v1Header, fileMode); err != nil {
		t.Fatal(err)
	}
	moved := readJSON(t, entryFile)
	moved["emails"] = []any{"mallory@example.com"}
	writeJSON(t, entryFile, moved)
	if err := again.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := again.Emails(); len(got) != 0 {
		t.Errorf("Emails() of the running store with version 1 files put back = %v, want none", got)
	}

	// Unlocking that upgrades again, and says so: the one thing an upgrade
	// cannot tell from a first one.
	if err := os.WriteFile(entryFile, v2Entry, fileMode); err != nil {
		t.Fatal(err)
	}
	third, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := third.Unlock([]byte(fixturePassphrase)); err != nil || !third.Upgraded() {
		t.Errorf("Unlock with keystore.json put back from before the upgrade = %v, upgraded %v; want nil, true", err, third.Upgraded())
	}

	// Only the version field turned back: the wrapped key says otherwise.
	h := readJSON(t, filepath.Join(dir, headerFile))
	h["version"] = float64(legacyVersion)
	writeJSON(t, filepath.Join(dir, headerFile), h)
	fourth, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fourth.Unlock([]byte(fixturePassphrase)); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Errorf("Unlock with the version turned back = %v, want an error saying keystore.json was altered", err)
	}
}

// twoUsers makes a keystore with active keys for alice and bob, and
// returns it with the path of each one's key file.
func twoUsers(t *testing.T) (s *Store, dir, alice, bob string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "keystore")
	s, err := Create(dir, []byte(fixturePassphrase), &Options{KDF: testKDF, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "CA")
	files := map[string]string{}
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
		files[email] = filepath.Join(dir, keysDir, info.KeyID+".json")
	}
	return s, dir, files["alice@example.com"], files["bob@example.com"]
}

// TestSwapAttack is issue 9's attack: without the passphrase, swap the
// addresses of two key files so that bob's login gets alice's key. Both
// files are refused, each named, and neither key is used for anyone.
func TestSwapAttack(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, alice, bob string)
		broken []string // "alice", "bob"
	}{
		{"swap emails", func(t *testing.T, alice, bob string) {
			a, b := readJSON(t, alice), readJSON(t, bob)
			a["emails"], b["emails"] = b["emails"], a["emails"]
			writeJSON(t, alice, a)
			writeJSON(t, bob, b)
		}, []string{"alice", "bob"}},
		{"add an address", func(t *testing.T, alice, bob string) {
			a := readJSON(t, alice)
			a["emails"] = append(a["emails"].([]any), "bob@example.com")
			writeJSON(t, alice, a)
		}, []string{"alice"}},
		{"drop the MAC", func(t *testing.T, alice, bob string) {
			a := readJSON(t, alice)
			a["emails"] = []any{"bob@example.com"}
			a["version"] = float64(legacyVersion)
			delete(a, "mac")
			writeJSON(t, alice, a)
		}, []string{"alice"}},
		{"another keystore's file", func(t *testing.T, alice, bob string) {
			other, _, otherAlice, _ := twoUsers(t)
			other.Lock()
			data, err := os.ReadFile(otherAlice)
			if err != nil {
				t.Fatal(err)
			}
			// The other keystore's sealed key and MAC, under alice's id.
			o := map[string]any{}
			if err := json.Unmarshal(data, &o); err != nil {
				t.Fatal(err)
			}
			a := readJSON(t, alice)
			a["private_key"], a["mac"] = o["private_key"], o["mac"]
			writeJSON(t, alice, a)
		}, []string{"alice"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			running, dir, alice, bob := twoUsers(t)
			running.Lock()
			tc.tamper(t, alice, bob)

			s, err := Open(dir, nil)
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
			// After a swap the file that lists bob is alice's.
			if slices.Contains(tc.broken, "bob") && (!errors.Is(err, ErrBrokenKey) || !strings.Contains(err.Error(), alice)) {
				t.Errorf("DecryptionKeys(bob) = %d keys, %v; want ErrBrokenKey naming %s", len(kps), err, alice)
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
				id := strings.TrimSuffix(filepath.Base(paths[who]), ".json")
				if !strings.Contains(got[id], paths[who]) {
					t.Errorf("%s's key: problem %q, want it to name %s", who, got[id], paths[who])
				}
			}
			kes, err := s.Check()
			if err != nil || len(kes) != len(tc.broken) {
				t.Errorf("Check() = %v, %v; want %d problems", kes, err, len(tc.broken))
			}
			for _, ke := range kes {
				if !slices.ContainsFunc(tc.broken, func(who string) bool { return ke.Path == paths[who] }) {
					t.Errorf("Check() names %s, want only %v", ke.Path, tc.broken)
				}
			}
			if !slices.Contains(tc.broken, "bob") {
				if _, err := s.Signer("bob@example.com", time.Now()); err != nil {
					t.Errorf("Signer(bob) with only alice's file tampered: %v", err)
				}
			}
		})
	}
}

// TestRunningStoreRefusesTamperedFile: a store unlocked before the files
// were changed refuses them at its next reload too.
func TestRunningStoreRefusesTamperedFile(t *testing.T) {
	s, _, alice, bob := twoUsers(t)
	a, b := readJSON(t, alice), readJSON(t, bob)
	a["emails"], b["emails"] = b["emails"], a["emails"]
	writeJSON(t, alice, a)
	writeJSON(t, bob, b)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if kps, err := s.DecryptionKeys("bob@example.com"); !errors.Is(err, ErrBrokenKey) {
		t.Fatalf("DecryptionKeys(bob) after the swap = %d keys, %v; want ErrBrokenKey", len(kps), err)
	}
}

// TestImportRepairsBrokenKey: importing the key again from a backup
// rebuilds its refused entry; certificates for it are refused until then.
func TestImportRepairsBrokenKey(t *testing.T) {
	s, _, alice, _ := twoUsers(t)
	p12, err := s.Backup("alice@example.com", "pw", &BackupOptions{Iterations: MinBackupIterations})
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := pkcs12.Decode(p12, "pw")
	if err != nil {
		t.Fatal(err)
	}
	a := readJSON(t, alice)
	a["emails"] = []any{"mallory@example.com"}
	writeJSON(t, alice, a)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); !errors.Is(err, ErrBrokenKey) {
		t.Fatalf("ImportCertificates for a refused key = %v, want ErrBrokenKey", err)
	}
	if _, err := s.BackupKey(strings.TrimSuffix(filepath.Base(alice), ".json"), "pw", nil); !errors.Is(err, ErrBrokenKey) {
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

// TestImportCertificatesNeedsUnlock: joining a certificate rewrites an
// entry's MAC, which needs the data key; others' certificates do not.
func TestImportCertificatesNeedsUnlock(t *testing.T) {
	s, dir, _, _ := twoUsers(t)
	ca := testpki.NewCA(t, "CA")
	der, _, err := s.NewCSR(CSRRequest{Email: "carol@example.com", KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)
	if _, err := locked.ImportCertificates([]*x509.Certificate{ca.Issue(t, "carol@example.com", &testpki.Options{PublicKey: csr.PublicKey}).Cert}); !errors.Is(err, ErrLocked) {
		t.Errorf("ImportCertificates of our certificate while locked = %v, want ErrLocked", err)
	}
	if !maps.Equal(before, readAll(t, dir)) {
		t.Error("a refused import changed files")
	}
	res, err := locked.ImportCertificates([]*x509.Certificate{ca.Issue(t, "dave@example.com", nil).Cert})
	if err != nil || len(res.Others) != 1 {
		t.Errorf("ImportCertificates of someone else's certificate while locked = %+v, %v; want it sorted as others'", res, err)
	}
}

// TestKeyDoesNotOpen: a file whose MAC holds but whose private key does
// not open under the data key is refused, named, and listed as broken.
func TestKeyDoesNotOpen(t *testing.T) {
	s, _, alice, _ := twoUsers(t)
	err := s.write(func(st *state) error {
		e := st.entries[strings.TrimSuffix(filepath.Base(alice), ".json")].clone()
		e.sealed = bytes.Clone(e.sealed)
		e.sealed[len(e.sealed)-1] ^= 1
		return s.saveEntry(st, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	kes, err := s.Check()
	if err != nil || len(kes) != 1 || !errors.Is(kes[0], ErrBrokenKey) || kes[0].Path != alice || !strings.Contains(kes[0].Error(), "does not open") {
		t.Errorf("Check = %v, %v; want alice's file named as not opening", kes, err)
	}
	if _, err := s.DecryptionKeys("alice@example.com"); !errors.Is(err, ErrBrokenKey) {
		t.Errorf("DecryptionKeys(alice) = %v, want ErrBrokenKey, not 'no key'", err)
	}
}

// TestPrivateModes: a keystore that others may open is refused, with the
// command that fixes it, until it is fixed.
func TestPrivateModes(t *testing.T) {
	s, dir, alice, _ := twoUsers(t)
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o755},
		{filepath.Join(dir, keysDir), 0o750},
		{filepath.Join(dir, headerFile), 0o644},
		{alice, 0o640},
		{alice, 0o602},
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
