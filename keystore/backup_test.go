package keystore_test

import (
	"crypto/x509"
	"encoding/asn1"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/internal/testpeer"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

// pfxParams is how a PKCS #12 file protects its contents.
type pfxParams struct {
	macIterations int64
	// One per encrypted part (the certificates' EncryptedData, the key's
	// shrouded bag): the encryption scheme's OID and its KDF iterations.
	schemes    []string
	iterations []int64
	prfs       []string // PBES2 only: the PBKDF2 PRF's OID
}

var (
	oidPBES2           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidEncryptedData   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidShroudedKeyBag  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidHMACWithSHA256  = "1.2.840.113549.2.9"
	oidPBEWithSHA3DES  = "1.2.840.113549.1.12.1.3"
	oidAES256CBCString = "2.16.840.1.101.3.4.1.42"
)

// decodePFX reads the protection parameters of a DER PKCS #12 file.
func decodePFX(t *testing.T, der []byte) pfxParams {
	t.Helper()
	fail := func(what string) { t.Helper(); t.Fatalf("decode PKCS #12: bad %s", what) }
	var p pfxParams
	s := cryptobyte.String(der)
	var pfx, authSafe, macData, content, safes cryptobyte.String
	var version int64
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&pfx, cbasn1.SEQUENCE) || !pfx.ReadASN1Integer(&version) || !pfx.ReadASN1(&authSafe, cbasn1.SEQUENCE) ||
		!authSafe.ReadASN1ObjectIdentifier(&oid) || !authSafe.ReadASN1(&content, cbasn1.Tag(0).ContextSpecific().Constructed()) ||
		!content.ReadASN1(&content, cbasn1.OCTET_STRING) || !content.ReadASN1(&safes, cbasn1.SEQUENCE) {
		fail("PFX")
	}
	var mac, salt cryptobyte.String
	p.macIterations = 1 // the DEFAULT
	if !pfx.ReadASN1(&macData, cbasn1.SEQUENCE) || !macData.ReadASN1(&mac, cbasn1.SEQUENCE) || !macData.ReadASN1(&salt, cbasn1.OCTET_STRING) ||
		(!macData.Empty() && !macData.ReadASN1Integer(&p.macIterations)) {
		fail("MacData")
	}
	for !safes.Empty() {
		var ci, body cryptobyte.String
		if !safes.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) || !ci.ReadASN1(&body, cbasn1.Tag(0).ContextSpecific().Constructed()) {
			fail("ContentInfo")
		}
		if oid.Equal(oidEncryptedData) {
			var ed, eci, alg cryptobyte.String
			if !body.ReadASN1(&ed, cbasn1.SEQUENCE) || !ed.ReadASN1Integer(&version) || !ed.ReadASN1(&eci, cbasn1.SEQUENCE) ||
				!eci.ReadASN1ObjectIdentifier(&oid) || !eci.ReadASN1(&alg, cbasn1.SEQUENCE) {
				fail("EncryptedData")
			}
			p.addScheme(t, alg)
			continue
		}
		var bags cryptobyte.String
		if !body.ReadASN1(&body, cbasn1.OCTET_STRING) || !body.ReadASN1(&bags, cbasn1.SEQUENCE) {
			fail("SafeContents")
		}
		for !bags.Empty() {
			var bag, value, epki, alg cryptobyte.String
			if !bags.ReadASN1(&bag, cbasn1.SEQUENCE) || !bag.ReadASN1ObjectIdentifier(&oid) || !bag.ReadASN1(&value, cbasn1.Tag(0).ContextSpecific().Constructed()) {
				fail("SafeBag")
			}
			if !oid.Equal(oidShroudedKeyBag) {
				continue
			}
			if !value.ReadASN1(&epki, cbasn1.SEQUENCE) || !epki.ReadASN1(&alg, cbasn1.SEQUENCE) {
				fail("EncryptedPrivateKeyInfo")
			}
			p.addScheme(t, alg)
		}
	}
	return p
}

