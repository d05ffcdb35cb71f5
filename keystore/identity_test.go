package keystore_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"slices"
	"testing"
	"time"

	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
)

func testNewCSRKeyTypes(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	tests := []struct {
		kt   keystore.KeyType
		bits int    // RSA modulus size
		ec   string // EC curve name
	}{
		{kt: "", bits: 3072}, // the default
		{kt: keystore.RSA2048, bits: 2048},
		{kt: keystore.RSA4096, bits: 4096}, // the one RSA-4096 generation in this suite
		{kt: keystore.ECDSAP256, ec: "P-256"},
		{kt: keystore.ECDSAP384, ec: "P-384"},
	}
	for _, tc := range tests {
		t.Run(string(tc.kt), func(t *testing.T) {
			der, info, err := s.NewCSR(keystore.CSRRequest{Email: "Alice@Example.com", KeyType: tc.kt, CommonName: "Alice Example"})
			if err != nil {
				t.Fatalf("NewCSR: %v", err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if !slices.Equal(csr.EmailAddresses, []string{"alice@example.com"}) {
				t.Errorf("CSR subjectAltName emails = %v, want [alice@example.com]", csr.EmailAddresses)
			}
			if csr.Subject.CommonName != "Alice Example" {
				t.Errorf("CSR common name = %q, want Alice Example", csr.Subject.CommonName)
			}
			var subjectEmail any
			for _, n := range csr.Subject.Names {
				if n.Type.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}) {
					subjectEmail = n.Value
				}
			}
			if subjectEmail != "alice@example.com" {
				t.Errorf("CSR subject emailAddress = %v, want alice@example.com", subjectEmail)
			}
			switch k := csr.PublicKey.(type) {
			case *rsa.PublicKey:
				if k.N.BitLen() != tc.bits {
					t.Errorf("RSA key of %d bits, want %d", k.N.BitLen(), tc.bits)
				}
			case *ecdsa.PublicKey:
				if k.Curve.Params().Name != tc.ec {
					t.Errorf("EC key on %s, want %s", k.Curve.Params().Name, tc.ec)
				}
			default:
				t.Errorf("CSR key is %T", k)
			}
			want := tc.kt
			if want == "" {
				want = keystore.DefaultKeyType
			}
			if info.KeyType != want || info.Status != keystore.StatusPending || info.Email != "alice@example.com" || info.Source != keystore.SourceGenerated {
				t.Errorf("NewCSR info = %+v, want a pending %s key for alice@example.com", info, want)
			}
		})
	}
	if got := len(s.Identities()); got != len(tests) {
		t.Errorf("Identities() = %d entries, want %d: every key is kept", got, len(tests))
	}
}

func testNewCSRRejects(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	before := snapshot(t, st)
	_, _, err := s.NewCSR(keystore.CSRRequest{Email: "alice@example.com", KeyType: "rsa1024"})
	if _, ok := errors.AsType[*keystore.KeyTypeError](err); !ok {
		t.Errorf("NewCSR(rsa1024) = %v, want *KeyTypeError", err)
	}
	for _, bad := range []string{"", "alice", "Alice <alice@example.com>", "a@b@c"} {
		if _, _, err := s.NewCSR(keystore.CSRRequest{Email: bad, KeyType: keystore.ECDSAP256}); err == nil {
			t.Errorf("NewCSR(email %q) succeeded", bad)
		}
	}
	sameSnapshot(t, "rejected CSRs", before, snapshot(t, st))
}

