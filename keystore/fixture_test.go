package keystore

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/internal/ber"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite the files in testdata")

const (
	fixturePassphrase = "fixture passphrase"
	fixtureEmail      = "fixture@example.com"
	p12Password       = "pw"
)

// TestFixtures reads the PKCS #12 seeds of the fuzz tests; with -update it
// writes them anew, and the keystore that testFixture reads.
// (testdata/store-v1 is in the format of before entries were bound to the
// data key, and is never rewritten: testUpgrade reads it.)
func TestFixtures(t *testing.T) {
	if *update {
		writeFixtures(t)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "pkcs12", "*"))
	if err != nil || len(files) < 5 {
		t.Fatalf("PKCS #12 seeds: %v, %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, certs, err := decodePKCS12(data, p12Password); err != nil || len(certs) != 2 {
			t.Errorf("decodePKCS12(%s) = %d certificates, %v; want 2", f, len(certs), err)
		}
	}
}

// testFixture opens a keystore written by an earlier build of this package,
// copied into a store of kind k: the format must stay readable.
func testFixture(t *testing.T, k storetest.Kind) {
	s, err := OpenDocs(fixtureStore(t, k, "store"), nil)
	if err != nil {
		t.Fatalf("Open(fixture): %v", err)
	}
	if err := s.Unlock([]byte(fixturePassphrase)); err != nil {
		t.Fatalf("Unlock(fixture): %v", err)
	}
	ids := s.Identities()
	if len(ids) != 1 || ids[0].Email != fixtureEmail || ids[0].Status != StatusActive || len(ids[0].Chain) != 1 {
		t.Fatalf("fixture Identities() = %+v, want one active identity with a chain", ids)
	}
	if _, err := s.Signer(fixtureEmail, time.Now()); err != nil {
		t.Errorf("fixture Signer: %v", err)
	}

}