// addScheme reads the contents of a PBE AlgorithmIdentifier: PBES2 with
// PBKDF2, or a PKCS #12 PBE scheme.
func (p *pfxParams) addScheme(t *testing.T, alg cryptobyte.String) {
	t.Helper()
	var oid asn1.ObjectIdentifier
	var params cryptobyte.String
	if !alg.ReadASN1ObjectIdentifier(&oid) || !alg.ReadASN1(&params, cbasn1.SEQUENCE) {
		t.Fatal("decode PKCS #12: bad encryption algorithm")
	}
	var iter int64
	prf := ""
	if oid.Equal(oidPBES2) {
		var kdf, kdfParams, salt, enc cryptobyte.String
		var kdfOID, encOID asn1.ObjectIdentifier
		if !params.ReadASN1(&kdf, cbasn1.SEQUENCE) || !kdf.ReadASN1ObjectIdentifier(&kdfOID) || !kdf.ReadASN1(&kdfParams, cbasn1.SEQUENCE) ||
			!kdfParams.ReadASN1(&salt, cbasn1.OCTET_STRING) || !kdfParams.ReadASN1Integer(&iter) ||
			!params.ReadASN1(&enc, cbasn1.SEQUENCE) || !enc.ReadASN1ObjectIdentifier(&encOID) {
			t.Fatal("decode PKCS #12: bad PBES2 parameters")
		}
		var keyLen int64
		if kdfParams.PeekASN1Tag(cbasn1.INTEGER) && !kdfParams.ReadASN1Integer(&keyLen) {
			t.Fatal("decode PKCS #12: bad PBKDF2 key length")
		}
		var prfAlg cryptobyte.String
		var prfOID asn1.ObjectIdentifier
		if kdfParams.ReadASN1(&prfAlg, cbasn1.SEQUENCE) && prfAlg.ReadASN1ObjectIdentifier(&prfOID) {
			prf = prfOID.String()
		}
		p.schemes = append(p.schemes, oid.String()+"/"+encOID.String())
	} else {
		var salt cryptobyte.String
		if !params.ReadASN1(&salt, cbasn1.OCTET_STRING) || !params.ReadASN1Integer(&iter) {
			t.Fatal("decode PKCS #12: bad PBE parameters")
		}
		p.schemes = append(p.schemes, oid.String())
	}
	p.iterations = append(p.iterations, iter)
	p.prfs = append(p.prfs, prf)
}

// TestBackupParameters decodes what Backup writes: by default PBES2 with
// AES-256-CBC and PBKDF2-HMAC-SHA-256 at 600,000 iterations and a MAC at as
// many, as NSS writes; the legacy format 3DES with 2,048 for both; fewer only
// when asked, never fewer than 2,048.
func TestBackupParameters(t *testing.T) {
	s, _ := newStore(t, dirKind)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	cert := issue(t, ca, "alice@example.com", csr, testpki.Options{})
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	pbes2 := oidPBES2.String() + "/" + oidAES256CBCString
	tests := []struct {
		name   string
		opts   *keystore.BackupOptions
		scheme string
		iter   int64
	}{
		{"defaults", nil, pbes2, 600_000},
		{"legacy defaults", &keystore.BackupOptions{Legacy: true}, oidPBEWithSHA3DES, 2048},
		{"fewer", &keystore.BackupOptions{Iterations: 10_000}, pbes2, 10_000},
		{"legacy more", &keystore.BackupOptions{Legacy: true, Iterations: 20_000}, oidPBEWithSHA3DES, 20_000},
	}
	for _, tc := range tests {
		p12, err := s.Backup("alice@example.com", "pw", tc.opts)
		if err != nil {
			t.Fatalf("Backup(%s): %v", tc.name, err)
		}
		p := decodePFX(t, p12)
		if p.macIterations != tc.iter {
			t.Errorf("Backup(%s): MAC iterations %d, want %d", tc.name, p.macIterations, tc.iter)
		}
		if len(p.schemes) != 2 {
			t.Fatalf("Backup(%s): %d encrypted parts, want 2 (certificates, key)", tc.name, len(p.schemes))
		}
		for i := range p.schemes {
			if p.schemes[i] != tc.scheme || p.iterations[i] != tc.iter {
				t.Errorf("Backup(%s) part %d: %s with %d iterations, want %s with %d", tc.name, i, p.schemes[i], p.iterations[i], tc.scheme, tc.iter)
			}
			if tc.scheme == pbes2 && p.prfs[i] != oidHMACWithSHA256 {
				t.Errorf("Backup(%s) part %d: PBKDF2 PRF %s, want HMAC-SHA-256", tc.name, i, p.prfs[i])
			}
		}
		if _, _, _, err := pkcs12.DecodeChain(p12, "pw"); err != nil {
			t.Errorf("Backup(%s): go-pkcs12 cannot read it: %v", tc.name, err)
		}
	}
	for _, n := range []int{1, 2047} {
		for _, legacy := range []bool{false, true} {
			_, err := s.Backup("alice@example.com", "pw", &keystore.BackupOptions{Legacy: legacy, Iterations: n})
			if err == nil || !strings.Contains(err.Error(), "at least 2048") {
				t.Errorf("Backup(%d iterations, legacy %v) = %v, want it refused", n, legacy, err)
			}
		}
	}
}

