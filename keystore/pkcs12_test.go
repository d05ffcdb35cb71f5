package keystore_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certfile"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

func testImportPKCS12(t *testing.T, k storetest.Kind) {
	root := testpki.NewCA(t, "Root")
	inter := root.Intermediate(t, "Intermediate")
	id := inter.Issue(t, "carol@example.com", &testpki.Options{Key: "p256"})
	p12, err := pkcs12.Modern.Encode(id.Key, id.Cert, []*x509.Certificate{inter.Cert, root.Cert}, "secret")
	if err != nil {
		t.Fatal(err)
	}
	armoured := pem.EncodeToMemory(&pem.Block{Type: "PKCS12", Bytes: p12})

	for name, data := range map[string][]byte{"DER": p12, "PEM": armoured} {
		t.Run(name, func(t *testing.T) {
			s, st := newStore(t, k)
			before := snapshot(t, st)
			for _, pw := range []string{"Secret", "", "secret "} {
				if _, err := s.ImportPKCS12(data, pw); !errors.Is(err, keystore.ErrWrongPassword) {
					t.Errorf("ImportPKCS12(password %q) = %v, want ErrWrongPassword", pw, err)
				}
			}
			sameSnapshot(t, "a wrong PKCS #12 password", before, snapshot(t, st))

			res, err := s.ImportPKCS12(data, "secret")
			if err != nil {
				t.Fatalf("ImportPKCS12: %v", err)
			}
			if !res.KeyFromPKCS12 || len(res.Warnings) != 2 || !strings.Contains(res.Warnings[0], "copy") {
				t.Errorf("result flags = %v, %q; want the PKCS #12 warning and the root's", res.KeyFromPKCS12, res.Warnings)
			}
			if len(res.Joined) != 1 || !res.Joined[0].New || !res.Joined[0].Cert.Equal(id.Cert) {
				t.Errorf("Joined = %+v, want the leaf", res.Joined)
			}
			checkCerts(t, "Intermediates", res.Intermediates, inter.Cert)
			checkCerts(t, "Roots", res.Roots, root.Cert)
			ids := s.Identities()
			if len(ids) != 1 || ids[0].Source != keystore.SourcePKCS12 || ids[0].KeyType != keystore.ECDSAP256 || ids[0].Status != keystore.StatusActive {
				t.Fatalf("Identities() = %+v, want one active ecdsa-p256 key from pkcs12", ids)
			}
			sg, err := s.Signer("carol@example.com", time.Now())
			if err != nil || !sg.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(id.Key.Public()) {
				t.Fatalf("Signer = %v, %v; want the imported key", sg, err)
			}
			again, err := s.ImportPKCS12(data, "secret")
			if err != nil || len(again.Joined) != 1 || again.Joined[0].New || len(s.Identities()) != 1 {
				t.Fatalf("second import = %+v, %v; want the same entry, nothing new", again, err)
			}
		})
	}
}