func testImportCertificatesSorts(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	root := testpki.NewCA(t, "Root")
	inter := root.Intermediate(t, "Intermediate")
	csr, info := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	leaf := issue(t, inter, "alice@example.com", csr, testpki.Options{})
	bob := inter.Issue(t, "bob@example.com", nil).Cert
	stray := testpki.NewCA(t, "Stray Root").Intermediate(t, "Stray Intermediate").Cert

	res, err := s.ImportCertificates([]*x509.Certificate{root.Cert, bob, inter.Cert, leaf, stray, leaf})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Joined) != 1 || res.Joined[0].KeyID != info.KeyID || !res.Joined[0].New || !res.Joined[0].Cert.Equal(leaf) {
		t.Errorf("Joined = %+v, want the leaf, new, for key %s", res.Joined, info.KeyID)
	}
	checkCerts(t, "Intermediates", res.Intermediates, inter.Cert)
	checkCerts(t, "Others", res.Others, bob)
	checkCerts(t, "Roots", res.Roots, root.Cert)
	checkCerts(t, "UnusedCAs", res.UnusedCAs, stray)
	if len(res.Warnings) != 1 || res.KeyFromPKCS12 {
		t.Errorf("Warnings = %q, KeyFromPKCS12 = %v; want one warning about the root", res.Warnings, res.KeyFromPKCS12)
	}

	ids := s.Identities()
	if len(ids) != 1 || ids[0].Status != keystore.StatusActive {
		t.Fatalf("Identities() = %+v, want one active", ids)
	}
	checkCerts(t, "entry chain", ids[0].Chain, inter.Cert) // the root is never stored
	sg, err := s.Signer("ALICE@example.com", time.Now())
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	if !sg.Cert.Equal(leaf) || !sg.EncryptionCert.Equal(leaf) || sg.KeyID != info.KeyID {
		t.Errorf("Signer = cert %v, encryption cert %v, key %s; want the leaf for both", sg.Cert.Subject, sg.EncryptionCert, sg.KeyID)
	}
	checkCerts(t, "Signer chain", sg.Chain, inter.Cert)
	if !sg.Key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Error("Signer key does not match the CSR's public key")
	}

	again, err := s.ImportCertificates([]*x509.Certificate{leaf, inter.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Joined) != 1 || again.Joined[0].New {
		t.Errorf("re-import Joined = %+v, want the leaf, not new", again.Joined)
	}
}

func checkCerts(t *testing.T, what string, got []*x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	if !slices.EqualFunc(got, want, (*x509.Certificate).Equal) {
		var names []string
		for _, c := range got {
			names = append(names, c.Subject.CommonName)
		}
		t.Errorf("%s = %v, want %d certificates", what, names, len(want))
	}
}

func testIntermediateArrivesLater(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	root := testpki.NewCA(t, "Root")
	inter := root.Intermediate(t, "Intermediate")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, inter, "alice@example.com", csr, testpki.Options{})}); err != nil {
		t.Fatal(err)
	}
	res, err := s.ImportCertificates([]*x509.Certificate{inter.Cert})
	if err != nil {
		t.Fatal(err)
	}
	checkCerts(t, "Intermediates", res.Intermediates, inter.Cert)
	checkCerts(t, "entry chain", s.Identities()[0].Chain, inter.Cert)
}

func testRenewalJoinsEntry(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, info := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	now := time.Now()
	first := issue(t, ca, "alice@example.com", csr, testpki.Options{NotAfter: now.Add(20 * 24 * time.Hour)})
	if _, err := s.ImportCertificates([]*x509.Certificate{first}); err != nil {
		t.Fatal(err)
	}
	if got := s.Identities()[0].Status; got != keystore.StatusExpiring {
		t.Errorf("status with 20 days left = %s, want expiring", got)
	}
	renewed := issue(t, ca, "alice@example.com", csr, testpki.Options{NotAfter: now.Add(400 * 24 * time.Hour)})
	res, err := s.ImportCertificates([]*x509.Certificate{renewed})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Joined) != 1 || res.Joined[0].KeyID != info.KeyID {
		t.Fatalf("renewal Joined = %+v, want key %s", res.Joined, info.KeyID)
	}
	ids := s.Identities()
	if len(ids) != 1 || len(ids[0].Certs) != 2 || ids[0].Status != keystore.StatusActive || !ids[0].NotAfter.Equal(renewed.NotAfter) {
		t.Fatalf("Identities() = %+v, want one active entry with both certificates", ids)
	}
	sg, err := s.Signer("alice@example.com", now)
	if err != nil || !sg.Cert.Equal(renewed) {
		t.Fatalf("Signer = %v, %v; want the renewed certificate", sg, err)
	}
}

