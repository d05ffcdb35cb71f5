package certcache_test

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/storage"
)

// pki is a root the tests trust, with an intermediate under it, and a root
// nobody trusts.
type pki struct {
	root, inter, stranger *testpki.CA
}

func newPKI(t *testing.T) *pki {
	root := testpki.NewCA(t, "Trusted Root")
	return &pki{root: root, inter: root.Intermediate(t, "Trusted Intermediate"), stranger: testpki.NewCA(t, "Stranger Root")}
}

// open makes a cache of kind k that trusts p's root, knows its
// intermediate, and ignores the system roots.
func (p *pki) open(t *testing.T, k storetest.Kind) (*certcache.Cache, *storetest.Store) {
	t.Helper()
	st := k.New(t, "certcache", certcache.Layout)
	c, err := certcache.OpenDocs(st, &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := c.Trust(p.root.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddIntermediates(p.inter.Cert); err != nil {
		t.Fatal(err)
	}
	return c, st
}

// TestStores runs every test that depends on where the cache is kept
// against each kind of storage: a directory and a PostgreSQL database.
func TestStores(t *testing.T) {
	storetest.Run(t, []storetest.Test{
		{Name: "Lookup", Run: testLookup},
		{Name: "LookupNothing", Run: testLookupNothing},
		{Name: "ForAddressExplains", Run: testForAddressExplains},
		{Name: "Validate", Run: testValidate},
		{Name: "AddRejects", Run: testAddRejects},
		{Name: "ReAddMetadata", Run: testReAddMetadata},
		{Name: "Persistence", Run: testPersistence},
		{Name: "DamagedDocument", Run: testDamagedDocument},
		{Name: "RemoveExport", Run: testRemoveExport},
		{Name: "TrustUntrust", Run: testTrustUntrust},
		{Name: "SystemRoots", Run: testSystemRoots},
		{Name: "ConcurrentAddLookup", Run: testConcurrentAddLookup},
		{Name: "ConcurrentHarvest", Run: testConcurrentHarvest},
		{Name: "Generation", Run: testGeneration},
		{Name: "Harvest", Run: testHarvest},
		{Name: "Judge", Run: testJudge},
		{Name: "Status", Run: testStatus},
		{Name: "ValidatedPathHolds", Run: testValidatedPathHolds},
	})
}

// testValidatedPathHolds: a path that validated is not built again for
// every message, but it is no longer used once a certificate on it has
// expired or the intermediate it went through is removed.
func testValidatedPathHolds(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	now := time.Now()
	st := k.New(t, "certcache", certcache.Layout)
	c, err := certcache.OpenDocs(st, &certcache.Options{NoSystemRoots: true, RecheckInterval: -1, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Trust(p.root.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddIntermediates(p.inter.Cert); err != nil {
		t.Fatal(err)
	}
	// The leaf outlives its intermediate.
	leaf := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NotAfter: p.inter.Cert.NotAfter.Add(365 * 24 * time.Hour)}).Cert
	if _, err := c.Add(leaf, &certcache.AddOptions{Source: certcache.SourceHarvested, SigningTime: now}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Lookup(context.Background(), "bob@example.com"); err != nil {
			t.Fatalf("Lookup while the path holds: %v", err)
		}
	}
	now = p.inter.Cert.NotAfter.Add(time.Hour)
	var nv *certcache.NoValidCertError
	if _, err := c.Lookup(context.Background(), "bob@example.com"); !errors.As(err, &nv) || nv.Rejected[0].Reason != certcache.ReasonExpired {
		t.Fatalf("Lookup after the intermediate expired = %v, want its chain expired", err)
	}
	now = time.Now()
	if _, err := c.Lookup(context.Background(), "bob@example.com"); err != nil {
		t.Fatalf("Lookup back within the path's time: %v", err)
	}
	if _, err := c.Remove(certcache.Fingerprint(p.inter.Cert)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(context.Background(), "bob@example.com"); !errors.As(err, &nv) || nv.Rejected[0].Reason != certcache.ReasonUntrusted {
		t.Fatalf("Lookup after its intermediate was removed = %v, want untrusted", err)
	}
}

var (
	aesGCM = cms.Capability{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}}
	aesCBC = cms.Capability{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}}
)

func testLookup(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	now := time.Now()
	day := 24 * time.Hour
	type add struct {
		ca   *testpki.CA
		addr string
		opts testpki.Options
		pref bool // named by SMIMEEncryptionKeyPreference
	}
	tests := []struct {
		name    string
		adds    []add
		lookup  string
		want    int                // index into adds of the chosen certificate; -1: none
		reasons []certcache.Reason // for want == -1, newest first
	}{
		{name: "valid", adds: []add{{ca: p.inter}}, want: 0},
		{name: "valid RSA with keyEncipherment", adds: []add{{ca: p.inter, opts: testpki.Options{Key: "rsa2048"}}}, want: 0},
		{name: "directly under the root", adds: []add{{ca: p.root}}, want: 0},
		{name: "expired only", adds: []add{{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-400 * day), NotAfter: now.Add(-day)}}},
			want: -1, reasons: []certcache.Reason{certcache.ReasonExpired}},
		{name: "expired kept but not chosen", adds: []add{
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-400 * day), NotAfter: now.Add(-day)}},
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-500 * day)}},
		}, want: 1},
		{name: "not yet valid", adds: []add{{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(day)}}},
			want: -1, reasons: []certcache.Reason{certcache.ReasonNotYetValid}},
		{name: "untrusted root", adds: []add{{ca: p.stranger}}, want: -1, reasons: []certcache.Reason{certcache.ReasonUntrusted}},
		{name: "signing-only key usage", adds: []add{{ca: p.inter, opts: testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature}}},
			want: -1, reasons: []certcache.Reason{certcache.ReasonKeyUsage}},
		{name: "RSA with keyAgreement only", adds: []add{{ca: p.inter, opts: testpki.Options{Key: "rsa2048", KeyUsage: x509.KeyUsageKeyAgreement}}},
			want: -1, reasons: []certcache.Reason{certcache.ReasonKeyUsage}},
		{name: "EKU serverAuth only", adds: []add{{ca: p.inter, opts: testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}}},
			want: -1, reasons: []certcache.Reason{certcache.ReasonExtKeyUsage}},
		{name: "EKU any", adds: []add{{ca: p.inter, opts: testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}}}, want: 0},
		{name: "address only in subject emailAddress", adds: []add{{ca: p.inter, opts: testpki.Options{NoSAN: true, SubjectEmail: true}}}, want: 0},
		{name: "case-insensitive, certificate in upper case", adds: []add{{ca: p.inter, addr: "Bob@EXAMPLE.com"}}, want: 0},
		{name: "case-insensitive, lookup in upper case", adds: []add{{ca: p.inter}}, lookup: "BOB@Example.Com", want: 0},
		{name: "normalized lookup: trailing dot", adds: []add{{ca: p.inter}}, lookup: "BOB@Example.Com.", want: 0},
		{name: "normalized lookup: internationalized domain", adds: []add{{ca: p.inter, addr: "bob@xn--bcher-kva.example"}}, lookup: "bob@Bücher.example", want: 0},
		{name: "separate signing and encryption certificates", adds: []add{
			{ca: p.inter, opts: testpki.Options{KeyUsage: x509.KeyUsageKeyAgreement, NotBefore: now.Add(-2 * day)}},
			{ca: p.inter, opts: testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: now.Add(-day)}},
		}, want: 0},
		{name: "newer supersedes older", adds: []add{
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-300 * day)}},
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-day)}},
		}, want: 1},
		{name: "EncryptionKeyPreference beats newer", adds: []add{
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-300 * day)}, pref: true},
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-day)}},
		}, want: 0},
		{name: "preferred but expired loses", adds: []add{
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-300 * day), NotAfter: now.Add(-day)}, pref: true},
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-200 * day)}},
		}, want: 1},
		{name: "every reason listed", adds: []add{
			{ca: p.stranger, opts: testpki.Options{NotBefore: now.Add(-3 * day)}},
			{ca: p.inter, opts: testpki.Options{NotBefore: now.Add(-2 * day), KeyUsage: x509.KeyUsageDigitalSignature}},
		}, want: -1, reasons: []certcache.Reason{certcache.ReasonKeyUsage, certcache.ReasonUntrusted}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := p.open(t, k)
			var certs []*x509.Certificate
			for i, a := range tc.adds {
				addr := a.addr
				if addr == "" {
					addr = "bob@example.com"
				}
				opts := a.opts
				if opts.Key == "" {
					opts.Key = "p256"
				}
				cert := a.ca.Issue(t, addr, &opts).Cert
				certs = append(certs, cert)
				_, err := c.Add(cert, &certcache.AddOptions{
					Source: certcache.SourceHarvested, SigningTime: now.Add(time.Duration(i-10) * time.Minute),
					Capabilities: []cms.Capability{aesGCM}, EncryptionKeyPreference: a.pref,
				})
				if err != nil {
					t.Fatalf("Add: %v", err)
				}
			}
			lookup := cmpOr(tc.lookup, "bob@example.com")
			got, err := c.Lookup(context.Background(), lookup)
			if tc.want >= 0 {
				if err != nil {
					t.Fatalf("Lookup(%s) = %v, want certificate %d", tc.name, err, tc.want)
				}
				if !got.Cert.Equal(certs[tc.want]) {
					t.Fatalf("Lookup(%s) = %s, want certificate %d", tc.name, got.Fingerprint, tc.want)
				}
				if !slices.EqualFunc(got.Capabilities, []cms.Capability{aesGCM}, capEqual) {
					t.Errorf("Lookup(%s) capabilities = %v, want AES-256-GCM", tc.name, got.Capabilities)
				}
				return
			}
			var nv *certcache.NoValidCertError
			if !errors.As(err, &nv) || !errors.Is(err, certcache.ErrNoCert) {
				t.Fatalf("Lookup(%s) = %v, %v; want a *NoValidCertError", tc.name, got, err)
			}
			var reasons []certcache.Reason
			for _, r := range nv.Rejected {
				reasons = append(reasons, r.Reason)
			}
			if !slices.Equal(reasons, tc.reasons) {
				t.Errorf("Lookup(%s) reasons = %v, want %v (%v)", tc.name, reasons, tc.reasons, err)
			}
			// Rejected certificates stay stored and listed.
			if n := len(c.ForAddress(lookup)); n != len(tc.adds) {
				t.Errorf("ForAddress(%s) = %d candidates, want %d", tc.name, n, len(tc.adds))
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func capEqual(a, b cms.Capability) bool {
	return a.Algorithm.Equal(b.Algorithm) && string(a.Parameters) == string(b.Parameters)
}

func testLookupNothing(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	_, err := c.Lookup(context.Background(), "nobody@example.com")
	var nv *certcache.NoValidCertError
	if !errors.Is(err, certcache.ErrNoCert) || errors.As(err, &nv) {
		t.Fatalf("Lookup(unknown) = %v, want ErrNoCert", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Lookup(ctx, "nobody@example.com"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup(canceled) = %v, want context.Canceled", err)
	}
}

func testForAddressExplains(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	now := time.Now()
	good := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NotBefore: now.Add(-48 * time.Hour)}).Cert
	expired := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(-time.Hour)}).Cert
	for _, cert := range []*x509.Certificate{good, expired} {
		if _, err := c.Add(cert, nil); err != nil {
			t.Fatal(err)
		}
	}
	cands := c.ForAddress("bob@example.com")
	if len(cands) != 2 || !cands[0].Best || !cands[0].Cert.Equal(good) || cands[0].Err != nil {
		t.Fatalf("ForAddress = %+v, want the good certificate first, chosen", cands)
	}
	if cands[1].Best || cands[1].Err == nil || cands[1].Err.Reason != certcache.ReasonExpired || !strings.Contains(cands[1].Err.Error(), "expired") {
		t.Errorf("ForAddress[1] = %+v, want the expired one with its reason", cands[1])
	}
}

