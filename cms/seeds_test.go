package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/cms"
)

// seedContent is what every file in testdata was made from.
var seedContent = []byte("Content-Type: text/plain\r\n\r\nfuzz seed\r\n")

var (
	seedKEKID = []byte{0xc0, 0xfe, 0xe0}
	seedKEK   = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
)

type seedIdentity struct {
	cert *x509.Certificate
	key  crypto.PrivateKey
}

func loadSeedIdentity(t testing.TB, name string) seedIdentity {
	t.Helper()
	read := func(file string) []byte {
		data, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s: no PEM block", file)
		}
		return block.Bytes
	}
	cert, err := x509.ParseCertificate(read(name + ".crt.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(read(name + ".key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return seedIdentity{cert, key}
}

// seedFiles returns the testdata files that end in ext.
func seedFiles(t testing.TB, ext ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, e := range ext {
		names, err := filepath.Glob(filepath.Join("testdata", "*"+e))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(name)] = data
		}
	}
	return out
}

// TestSeeds checks that the seeds are what they claim: every signature
// verifies and every envelope opens, which also covers 3DES and KEK.
func TestSeeds(t *testing.T) {
	ids := []seedIdentity{loadSeedIdentity(t, "fuzz-rsa"), loadSeedIdentity(t, "fuzz-p256")}
	for name, data := range seedFiles(t, ".p7s", ".p7b") {
		sd, err := cms.ParseSignedData(data)
		if err != nil {
			t.Errorf("%s: ParseSignedData: %v", name, err)
			continue
		}
		if name == "certs-only.p7b" {
			if len(sd.Signers) != 0 || len(sd.Certificates) != 2 {
				t.Errorf("%s: %d signers and %d certificates, want 0 and 2", name, len(sd.Signers), len(sd.Certificates))
			}
			continue
		}
		for _, s := range sd.Signers {
			cert := sd.FindCertificate(s, nil)
			if cert == nil {
				t.Errorf("%s: no certificate for %v", name, s.ID)
				continue
			}
			if err := sd.Verify(s, cert, seedContent); err != nil {
				t.Errorf("%s: Verify: %v", name, err)
			}
		}
	}
	for name, data := range seedFiles(t, ".p7m") {
		if strings.HasPrefix(name, "unsupported-") {
			continue // TestUnsupportedCiphers
		}
		env, err := cms.ParseEnvelope(data)
		if err != nil {
			t.Errorf("%s: ParseEnvelope: %v", name, err)
			continue
		}
		got, err := env.DecryptKEK(seedKEKID, seedKEK)
		if errors.Is(err, cms.ErrNoRecipient) {
			for _, id := range ids {
				if got, err = env.Decrypt(id.cert, id.key); !errors.Is(err, cms.ErrNoRecipient) {
					break
				}
			}
		}
		if err != nil || !bytes.Equal(got, seedContent) {
			t.Errorf("%s: decrypted %q, %v", name, got, err)
		}
	}
}

// TestUnsupportedCiphers reads envelopes in ciphers we do not decrypt:
// each is named, supported or not, and Decrypt says which it is.
func TestUnsupportedCiphers(t *testing.T) {
	id := loadSeedIdentity(t, "fuzz-rsa")
	tests := []struct {
		file string
		want cms.Cipher
		msg  string
	}{
		{"unsupported-rc2-40.p7m", "rc2-40-cbc", "cms: unsupported content cipher rc2-40-cbc (1.2.840.113549.3.2)"},
		{"unsupported-rc2-64.p7m", "rc2-64-cbc", "cms: unsupported content cipher rc2-64-cbc (1.2.840.113549.3.2)"},
		{"unsupported-rc2-128.p7m", "rc2-128-cbc", "cms: unsupported content cipher rc2-128-cbc (1.2.840.113549.3.2)"},
		{"unsupported-des.p7m", "des-cbc", "cms: unsupported content cipher des-cbc (1.3.14.3.2.7)"},
		{"unsupported-oid.p7m", "1.3.14.3.2.99", "cms: unsupported content cipher 1.3.14.3.2.99"},
	}
	for _, tc := range tests {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		env, err := cms.ParseEnvelope(data)
		if err != nil {
			t.Fatalf("%s: ParseEnvelope: %v", tc.file, err)
		}
		if env.Cipher != tc.want || env.Cipher.String() != string(tc.want) || env.CipherKnown || env.Cipher.Supported() {
			t.Errorf("%s: cipher %q (known %v, supported %v), want %q, unknown", tc.file, env.Cipher, env.CipherKnown, env.Cipher.Supported(), tc.want)
		}
		_, err = env.Decrypt(id.cert, id.key)
		var unsupported *cms.UnsupportedError
		if !errors.As(err, &unsupported) || err.Error() != tc.msg {
			t.Errorf("%s: Decrypt = %v, want an UnsupportedError %q", tc.file, err, tc.msg)
		}
	}
}

func FuzzParseSignedData(f *testing.F) {
	for _, data := range seedFiles(f, ".p7s", ".p7b") {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sd, err := cms.ParseSignedData(data)
		if err != nil {
			return
		}
		for _, s := range sd.Signers {
			_ = s.ID.String()
			if cert := sd.FindCertificate(s, nil); cert != nil {
				_ = sd.Verify(s, cert, nil)
				_ = sd.Verify(s, cert, seedContent)
			}
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	for _, data := range seedFiles(f, ".p7m") {
		f.Add(data)
	}
	ids := []seedIdentity{loadSeedIdentity(f, "fuzz-rsa"), loadSeedIdentity(f, "fuzz-p256")}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := cms.ParseEnvelope(data)
		if err != nil {
			return
		}
		for _, id := range ids {
			got, err := env.Decrypt(id.cert, id.key)
			if err == nil && got == nil {
				t.Error("Decrypt returned neither content nor error")
			}
		}
		_, _ = env.DecryptKEK(seedKEKID, seedKEK)
	})
}
