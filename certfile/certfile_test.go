package certfile_test

import (
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/certfile"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

func TestParseFiles(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    int    // certificates expected; 0 means an error
		wantErr string // substring of the error
	}{
		{name: "PEM certificate", file: "leaf.pem", want: 1},
		{name: "DER certificate", file: "leaf.der", want: 1},
		{name: "PEM chain", file: "chain.pem", want: 2},
		{name: "PEM key and certificate", file: "key-and-cert.pem", want: 1},
		{name: "p7b DER", file: "chain.p7b", want: 2},
		{name: "p7b PEM", file: "chain.p7b.pem", want: 2},
		{name: "p7b bare base64", file: "chain.p7b.b64", want: 2},
		{name: "CSR PEM", file: "leaf.csr", wantErr: "holds only CERTIFICATE REQUEST (a CSR is what you send to the CA"},
		{name: "CSR DER", file: "leaf.csr.der", wantErr: "certificate signing request"},
		{name: "garbage", file: "garbage.bin", wantErr: "certfile: no certificate found (expected PEM, DER or PKCS #7)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			certs, err := certfile.Parse(data)
			if tc.want == 0 {
				if !errors.Is(err, certfile.ErrNoCertificate) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%s) error = %v, want ErrNoCertificate containing %q", tc.file, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%s): %v", tc.file, err)
			}
			if len(certs) != tc.want {
				t.Fatalf("Parse(%s) = %d certificates, want %d", tc.file, len(certs), tc.want)
			}
			if got := certs[0].EmailAddresses; len(got) != 1 || got[0] != "alice@example.com" {
				t.Errorf("Parse(%s)[0] addresses = %v, want [alice@example.com]", tc.file, got)
			}
		})
	}
}

func TestParseEdgeCases(t *testing.T) {
	ca := testpki.NewCA(t, "Edge CA")
	id := ca.Issue(t, "bob@example.com", nil)
	tests := []struct {
		name    string
		data    []byte
		want    int
		wantErr string
	}{
		{name: "empty", data: nil, wantErr: "the input is empty"},
		{name: "whitespace", data: []byte(" \n\t\r\n"), wantErr: "the input is empty"},
		{name: "duplicates dropped", data: testpki.CertPEM(id.Cert, id.Cert, ca.Cert), want: 2},
		{name: "concatenated DER", data: append(append([]byte{}, id.Cert.Raw...), ca.Cert.Raw...), want: 2},
		{name: "text around PEM", data: append([]byte("Subject: bob\n"), testpki.CertPEM(id.Cert)...), want: 1},
		{name: "damaged armour", data: []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"), wantErr: "armour is damaged"},
		{name: "only a key", data: testpki.KeyPEM(t, id.Key), wantErr: "holds only PRIVATE KEY"},
		{name: "truncated DER", data: id.Cert.Raw[:100], wantErr: "as a certificate:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := certfile.Parse(tc.data)
			if tc.want == 0 {
				if !errors.Is(err, certfile.ErrNoCertificate) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%s) error = %v, want ErrNoCertificate containing %q", tc.name, err, tc.wantErr)
				}
				return
			}
			if err != nil || len(certs) != tc.want {
				t.Fatalf("Parse(%s) = %d certificates, %v; want %d", tc.name, len(certs), err, tc.want)
			}
		})
	}
}

func TestParseBrokenBlockNamed(t *testing.T) {
	ca := testpki.NewCA(t, "Broken CA")
	good := testpki.CertPEM(ca.Cert)
	bad := []byte("-----BEGIN CERTIFICATE-----\nMIIBCgKCAQEA\n-----END CERTIFICATE-----\n")
	_, err := certfile.Parse(append(good, bad...))
	if err == nil || !strings.Contains(err.Error(), "PEM block 2 (CERTIFICATE)") {
		t.Fatalf("Parse(good+bad) error = %v, want one naming PEM block 2", err)
	}
}

// TestParseOpenSSLP7B reads a .p7b made by OpenSSL, the way CAs hand out chains.
func TestParseOpenSSLP7B(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")
	root := testpki.NewCA(t, "P7B Root")
	inter := root.Intermediate(t, "P7B Intermediate")
	id := inter.Issue(t, "carol@example.com", nil)
	dir := t.TempDir()
	chain := testpki.WriteFile(t, dir, "chain.pem", testpki.CertPEM(id.Cert, inter.Cert, root.Cert))
	for _, form := range []string{"DER", "PEM"} {
		t.Run(form, func(t *testing.T) {
			out, err := exec.Command(openssl, "crl2pkcs7", "-nocrl", "-certfile", chain, "-outform", form).Output()
			if err != nil {
				t.Fatalf("openssl crl2pkcs7: %v", err)
			}
			certs, err := certfile.Parse(out)
			if err != nil {
				t.Fatalf("Parse(p7b %s): %v", form, err)
			}
			if len(certs) != 3 {
				t.Fatalf("Parse(p7b %s) = %d certificates, want 3", form, len(certs))
			}
			for i, want := range []*x509.Certificate{id.Cert, inter.Cert, root.Cert} {
				if !certs[i].Equal(want) {
					t.Errorf("Parse(p7b %s)[%d] = %s, want %s", form, i, certs[i].Subject, want.Subject)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		if fi, err := os.Stat(name); err != nil || fi.IsDir() {
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := certfile.Parse(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("Parse returned no certificates and no error")
		}
		if err != nil && certs != nil {
			t.Fatal("Parse returned certificates with an error")
		}
	})
}