func testNewKeyKeepsOldOne(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	now := time.Now()
	oldCSR, oldInfo := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	oldCert := issue(t, ca, "alice@example.com", oldCSR, testpki.Options{NotBefore: now.Add(-800 * 24 * time.Hour), NotAfter: now.Add(-400 * 24 * time.Hour)})
	if _, err := s.ImportCertificates([]*x509.Certificate{oldCert}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Signer("alice@example.com", now); !errors.Is(err, keystore.ErrExpired) {
		t.Fatalf("Signer with only an expired certificate: %v, want ErrExpired", err)
	}
	newCSRReq, newInfo := newCSR(t, s, "alice@example.com", keystore.RSA2048)
	newCert := issue(t, ca, "alice@example.com", newCSRReq, testpki.Options{})
	if _, err := s.ImportCertificates([]*x509.Certificate{newCert}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.DecryptionKeys("alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != newInfo.KeyID || keys[1].KeyID != oldInfo.KeyID {
		t.Fatalf("DecryptionKeys = %+v, want the new key then the old one", keys)
	}
	if !keys[1].Cert.Equal(oldCert) || !keys[1].Key.(*ecdsa.PrivateKey).PublicKey.Equal(oldCSR.PublicKey) {
		t.Error("the old key pair does not match the old certificate")
	}
	sg, err := s.Signer("alice@example.com", now)
	if err != nil || sg.KeyID != newInfo.KeyID {
		t.Fatalf("Signer = %v, %v; want the new key", sg, err)
	}
	statuses := map[string]keystore.Status{}
	for _, id := range s.Identities() {
		statuses[id.KeyID] = id.Status
	}
	if statuses[oldInfo.KeyID] != keystore.StatusExpired || statuses[newInfo.KeyID] != keystore.StatusActive {
		t.Errorf("statuses = %v, want old expired and new active", statuses)
	}
}

func testSeparateSigningAndEncryptionKeys(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	signCSR, signInfo := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	encCSR, encInfo := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	signCert := issue(t, ca, "alice@example.com", signCSR, testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature})
	encCert := issue(t, ca, "alice@example.com", encCSR, testpki.Options{KeyUsage: x509.KeyUsageKeyAgreement})
	if _, err := s.ImportCertificates([]*x509.Certificate{encCert, signCert}); err != nil {
		t.Fatal(err)
	}
	sg, err := s.Signer("alice@example.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sg.KeyID != signInfo.KeyID || !sg.Cert.Equal(signCert) || !sg.EncryptionCert.Equal(encCert) {
		t.Errorf("Signer = key %s cert %v enc %v; want the signing key, its certificate, and the encryption certificate", sg.KeyID, sg.Cert.KeyUsage, sg.EncryptionCert.KeyUsage)
	}
	enc, err := s.EncryptionCert("alice@example.com", time.Now())
	if err != nil || !enc.Equal(encCert) {
		t.Errorf("EncryptionCert = %v, %v; want the encryption certificate", enc, err)
	}
	keys, err := s.DecryptionKeys("alice@example.com")
	if err != nil || len(keys) != 2 {
		t.Fatalf("DecryptionKeys = %d, %v; want both", len(keys), err)
	}
	if !slices.ContainsFunc(keys, func(k keystore.KeyPair) bool { return k.KeyID == encInfo.KeyID && k.Cert.Equal(encCert) }) {
		t.Error("DecryptionKeys lacks the encryption key")
	}
}

func testLookupErrors(t *testing.T, k storetest.Kind) {
	s, st := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	now := time.Now()
	add := func(email string, opts testpki.Options) {
		csr, _ := newCSR(t, s, email, keystore.ECDSAP256)
		if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, email, csr, opts)}); err != nil {
			t.Fatal(err)
		}
	}
	newCSR(t, s, "pending@example.com", keystore.ECDSAP256)
	add("expired@example.com", testpki.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	add("future@example.com", testpki.Options{NotBefore: now.Add(time.Hour)})
	add("enconly@example.com", testpki.Options{KeyUsage: x509.KeyUsageKeyAgreement})
	add("serveronly@example.com", testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	add("signonly@example.com", testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature})
	csr, _ := newCSR(t, s, "renamed@example.com", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, "other@example.com", csr, testpki.Options{NoSAN: true})}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		email        string
		sign, encErr error
	}{
		{"nobody@example.com", keystore.ErrNoIdentity, keystore.ErrNoIdentity},
		{"pending@example.com", keystore.ErrPending, keystore.ErrPending},
		{"expired@example.com", keystore.ErrExpired, keystore.ErrExpired},
		{"future@example.com", keystore.ErrNotYetValid, keystore.ErrNotYetValid},
		{"enconly@example.com", keystore.ErrNoUsableCert, nil},
		{"signonly@example.com", nil, keystore.ErrNoUsableCert},
		{"serveronly@example.com", keystore.ErrNoUsableCert, keystore.ErrNoUsableCert},
		{"renamed@example.com", keystore.ErrNoUsableCert, keystore.ErrNoUsableCert}, // the certificate names no address
	}
	for _, tc := range tests {
		_, err := s.Signer(tc.email, now)
		if !errors.Is(err, tc.sign) || (tc.sign == nil) != (err == nil) {
			t.Errorf("Signer(%s) = %v, want %v", tc.email, err, tc.sign)
		}
		_, err = s.EncryptionCert(tc.email, now)
		if !errors.Is(err, tc.encErr) || (tc.encErr == nil) != (err == nil) {
			t.Errorf("EncryptionCert(%s) = %v, want %v", tc.email, err, tc.encErr)
		}
	}
	if _, err := s.DecryptionKeys("pending@example.com"); !errors.Is(err, keystore.ErrPending) {
		t.Errorf("DecryptionKeys(pending) = %v, want ErrPending", err)
	}
	if _, err := s.DecryptionKeys("expired@example.com"); err != nil {
		t.Errorf("DecryptionKeys(expired) = %v, want the expired key", err)
	}

	locked, err := keystore.OpenDocs(st.Again(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locked.Signer("signonly@example.com", now); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("Signer while locked = %v, want ErrLocked", err)
	}
	if _, err := locked.DecryptionKeys("signonly@example.com"); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("DecryptionKeys while locked = %v, want ErrLocked", err)
	}
	if _, err := locked.EncryptionCert("enconly@example.com", now); err != nil {
		t.Errorf("EncryptionCert while locked = %v, want it to work: no secret needed", err)
	}
	if _, err := locked.Backup("signonly@example.com", "pw", fastBackup); !errors.Is(err, keystore.ErrLocked) {
		t.Errorf("Backup while locked = %v, want ErrLocked", err)
	}
}