func testImportPKCS12Rejects(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	id := ca.Issue(t, "dave@example.com", &testpki.Options{Key: "p256"})
	other := ca.Issue(t, "erin@example.com", &testpki.Options{Key: "p256"})
	noAddr := ca.Issue(t, "frank@example.com", &testpki.Options{Key: "p256", NoSAN: true})
	mismatched, err := pkcs12.Modern.Encode(id.Key, other.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	anonymous, err := pkcs12.Modern.Encode(noAddr.Key, noAddr.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, st)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"key and certificate differ", mismatched, "no certificate in the PKCS #12 file is for its private key"},
		{"no address", anonymous, "names no email address"},
		{"garbage", []byte("not a pkcs12 file"), "read PKCS #12 file"},
		{"empty", nil, "read PKCS #12 file"},
		{"certificate PEM", testpki.CertPEM(id.Cert), "found PEM CERTIFICATE"},
	}
	for _, tc := range tests {
		if _, err := s.ImportPKCS12(tc.data, "pw"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ImportPKCS12(%s) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	sameSnapshot(t, "rejected PKCS #12 files", before, snapshot(t, st))

	s.Lock()
	good, err := pkcs12.Modern.Encode(id.Key, id.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportPKCS12(good, "pw"); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("ImportPKCS12 while locked = %v, want ErrLocked", err)
	}
}

// TestPKCS12JoinsCSRKey: a key made here, certified, exported by a mail
// client and imported back joins its own entry.
func testPKCS12JoinsCSRKey(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, info := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	cert := issue(t, ca, "alice@example.com", csr, testpki.Options{})
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	backup, err := s.Backup("alice@example.com", "pw", fastBackup)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ImportPKCS12(backup, "pw")
	if err != nil {
		t.Fatal(err)
	}
	ids := s.Identities()
	if len(ids) != 1 || ids[0].Source != keystore.SourceGenerated || len(res.Joined) != 1 || res.Joined[0].KeyID != info.KeyID {
		t.Fatalf("after re-import: Identities %+v, Joined %+v; want the one generated entry", ids, res.Joined)
	}
}

func testBackupRoundTrip(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "Root")
	inter := ca.Intermediate(t, "Intermediate")
	csr, info := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	now := time.Now()
	old := issue(t, inter, "alice@example.com", csr, testpki.Options{NotAfter: now.Add(10 * 24 * time.Hour)})
	renewed := issue(t, inter, "alice@example.com", csr, testpki.Options{NotAfter: now.Add(400 * 24 * time.Hour)})
	if _, err := s.ImportCertificates([]*x509.Certificate{old, renewed, inter.Cert}); err != nil {
		t.Fatal(err)
	}
	for _, legacy := range []bool{false, true} {
		p12, err := s.Backup("Alice@example.com", "backup pw", &keystore.BackupOptions{Legacy: legacy, Iterations: keystore.MinBackupIterations})
		if err != nil {
			t.Fatalf("Backup(legacy=%v): %v", legacy, err)
		}
		key, leaf, cas, err := pkcs12.DecodeChain(p12, "backup pw")
		if err != nil {
			t.Fatalf("decode backup (legacy=%v): %v", legacy, err)
		}
		if !leaf.Equal(renewed) || !key.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
			t.Errorf("backup (legacy=%v) leaf or key is not the renewed certificate's", legacy)
		}
		checkCerts(t, "backup extra certificates", cas, inter.Cert, old)

		restored, _ := newStore(t, k)
		res, err := restored.ImportPKCS12(p12, "backup pw")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Joined) != 2 || res.Joined[0].KeyID != info.KeyID {
			t.Errorf("restore Joined = %+v, want both certificates of key %s", res.Joined, info.KeyID)
		}
	}
	if _, err := s.BackupKey(info.KeyID, "pw", fastBackup); err != nil {
		t.Errorf("BackupKey: %v", err)
	}

	newCSR(t, s, "pending@example.com", keystore.ECDSAP256)
	tests := []struct {
		email, password string
		want            error
	}{
		{"alice@example.com", "", keystore.ErrEmptyPassword},
		{"nobody@example.com", "pw", keystore.ErrNoIdentity},
		{"pending@example.com", "pw", keystore.ErrPending},
	}
	for _, tc := range tests {
		if _, err := s.Backup(tc.email, tc.password, fastBackup); !errors.Is(err, tc.want) {
			t.Errorf("Backup(%s, %q) = %v, want %v", tc.email, tc.password, err, tc.want)
		}
	}
	if _, err := s.BackupKey("0123456789abcdef0123456789abcdef", "pw", fastBackup); !errors.Is(err, keystore.ErrNoIdentity) {
		t.Errorf("BackupKey(unknown) = %v, want ErrNoIdentity", err)
	}
}