func writeFixtures(t *testing.T) {
	root := testpki.NewCA(t, "Fixture Root")
	inter := root.Intermediate(t, "Fixture Intermediate")
	forever := testpki.Options{Key: "p256", NotAfter: time.Now().AddDate(100, 0, 0)}

	tmp := filepath.Join(t.TempDir(), "store")
	s, err := Create(tmp, []byte(fixturePassphrase), &Options{KDF: &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := s.NewCSR(CSRRequest{Email: fixtureEmail, KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	opts := forever
	opts.PublicKey = csr.PublicKey
	if _, err := s.ImportCertificates([]*x509.Certificate{inter.Issue(t, fixtureEmail, &opts).Cert, inter.Cert}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("testdata", "store")
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(out, keysDir), os.DirFS(filepath.Join(tmp, keysDir))); err != nil {
		t.Fatal(err)
	}
	header, err := os.ReadFile(filepath.Join(tmp, headerFile))
	if err != nil {
		t.Fatal(err)
	}
	writeTestdata(t, filepath.Join(out, headerFile), header)

	id := inter.Issue(t, "seed@example.com", &forever)
	seeds := map[string]*pkcs12.Encoder{"modern.p12": pkcs12.Modern, "legacy-des.p12": pkcs12.LegacyDES, "legacy-rc2.p12": pkcs12.LegacyRC2}
	for name, enc := range seeds {
		p12, err := enc.Encode(id.Key, id.Cert, []*x509.Certificate{inter.Cert}, p12Password)
		if err != nil {
			t.Fatal(err)
		}
		writeTestdata(t, filepath.Join("testdata", "pkcs12", name), p12)
		if name == "modern.p12" {
			writeTestdata(t, filepath.Join("testdata", "pkcs12", "armoured.p12.pem"), pem.EncodeToMemory(&pem.Block{Type: "PKCS12", Bytes: p12}))
			writeTestdata(t, filepath.Join("testdata", "pkcs12", "ber.p12"), toBERPKCS12(t, p12, p12Password))
		}
	}
}

// copyFixture copies testdata/name to a temporary directory, private to
// its owner as a keystore must be (git keeps no modes but the executable
// bit).
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", name))); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(fileMode)
		if d.IsDir() {
			mode = dirMode
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeTestdata(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBERPKCS12 reads a PKCS #12 file in BER, the way NSS writes them, made
// here from a DER one so the test runs without the interop corpus.
func TestBERPKCS12(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	id := ca.Issue(t, "ber@example.com", &testpki.Options{Key: "p256"})
	for _, enc := range []*pkcs12.Encoder{pkcs12.Modern, pkcs12.LegacyDES} {
		for _, password := range []string{"pässword", ""} {
			p12, err := enc.Encode(id.Key, id.Cert, []*x509.Certificate{ca.Cert}, password)
			if err != nil {
				t.Fatal(err)
			}
			ber := toBERPKCS12(t, p12, password)
			if _, _, _, err := pkcs12.DecodeChain(ber, password); err == nil {
				t.Fatal("go-pkcs12 read the BER file: the test no longer tests anything")
			}
			key, certs, err := decodePKCS12(ber, password)
			if err != nil {
				t.Fatalf("decodePKCS12(BER, %q): %v", password, err)
			}
			if !certs[0].Equal(id.Cert) || !publicOf(key).(interface{ Equal(crypto.PublicKey) bool }).Equal(id.Key.Public()) {
				t.Errorf("decodePKCS12(BER) returned another key or certificate")
			}
			if _, _, err := decodePKCS12(ber, password+"x"); !errors.Is(err, ErrWrongPassword) {
				t.Errorf("decodePKCS12(BER, wrong password) = %v, want ErrWrongPassword", err)
			}
		}
	}
}

// toBERPKCS12 re-encodes a DER PKCS #12 file with indefinite lengths and
// split OCTET STRINGs everywhere derPKCS12 must undo it, with a new MAC.
func toBERPKCS12(t *testing.T, der []byte, password string) []byte {
	t.Helper()
	root, err := ber.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	octets := contentOctets(root.Children()[1])
	orig := octets.Bytes()
	safe, err := ber.Parse(orig)
	if err != nil {
		t.Fatal(err)
	}
	split := map[*ber.Node]bool{} // the encrypted contents, [0] IMPLICIT OCTET STRING
	for _, ci := range safe.Children() {
		if inner := contentOctets(ci); inner != nil {
			sc, err := ber.Parse(inner.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			inner.SetBytes(toBER(sc, nil))
			continue
		}
		eci := ci.Children()[1].Children()[0].Children()[1]
		split[eci.Children()[2]] = true
	}
	safeBER := toBER(safe, split)
	if mac := root.Children(); len(mac) == 3 {
		pw, err := checkMAC(mac[2], orig, password)
		if err != nil {
			t.Fatal(err)
		}
		if err := remac(mac[2], safeBER, pw); err != nil {
			t.Fatal(err)
		}
	}
	octets.SetBytes(safeBER)
	return toBER(root, nil)
}

// toBER encodes constructed elements with indefinite lengths, and splits
// long OCTET STRINGs and the elements in split into 16-byte OCTET STRING
// segments.
func toBER(n *ber.Node, split map[*ber.Node]bool) []byte {
	id := n.DER()[0] // tags here are all low-number
	if !n.Constructed() {
		long := is(n, ber.ClassUniversal, ber.TagOctetString, false) && len(n.Bytes()) > 16
		if !long && !split[n] {
			return n.DER()
		}
		out := []byte{id | 0x20, 0x80}
		for seg := range slices.Chunk(n.Bytes(), 16) {
			out = append(out, ber.TagOctetString, byte(len(seg)))
			out = append(out, seg...)
		}
		return append(out, 0, 0)
	}
	out := []byte{id, 0x80}
	for _, c := range n.Children() {
		out = append(out, toBER(c, split)...)
	}
	return append(out, 0, 0)
}