func testStatusNotYetValid(t *testing.T, k storetest.Kind) {
	now := time.Now()
	s, st := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	if _, err := s.ImportCertificates([]*x509.Certificate{issue(t, ca, "alice@example.com", csr, testpki.Options{NotBefore: now.Add(24 * time.Hour)})}); err != nil {
		t.Fatal(err)
	}
	if got := s.Identities()[0].Status; got != keystore.StatusNotYetValid {
		t.Errorf("status = %s, want not-yet-valid", got)
	}
	// Options.Now moves the clock for Identities.
	o, err := keystore.OpenDocs(st.Again(), &keystore.Options{Now: func() time.Time { return now.Add(48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Identities()[0].Status; got != keystore.StatusActive {
		t.Errorf("status two days on = %s, want active", got)
	}
}

func testEmailsIndexedFromCertificates(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "alice@example.com", keystore.ECDSAP256)
	// Certificates may name more than the CSR asked for; the subject's
	// emailAddress counts too.
	cert := issue(t, ca, "Alice.Alias@Example.com", csr, testpki.Options{SubjectEmail: true})
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Emails(), []string{"alice.alias@example.com", "alice@example.com"}; !slices.Equal(got, want) {
		t.Errorf("Emails() = %v, want %v", got, want)
	}
	if _, err := s.Signer("alice.alias@example.com", time.Now()); err != nil {
		t.Errorf("Signer(alias): %v", err)
	}
	// The CSR's address is not in the certificate: no signing as it.
	if _, err := s.Signer("alice@example.com", time.Now()); !errors.Is(err, keystore.ErrNoUsableCert) {
		t.Errorf("Signer(CSR address not in certificate) = %v, want ErrNoUsableCert", err)
	}
}

func testRSAKeyUsage(t *testing.T, k storetest.Kind) {
	s, _ := newStore(t, k)
	ca := testpki.NewCA(t, "CA")
	csr, _ := newCSR(t, s, "rsa@example.com", keystore.RSA2048)
	// keyAgreement means nothing for RSA: not an encryption certificate.
	cert := issue(t, ca, "rsa@example.com", csr, testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement})
	if _, err := s.ImportCertificates([]*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EncryptionCert("rsa@example.com", time.Now()); !errors.Is(err, keystore.ErrNoUsableCert) {
		t.Errorf("EncryptionCert(RSA with keyAgreement) = %v, want ErrNoUsableCert", err)
	}
	sg, err := s.Signer("rsa@example.com", time.Now())
	if err != nil || sg.EncryptionCert != nil {
		t.Errorf("Signer = %v, %v; want a signer without an encryption certificate", sg, err)
	}
}
