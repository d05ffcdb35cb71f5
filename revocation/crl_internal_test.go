package revocation

import (
	"crypto/x509"
	"os"
	"testing"
)

// FuzzCheckScope: no issuingDistributionPoint makes checkScope panic.
func FuzzCheckScope(f *testing.F) {
	data, err := os.ReadFile("testdata/ca-idp.crl")
	if err != nil {
		f.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(data)
	if err != nil {
		f.Fatal(err)
	}
	for _, ext := range rl.Extensions {
		if ext.Id.Equal(oidIssuingDistributionPoint) {
			f.Add(ext.Value)
		}
	}
	f.Add([]byte{0x30, 3, 0x82, 1, 0xff})
	f.Fuzz(func(t *testing.T, value []byte) {
		_ = checkScope(value)
	})
}