func testValidate(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", KeyUsage: x509.KeyUsageDigitalSignature}).Cert
	if err := c.Validate(cert, time.Now()); err != nil {
		t.Errorf("Validate(signing certificate) = %v; key usage is the caller's business", err)
	}
	var inv *certcache.InvalidError
	if err := c.Validate(cert, cert.NotAfter.Add(time.Hour)); !errors.As(err, &inv) || inv.Reason != certcache.ReasonExpired {
		t.Errorf("Validate(after notAfter) = %v, want ReasonExpired", err)
	}
	stray := p.stranger.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	if err := c.Validate(stray, time.Now()); !errors.As(err, &inv) || inv.Reason != certcache.ReasonUntrusted {
		t.Errorf("Validate(untrusted) = %v, want ReasonUntrusted", err)
	}
	// The pools are what signature verification uses: the same trust.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Roots(), Intermediates: c.Intermediates(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("Verify with Roots() and Intermediates(): %v", err)
	}
}

func testAddRejects(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	if _, err := c.Add(p.inter.Cert, nil); !errors.Is(err, certcache.ErrCACert) {
		t.Errorf("Add(CA) = %v, want ErrCACert", err)
	}
	noAddr := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NoSAN: true}).Cert
	if _, err := c.Add(noAddr, nil); !errors.Is(err, certcache.ErrNoAddress) {
		t.Errorf("Add(no address) = %v, want ErrNoAddress", err)
	}
}