// TestBackupNSS imports backups into an NSS database with pk12util, as
// Thunderbird and Firefox would, in both formats with their default counts.
func TestBackupNSS(t *testing.T) {
	pk12util := testutil.NeedTool(t, "pk12util")
	certutil := testutil.NeedTool(t, "certutil")
	s, _ := newStore(t, dirKind)
	ca := testpki.NewCA(t, "NSS Root")
	inter := ca.Intermediate(t, "NSS Intermediate")
	for _, kt := range []keystore.KeyType{keystore.RSA2048, keystore.ECDSAP256} {
		email := strings.ToLower(string(kt)) + "@example.com"
		csr, _ := newCSR(t, s, email, kt)
		if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, inter, email, csr, testpki.Options{}), inter.Cert}); err != nil {
			t.Fatal(err)
		}
		for _, legacy := range []bool{false, true} {
			p12, err := s.Backup(email, "nss backup pw", &keystore.BackupOptions{Legacy: legacy})
			if err != nil {
				t.Fatal(err)
			}
			work := t.TempDir()
			file := testpki.WriteFile(t, work, "backup.p12", p12)
			pw := testpki.WriteFile(t, work, "pw", []byte("nss backup pw"))
			db := "sql:" + filepath.Join(work, "nssdb")
			run := func(bin string, args ...string) string {
				t.Helper()
				out, err := exec.Command(bin, args...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			if err := os.Mkdir(filepath.Join(work, "nssdb"), 0o700); err != nil {
				t.Fatal(err)
			}
			run(certutil, "-N", "-d", db, "--empty-password")
			if out, err := exec.Command(pk12util, "-i", file, "-d", db, "-W", "wrong", "-K", "").CombinedOutput(); err == nil {
				t.Fatalf("%s legacy=%v: pk12util imported with a wrong password:\n%s", kt, legacy, out)
			}
			run(pk12util, "-i", file, "-d", db, "-w", pw, "-K", "")
			keys := run(certutil, "-K", "-d", db)
			certs := run(certutil, "-L", "-d", db)
			wantKey := map[keystore.KeyType]string{keystore.RSA2048: "> rsa", keystore.ECDSAP256: "> ec"}[kt]
			if strings.Count(keys, wantKey) != 1 {
				t.Errorf("%s legacy=%v: certutil -K does not list the one key (%q):\n%s", kt, legacy, wantKey, keys)
			}
			if !strings.Contains(certs, "u,u,u") || !strings.Contains(certs, "NSS Intermediate") {
				t.Errorf("%s legacy=%v: certutil -L lacks the user certificate (u,u,u) or the intermediate:\n%s", kt, legacy, certs)
			}
		}
	}
}

// TestBackupGpgsm imports a legacy backup into gpgsm. gpgsm 2.2 cannot
// parse the default format (it stops at the PBES2 parameters with the
// SHA-256 PRF), at any iteration count, and crashes on any PKCS #12 file
// with an EC key, OpenSSL's included: RSA only.
func TestBackupGpgsm(t *testing.T) {
	s, _ := newStore(t, dirKind)
	ca := testpki.NewCA(t, "gpgsm Root")
	g := testpeer.NewGpgsm(t, ca.Cert)
	const email = "rsa@example.com"
	csr, _ := newCSR(t, s, email, keystore.RSA2048)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, email, csr, testpki.Options{})}); err != nil {
		t.Fatal(err)
	}
	g.ImportPKCS12(t, "rsa", func() []byte {
		p12, err := s.Backup(email, testpeer.Passphrase, &keystore.BackupOptions{Legacy: true})
		if err != nil {
			t.Fatal(err)
		}
		return p12
	})
	if out := g.Run(t, nil, "--list-secret-keys", email); !strings.Contains(string(out), email) {
		t.Errorf("gpgsm --list-secret-keys %s after importing the backup:\n%s", email, out)
	}
}