func testBackupExpiredKey(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	now := time.Now()
	cert := issue(t, ca, "alice@example.com", csr, testpki.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	p12, err := s.Backup("alice@example.com", "pw", fastBackup)
	if err != nil {
		t.Fatalf("Backup of an expired identity: %v (it still decrypts old mail)", err)
	}
	if _, leaf, _, err := pkcs12.DecodeChain(p12, "pw"); err != nil || !leaf.Equal(cert) {
		t.Fatalf("backup = %v, %v; want the expired certificate", leaf, err)
	}
}

// TestInteropPKCS12 imports files made by other implementations.
func TestInteropPKCS12(t *testing.T) {
	dir := testutil.InteropDir(t)
	tests := []struct {
		file, password, email string
		keyType               keystore.KeyType
		validAt               time.Time
		roots                 int
	}{
		{"thunderbird/smime/Alice.p12", "nss", "alice@example.com", keystore.RSA2048, date(2026, 2, 1), 1},       // PBES2/AES, CA first
		{"thunderbird/smime/Alice-ec.p12", "nss", "alice-ec@example.com", "ecdsa-p384", date(2026, 2, 1), 1},     // P-384 key, P-521 CA
		{"thunderbird/smime-interop/Fran.p12", "nss", "fran@example.com", keystore.RSA2048, date(2026, 2, 1), 0}, // 3DES; address only in the subject
		{"simple-java-mail/smime_test_user.p12", "letmein", "benny@bennybottema.com", keystore.RSA4096, date(2019, 4, 28), 0},
		{"notmuch/bob.p12", "", "bob@smime.example", keystore.RSA2048, time.Now(), 0}, // PEM-armoured, RC2-40
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			s, _ := newStore(t, dirKind)
			if _, err := s.ImportPKCS12(data, tc.password+"x"); !errors.Is(err, keystore.ErrWrongPassword) {
				t.Errorf("ImportPKCS12(wrong password) = %v, want ErrWrongPassword", err)
			}
			res, err := s.ImportPKCS12(data, tc.password)
			if err != nil {
				t.Fatalf("ImportPKCS12: %v", err)
			}
			if len(res.Joined) != 1 || len(res.Roots) != tc.roots {
				t.Errorf("Joined %d, Roots %d; want 1 and %d", len(res.Joined), len(res.Roots), tc.roots)
			}
			ids := s.Identities()
			if len(ids) != 1 || ids[0].Email != tc.email || ids[0].KeyType != tc.keyType {
				t.Fatalf("Identities() = %+v, want one %s key for %s", ids, tc.keyType, tc.email)
			}
			keys, err := s.DecryptionKeys(tc.email)
			if err != nil || len(keys) != 1 {
				t.Fatalf("DecryptionKeys = %d, %v", len(keys), err)
			}
			if _, err := s.Signer(tc.email, tc.validAt); err != nil {
				t.Errorf("Signer at %s: %v", tc.validAt.Format(time.DateOnly), err)
			}
		})
	}
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// TestCSRWalkOpenSSL is what a person does with a real CA: make a key and
// CSR, have the CA (OpenSSL here) sign it, import the certificate and chain,
// back the identity up, and open the backup elsewhere.
func TestCSRWalkOpenSSL(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	work := t.TempDir()
	s, _ := newStore(t, dirKind)
	der, info, err := s.NewCSR(keystore.CSRRequest{Email: "walk@example.com", CommonName: "Walk Tester"})
	if err != nil {
		t.Fatal(err)
	}
	csrFile := testpki.WriteFile(t, work, "walk.csr", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	out := run("req", "-in", csrFile, "-noout", "-verify", "-text")
	t.Logf("openssl req -verify:\n%s", grepLines(out, "verify", "Subject:", "email:", "Public-Key"))
	for _, want := range []string{"verify OK", "email:walk@example.com", "CN = Walk Tester", "(3072 bit)"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl req output lacks %q", want)
		}
	}

	root := testpki.NewCA(t, "Walk Root")
	inter := root.Intermediate(t, "Walk Intermediate")
	caFile := testpki.WriteFile(t, work, "ca.pem", testpki.CertPEM(inter.Cert))
	caKey := testpki.WriteFile(t, work, "ca.key", testpki.KeyPEM(t, inter.Key))
	ext := testpki.WriteFile(t, work, "ext.cnf", []byte("subjectAltName=email:walk@example.com\n"+
		"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n"))
	leafFile := filepath.Join(work, "walk.pem")
	// 45 days: clear of the 30-day expiry warning, so the status is active.
	run("x509", "-req", "-in", csrFile, "-CA", caFile, "-CAkey", caKey, "-set_serial", "4242",
		"-extfile", ext, "-days", "45", "-out", leafFile)
	leafPEM, err := os.ReadFile(leafFile)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certfile.Parse(append(leafPEM, testpki.CertPEM(inter.Cert, root.Cert)...))
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ImportCertificates(certs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Joined) != 1 || res.Joined[0].KeyID != info.KeyID {
		t.Fatalf("Joined = %+v, want key %s", res.Joined, info.KeyID)
	}
	checkCerts(t, "Intermediates", res.Intermediates, inter.Cert)
	checkCerts(t, "Roots", res.Roots, root.Cert)
	ids := s.Identities()
	if len(ids) != 1 || ids[0].Status != keystore.StatusActive {
		t.Fatalf("Identities() = %+v, want one active", ids)
	}
	checkCerts(t, "stored chain", ids[0].Chain, inter.Cert)

	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	pw := testpki.WriteFile(t, work, "pw", []byte("backup password\n"))
	for _, legacy := range []bool{false, true} {
		p12, err := s.Backup("walk@example.com", "backup password", &keystore.BackupOptions{Legacy: legacy})
		if err != nil {
			t.Fatal(err)
		}
		f := testpki.WriteFile(t, work, "walk.p12", p12)
		t.Logf("openssl pkcs12 -info (legacy=%v):\n%s", legacy, grepLines(run("pkcs12", "-in", f, "-passin", "file:"+pw, "-info", "-noout"), "MAC", "bag", "Keybag", "data"))
		// No -legacy: OpenSSL 3 must read both formats as they are.
		out := run("pkcs12", "-in", f, "-passin", "file:"+pw, "-nodes")
		var keys, certCount int
		for rest := []byte(out); ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			switch block.Type {
			case "PRIVATE KEY":
				keys++
				k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if !k.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
					t.Errorf("legacy=%v: the key OpenSSL read does not match the CSR's public key", legacy)
				}
			case "CERTIFICATE":
				certCount++
			}
		}
		if keys != 1 || certCount != 2 {
			t.Errorf("legacy=%v: openssl pkcs12 printed %d keys and %d certificates, want 1 and 2", legacy, keys, certCount)
		}
	}
}

func grepLines(out string, subs ...string) string {
	var keep []string
	for line := range strings.SplitSeq(out, "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				keep = append(keep, strings.TrimSpace(line))
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}
