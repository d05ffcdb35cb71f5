package keystore_test

import (
	"crypto/x509"
	"testing"
	"time"

	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
)

// testLookupNormalizesNames: a key is found however its address is
// spelled: case, a trailing dot, an internationalized domain in either form.
func testLookupNormalizesNames(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "anna@xn--bcher-kva.example", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, "anna@xn--bcher-kva.example", csr, testpki.Options{})}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"anna@xn--bcher-kva.example", "ANNA@XN--BCHER-KVA.EXAMPLE.", "anna@Bücher.example", "anna@bücher.example."} {
		if _, err := s.Signer(addr, time.Now()); err != nil {
			t.Errorf("Signer(%q): %v", addr, err)
		}
		if _, err := s.EncryptionCert(addr, time.Now()); err != nil {
			t.Errorf("EncryptionCert(%q): %v", addr, err)
		}
		if keys, err := s.DecryptionKeys(addr); err != nil || len(keys) != 1 {
			t.Errorf("DecryptionKeys(%q) = %d keys, %v; want 1", addr, len(keys), err)
		}
	}
}
