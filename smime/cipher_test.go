package smime_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/smime"
)

// TestCipherNamed opens messages encrypted, by OpenSSL, with ciphers we do
// not decrypt: the Opened names each one, and so does the
// Authentication-Results reason.
func TestCipherNamed(t *testing.T) {
	dir := filepath.Join("..", "cms", "testdata")
	kp := smime.KeyPair{Cert: readPEM(t, filepath.Join(dir, "fuzz-rsa.crt.pem"), x509.ParseCertificate)}
	kp.Key = readPEM(t, filepath.Join(dir, "fuzz-rsa.key.pem"), x509.ParsePKCS8PrivateKey)
	tests := []struct{ file, want string }{
		{"unsupported-rc2-40.p7m", "rc2-40-cbc"},
		{"unsupported-rc2-128.p7m", "rc2-128-cbc"},
		{"unsupported-des.p7m", "des-cbc"},
		{"unsupported-oid.p7m", "1.3.14.3.2.99"},
		{"enveloped-3des.p7m", "des-ede3-cbc"},
	}
	for _, tc := range tests {
		der, err := os.ReadFile(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		msg := "From: fuzz@example.com\r\nTo: fuzz@example.com\r\nSubject: cipher\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(der) + "\r\n"
		o, err := smime.Open([]byte(msg), &smime.OpenOptions{Keys: []smime.KeyPair{kp}})
		if err != nil {
			t.Fatal(err)
		}
		if got := o.Cipher.String(); got != tc.want || !o.Encrypted {
			t.Errorf("%s: Opened.Cipher = %q (encrypted %v), want %q", tc.file, got, o.Encrypted, tc.want)
		}
		ar := o.AuthenticationResults("mx.example")
		if o.Cipher.Supported() {
			if !o.Decrypted || ar != "mx.example; smime=none" {
				t.Errorf("%s: decrypted %v, %s; want it decrypted", tc.file, o.Decrypted, ar)
			}
			continue
		}
		want := `mx.example; smime=none reason="not decrypted: unsupported content cipher ` + tc.want
		if o.Decrypted || !strings.HasPrefix(ar, want) {
			t.Errorf("%s: AuthenticationResults = %s, want it to start %s", tc.file, ar, want)
		}
	}
}

func readPEM[T any](t *testing.T, file string, parse func([]byte) (T, error)) T {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	v, err := parse(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