func testReAddMetadata(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	t0 := time.Now().Add(-time.Hour)
	harvest := func(at time.Time, caps []cms.Capability, pref bool) *certcache.Entry {
		t.Helper()
		e, err := c.Add(cert, &certcache.AddOptions{Source: certcache.SourceHarvested, SigningTime: at, Capabilities: caps, EncryptionKeyPreference: pref})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	first := harvest(t0, []cms.Capability{aesGCM, aesCBC}, true)
	older := harvest(t0.Add(-time.Hour), []cms.Capability{aesCBC}, false)
	if len(older.Capabilities) != 2 || !older.EncryptionKeyPreference || !older.Harvested.Equal(first.Harvested) {
		t.Errorf("an older harvest replaced newer metadata: %+v", older)
	}
	newer := harvest(t0.Add(time.Minute), []cms.Capability{aesCBC}, false)
	if len(newer.Capabilities) != 1 || newer.EncryptionKeyPreference || !newer.Added.Equal(first.Added) {
		t.Errorf("a newer harvest did not win, or Added moved: %+v", newer)
	}
	imported, err := c.Add(cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if imported.Source != certcache.SourceImported || len(imported.Capabilities) != 1 {
		t.Errorf("after an import = %+v, want source imported and the harvested capabilities kept", imported)
	}
	again := harvest(t0.Add(2*time.Minute), nil, false)
	if again.Source != certcache.SourceImported {
		t.Errorf("a harvest after an import turned the source back to %s", again.Source)
	}
	if n := len(c.List()); n != 1 {
		t.Errorf("List() = %d entries after re-adding one certificate, want 1", n)
	}
}

func testPersistence(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, st := p.open(t, k)
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	signing := time.Now().Add(-time.Hour).Truncate(time.Second)
	added, err := c.Add(cert, &certcache.AddOptions{Source: certcache.SourceHarvested, SigningTime: signing, Capabilities: []cms.Capability{aesGCM, {Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}, Parameters: []byte{2, 1, 128}}}, EncryptionKeyPreference: true})
	if err != nil {
		t.Fatal(err)
	}

	re, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := re.Lookup(context.Background(), "bob@example.com")
	if err != nil {
		t.Fatalf("Lookup after reopening: %v", err)
	}
	if !got.Cert.Equal(cert) || got.Source != certcache.SourceHarvested || !got.Harvested.Equal(signing) || !got.Added.Equal(added.Added) ||
		!got.EncryptionKeyPreference || !slices.EqualFunc(got.Capabilities, added.Capabilities, capEqual) {
		t.Errorf("after reopening: %+v\nwant %+v", got, added)
	}
	checkCerts(t, "Anchors", re.Anchors(), p.root.Cert)
	checkCerts(t, "IntermediateCerts", re.IntermediateCerts(), p.inter.Cert)
}

// TestFileModes: the directory and its files are private to their owner.
func TestFileModes(t *testing.T) {
	p := newPKI(t)
	dir := filepath.Join(t.TempDir(), "cache") // Open makes it
	c, err := certcache.Open(dir, &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Trust(p.root.Cert); err != nil {
		t.Fatal(err)
	}
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	if _, err := c.Add(cert, nil); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "certs", "anchors", "intermediates"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("mode of %s/ = %v, %v; want 0700", sub, fi.Mode(), err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode of %s = %v, %v; want 0600", f, fi.Mode(), err)
		}
	}
	if want := filepath.Join(dir, "certs", certcache.Fingerprint(cert)+".json"); !slices.Contains(files, want) {
		t.Errorf("files = %v, want %s", files, want)
	}
}

func checkCerts(t *testing.T, what string, got []*x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	if !slices.EqualFunc(got, want, (*x509.Certificate).Equal) {
		t.Errorf("%s = %d certificates, want %d (or others)", what, len(got), len(want))
	}
}

// TestCrashLeftovers: what a crash in the middle of a write leaves behind
// must not break Open.
func TestCrashLeftovers(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	c, err := certcache.Open(dir, &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	if _, err := c.Add(cert, nil); err != nil {
		t.Fatal(err)
	}
	fp := certcache.Fingerprint(cert)
	old := time.Now().Add(-time.Hour)
	leftovers := map[string]time.Time{
		"certs/." + fp + ".json.tmp-1234":       old,
		"anchors/.0123.pem.tmp-99":              old,
		"certs/." + fp + ".json.tmp-inprogress": time.Now(), // another process is writing it now
		"certs/README":                          old,        // not ours: ignored, kept
	}
	for name, mtime := range leftovers {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(`{"version":1,"ce`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	re, err := certcache.Open(dir, &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatalf("Open with leftovers: %v", err)
	}
	if len(re.List()) != 1 {
		t.Errorf("List() with leftovers = %d entries, want 1", len(re.List()))
	}
	for name, mtime := range leftovers {
		_, err := os.Stat(filepath.Join(dir, name))
		if stale := strings.Contains(name, ".tmp-") && mtime.Equal(old); stale != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: stat = %v; stale temporary files go, everything else stays", name, err)
		}
	}
}

// testDamagedDocument: a damaged certificate document is named, not
// skipped silently, and a running cache keeps its last good state.
func testDamagedDocument(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, st := p.open(t, k)
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	if _, err := c.Add(cert, nil); err != nil {
		t.Fatal(err)
	}
	name := "certs/" + certcache.Fingerprint(cert) + ".json"
	if err := st.Update(context.Background(), func(tx storage.Tx) error { return tx.Put(name, []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := certcache.OpenDocs(st.Again(), nil); err == nil || !strings.Contains(err.Error(), st.Where(name)) {
		t.Errorf("Open with a damaged document = %v, want an error naming %s", err, st.Where(name))
	}
	if err := c.Reload(); err == nil {
		t.Error("Reload with a damaged document succeeded")
	}
	if _, err := c.Lookup(context.Background(), "bob@example.com"); err != nil {
		t.Errorf("Lookup after a failed Reload: %v", err)
	}
}

func testRemoveExport(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	now := time.Now()
	b1 := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NotBefore: now.Add(-48 * time.Hour)}).Cert
	b2 := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256", NotBefore: now.Add(-24 * time.Hour)}).Cert
	carol := p.inter.Issue(t, "carol@example.com", &testpki.Options{Key: "p256"}).Cert
	for _, cert := range []*x509.Certificate{b1, b2, carol} {
		if _, err := c.Add(cert, nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Export("BOB@example.com")
	if err != nil {
		t.Fatal(err)
	}
	checkCerts(t, "Export(bob)", got, b2, b1)
	if _, err := c.Export("dave@example.com"); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Export(unknown) = %v, want ErrNoCert", err)
	}

	colons := strings.ToUpper(certcache.Fingerprint(carol))
	var parts []string
	for i := 0; i < len(colons); i += 2 {
		parts = append(parts, colons[i:i+2])
	}
	if n, err := c.Remove(strings.Join(parts, ":")); n != 1 || err != nil {
		t.Errorf("Remove(carol's fingerprint, OpenSSL style) = %d, %v; want 1", n, err)
	}
	if _, err := c.Get(certcache.Fingerprint(carol)); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Get(removed) = %v, want ErrNoCert", err)
	}
	if e, err := c.Get(certcache.Fingerprint(b1)); err != nil || !e.Cert.Equal(b1) {
		t.Errorf("Get(b1) = %v, %v", e, err)
	}
	if n, err := c.Remove("bob@example.com"); n != 2 || err != nil {
		t.Errorf("Remove(bob) = %d, %v; want 2", n, err)
	}
	if n, err := c.Remove("bob@example.com"); n != 0 || !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Remove(bob) again = %d, %v; want ErrNoCert", n, err)
	}
	if _, err := c.Remove("not-a-fingerprint"); err == nil || errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Remove(garbage) = %v, want a usage error", err)
	}
	if n, err := c.Remove(certcache.Fingerprint(p.inter.Cert)); n != 1 || err != nil || len(c.IntermediateCerts()) != 0 {
		t.Errorf("Remove(intermediate) = %d, %v; want it gone", n, err)
	}
	if len(c.List()) != 0 {
		t.Errorf("List() = %v after removing everything", c.List())
	}
}

func testTrustUntrust(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, err := certcache.OpenDocs(k.New(t, "certcache", certcache.Layout), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	leaf := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	if _, err := c.Add(leaf, nil); err != nil {
		t.Fatal(err)
	}
	lookupReason := func() certcache.Reason {
		t.Helper()
		_, err := c.Lookup(context.Background(), "bob@example.com")
		var nv *certcache.NoValidCertError
		if errors.As(err, &nv) {
			return nv.Rejected[0].Reason
		}
		if err != nil {
			t.Fatal(err)
		}
		return ""
	}

	// An intermediate builds paths but never becomes an anchor.
	if n, err := c.AddIntermediates(p.inter.Cert); n != 1 || err != nil {
		t.Fatalf("AddIntermediates = %d, %v", n, err)
	}
	if n, err := c.AddIntermediates(p.inter.Cert); n != 0 || err != nil {
		t.Errorf("AddIntermediates again = %d, %v; want 0 new", n, err)
	}
	if got := c.Anchors(); len(got) != 0 {
		t.Errorf("Anchors() after AddIntermediates = %d, want none", len(got))
	}
	if got := lookupReason(); got != certcache.ReasonUntrusted {
		t.Errorf("with only the intermediate: %q, want untrusted", got)
	}
	if err := c.Trust(p.inter.Cert); !errors.Is(err, certcache.ErrNotRoot) {
		t.Errorf("Trust(intermediate) = %v, want ErrNotRoot", err)
	}
	if _, err := c.AddIntermediates(p.root.Cert); err == nil {
		t.Error("AddIntermediates(root) succeeded")
	}
	if _, err := c.AddIntermediates(leaf); err == nil {
		t.Error("AddIntermediates(end-entity) succeeded")
	}

	if err := c.Trust(p.root.Cert); err != nil {
		t.Fatal(err)
	}
	checkCerts(t, "Anchors", c.Anchors(), p.root.Cert)
	if got := lookupReason(); got != "" {
		t.Errorf("with the root trusted: %q, want usable", got)
	}
	if err := c.Untrust(certcache.Fingerprint(p.root.Cert)); err != nil {
		t.Fatal(err)
	}
	if got := lookupReason(); got != certcache.ReasonUntrusted {
		t.Errorf("after Untrust: %q, want untrusted", got)
	}
	if err := c.Untrust(certcache.Fingerprint(p.root.Cert)); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Untrust again = %v, want ErrNoCert", err)
	}
	if err := c.Untrust(certcache.Fingerprint(p.inter.Cert)); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Untrust(intermediate) = %v, want ErrNoCert: it was never an anchor", err)
	}
	checkCerts(t, "IntermediateCerts", c.IntermediateCerts(), p.inter.Cert)
}

func testSystemRoots(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, err := certcache.OpenDocs(k.New(t, "certcache", certcache.Layout), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add(p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert, nil); err != nil {
		t.Fatal(err)
	}
	// A test CA is in no system store.
	if _, err := c.Lookup(context.Background(), "bob@example.com"); !errors.Is(err, certcache.ErrNoCert) {
		t.Errorf("Lookup under an untrusted test CA with system roots = %v, want rejected", err)
	}
}

// testConcurrentAddLookup runs harvests and lookups at once, while another
// Cache on the same store (the CLI) adds certificates the first one must
// pick up without Reload.
func testConcurrentAddLookup(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	_, st := p.open(t, k)
	daemon, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true, RecheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	certs := make([]*x509.Certificate, 2*n)
	for i := range certs {
		certs[i] = p.inter.Issue(t, fmt.Sprintf("user%d@example.com", i), &testpki.Options{Key: "p256"}).Cert
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		wg.Go(func() {
			if _, err := daemon.Add(certs[i], &certcache.AddOptions{Source: certcache.SourceHarvested}); err != nil {
				errs <- err
			}
			for range 5 {
				if _, err := daemon.Lookup(context.Background(), fmt.Sprintf("user%d@example.com", i)); err != nil {
					errs <- err
				}
				daemon.List()
			}
		})
		wg.Go(func() {
			if _, err := cli.Add(certs[n+i], nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		for range 10 {
			if err := daemon.Reload(); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(daemon.List()) != 2*n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(daemon.List()); got != 2*n {
		t.Fatalf("daemon sees %d certificates, want %d", got, 2*n)
	}
	for i := n; i < 2*n; i++ {
		if _, err := daemon.Lookup(context.Background(), fmt.Sprintf("user%d@example.com", i)); err != nil {
			t.Errorf("daemon Lookup of a certificate the CLI added: %v", err)
		}
	}
}

func testHarvest(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	signing := p.inter.Issue(t, "dana@example.org", &testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature})
	enc := p.inter.Issue(t, "dana@example.org", &testpki.Options{KeyUsage: x509.KeyUsageKeyEncipherment})
	signed := time.Now().Add(-time.Hour)

	if err := c.Harvest(signing.Cert, enc.Cert, signed, []cms.Capability{aesGCM}); err != nil {
		t.Fatalf("Harvest: %v", err)
	}
	got, err := c.Lookup(context.Background(), "dana@example.org")
	if err != nil {
		t.Fatalf("Lookup after Harvest: %v", err)
	}
	if !got.Cert.Equal(enc.Cert) || !got.EncryptionKeyPreference || got.Source != certcache.SourceHarvested {
		t.Errorf("Lookup after Harvest = %s (preferred %v, source %s), want the encryption certificate, preferred, harvested",
			got.Cert.Subject, got.EncryptionKeyPreference, got.Source)
	}
	if len(got.Capabilities) != 1 || !capEqual(got.Capabilities[0], aesGCM) {
		t.Errorf("Lookup after Harvest capabilities = %v, want %v", got.Capabilities, aesGCM)
	}
	if n := len(c.ForAddress("dana@example.org")); n != 2 {
		t.Errorf("ForAddress after Harvest has %d certificates, want both the signing and the encryption one", n)
	}

	erin := p.inter.Issue(t, "erin@example.org", nil)
	if err := c.Harvest(erin.Cert, erin.Cert, signed, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Lookup(context.Background(), "erin@example.org"); err != nil || !got.EncryptionKeyPreference {
		t.Errorf("Lookup after Harvest of one certificate named for both = %v, %v; want it, preferred", got, err)
	}
}

// testConcurrentHarvest: two instances harvest the same certificate at the
// same moment, from messages signed at different times: no error, one
// document, and the newest message's capabilities win.
func testConcurrentHarvest(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	_, st := p.open(t, k)
	var instances [2]*certcache.Cache
	for i := range instances {
		c, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true, RecheckInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		instances[i] = c
	}
	cert := p.inter.Issue(t, "bob@example.com", &testpki.Options{Key: "p256"}).Cert
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	const rounds = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	for i, c := range instances {
		wg.Go(func() {
			for r := range rounds {
				caps := []cms.Capability{aesCBC}
				if i == 1 && r == rounds-1 {
					caps = []cms.Capability{aesGCM} // the newest message
				}
				at := base.Add(time.Duration(r*2+i) * time.Second)
				if err := c.Harvest(cert, cert, at, caps); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Harvest: %v", err)
	}
	snap, err := st.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var certs []string
	for _, name := range snap.Names() {
		if strings.HasPrefix(name, "certs/") {
			certs = append(certs, name)
		}
	}
	if len(certs) != 1 {
		t.Fatalf("documents after two instances harvested one certificate: %v, want one", certs)
	}
	re, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := re.Lookup(context.Background(), "bob@example.com")
	want := base.Add(time.Duration(rounds*2-1) * time.Second)
	if err != nil || !got.Harvested.Equal(want) || len(got.Capabilities) != 1 || !capEqual(got.Capabilities[0], aesGCM) {
		t.Fatalf("after concurrent harvests = %+v, %v; want harvested %s with the newest message's capabilities", got, err, want)
	}
}

// testGeneration: the generation moves when another process's write is
// picked up, and only then.
func testGeneration(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	cli, st := p.open(t, k)
	daemon, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true, RecheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	g0 := daemon.Generation()
	if again := daemon.Generation(); again != g0 {
		t.Fatalf("Generation() moved from %d to %d with nothing changed", g0, again)
	}
	if err := cli.Untrust(certcache.Fingerprint(p.root.Cert)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for daemon.Generation() == g0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g1 := daemon.Generation(); g1 == g0 || len(daemon.Anchors()) != 0 {
		t.Fatalf("after another process removed the anchor: generation %d (was %d), %d anchors; want it moved and none", g1, g0, len(daemon.Anchors()))
	}
}

// testJudge: a certificate from elsewhere gets the verdict a stored one
// would, with the intermediates it came with, and never names another
// address.
func testJudge(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	c, _ := p.open(t, k)
	other := p.root.Intermediate(t, "Unstored Intermediate")
	tests := []struct {
		name   string
		addr   string
		cert   *x509.Certificate
		inters []*x509.Certificate
		want   certcache.Reason // "": usable
	}{
		{"usable", "dora@example.com", p.inter.Issue(t, "dora@example.com", nil).Cert, nil, ""},
		{"with the intermediate it came with", "dora@example.com", other.Issue(t, "dora@example.com", nil).Cert, []*x509.Certificate{other.Cert}, ""},
		{"without it", "dora@example.com", other.Issue(t, "dora@example.com", nil).Cert, nil, certcache.ReasonUntrusted},
		{"for another address", "dora@example.com", p.inter.Issue(t, "eve@example.com", nil).Cert, nil, certcache.ReasonAddress},
		{"untrusted", "dora@example.com", p.stranger.Issue(t, "dora@example.com", nil).Cert, nil, certcache.ReasonUntrusted},
		{"for signing only", "dora@example.com", p.inter.Issue(t, "dora@example.com", &testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature}).Cert, nil, certcache.ReasonKeyUsage},
		{"expired", "dora@example.com", p.inter.Issue(t, "dora@example.com", &testpki.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).Cert, nil, certcache.ReasonExpired},
	}
	for _, tc := range tests {
		cd := c.Judge(tc.addr, tc.cert, tc.inters)
		switch {
		case tc.want == "" && (cd.Err != nil || len(cd.Chain) < 2 || !cd.Chain[len(cd.Chain)-1].Equal(p.root.Cert)):
			t.Errorf("Judge(%s) = %+v, want usable with its chain to the root", tc.name, cd)
		case tc.want != "" && (cd.Err == nil || cd.Err.Reason != tc.want):
			t.Errorf("Judge(%s) = %v, want %s", tc.name, cd.Err, tc.want)
		case cd.Source != certcache.SourceDirectory:
			t.Errorf("Judge(%s).Source = %s, want %s", tc.name, cd.Source, certcache.SourceDirectory)
		}
	}
	if len(c.List()) != 0 {
		t.Errorf("after Judge the cache holds %d certificates, want none", len(c.List()))
	}
}

// testStatus: revocation statuses are kept and seen by another process;
// only a change of what is revoked moves the generation.
func testStatus(t *testing.T, k storetest.Kind) {
	p := newPKI(t)
	cli, st := p.open(t, k)
	daemon, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true, RecheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	fp := certcache.Fingerprint(p.inter.Issue(t, "dora@example.com", nil).Cert)
	if _, ok := cli.Status(fp); ok {
		t.Fatal("Status of a certificate never checked = ok, want none")
	}
	now := time.Now().UTC().Truncate(time.Second)
	good := certcache.Status{State: "good", Method: "ocsp", URL: "http://ocsp.example.com", Checked: now, Until: now.Add(time.Hour)}
	g0 := daemon.Generation()
	if err := cli.SetStatus(fp, good); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the status reaches the other process", func() bool { s, ok := daemon.Status(fp); return ok && s == good })
	if g := daemon.Generation(); g != g0 {
		t.Errorf("a status saying good moved the generation from %d to %d", g0, g)
	}
	revoked := good
	revoked.State, revoked.Reason, revoked.RevokedAt = certcache.StateRevoked, "keyCompromise", now.Add(-time.Hour)
	if err := cli.SetStatus(fp, revoked); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation moves the other process's generation", func() bool { return daemon.Generation() != g0 })
	if s, _ := daemon.Status(fp); s != revoked {
		t.Errorf("Status = %+v, want %+v", s, revoked)
	}
	// Stale for more than 30 days: removed at the next write.
	old := certcache.Fingerprint(p.inter.Issue(t, "old@example.com", nil).Cert)
	if err := cli.SetStatus(old, certcache.Status{State: "good", Checked: now.Add(-60 * 24 * time.Hour), Until: now.Add(-59 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := cli.SetStatus(fp, good); err != nil {
		t.Fatal(err)
	}
	if _, ok := cli.Status(old); ok {
		t.Error("a status stale for 59 days is still kept after the next write, want it removed")
	}
	// A status is a cache of a check: a damaged one is ignored, not an
	// error that would stop the cache from opening.
	if err := st.Update(context.Background(), func(tx storage.Tx) error { return tx.Put("status/"+fp+".json", []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	again, err := certcache.OpenDocs(st.Again(), &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatalf("Open with a damaged status = %v, want it ignored", err)
	}
	if _, ok := again.Status(fp); ok {
		t.Error("a damaged status was read as one")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
