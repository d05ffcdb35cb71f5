package certcache

import (
	"context"
	"encoding/asn1"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/storetest"
	"smimeproxy/internal/testpki"
	"smimeproxy/storage"
)

var update = flag.Bool("update", false, "rewrite the files in testdata")

const fixtureAddr = "fixture@example.com"

// TestFixture opens a cache written by an earlier version of this package,
// copied into each kind of store: the format must stay readable. -update
// writes a new one.
func TestFixture(t *testing.T) {
	src := filepath.Join("testdata", "cache")
	if *update {
		writeFixture(t, src)
	}
	storetest.Run(t, []storetest.Test{{Name: "Open", Run: func(t *testing.T, k storetest.Kind) { testFixture(t, k, src) }}})
}

func testFixture(t *testing.T, k storetest.Kind, src string) {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	st := k.New(t, "certcache", Layout)
	if _, err := storage.Copy(context.Background(), st, storage.OpenDir(dir, Layout)); err != nil {
		t.Fatal(err)
	}
	// The fixture's CAs last ten years: look it up as of when it was made.
	var at time.Time
	c, err := OpenDocs(st, &Options{NoSystemRoots: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatalf("Open(fixture): %v", err)
	}
	list := c.List()
	if len(list) != 1 {
		t.Fatalf("fixture List() = %d entries, want 1", len(list))
	}
	at = list[0].Cert.NotBefore.Add(time.Hour)
	e, err := c.Lookup(context.Background(), fixtureAddr)
	if err != nil {
		t.Fatalf("Lookup(fixture): %v", err)
	}
	if e.Source != SourceHarvested || !e.EncryptionKeyPreference || len(e.Capabilities) != 2 || e.Capabilities[1].Parameters == nil {
		t.Errorf("fixture entry = %+v, want harvested, preferred, two capabilities", e)
	}
}

func writeFixture(t *testing.T, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	root := testpki.NewCA(t, "Fixture Root")
	inter := root.Intermediate(t, "Fixture Intermediate")
	cert := inter.Issue(t, fixtureAddr, &testpki.Options{Key: "p256", NotAfter: time.Now().AddDate(100, 0, 0)}).Cert
	c, err := Open(dir, &Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Trust(root.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddIntermediates(inter.Cert); err != nil {
		t.Fatal(err)
	}
	_, err = c.Add(cert, &AddOptions{
		Source: SourceHarvested, SigningTime: time.Now().Add(-time.Hour), EncryptionKeyPreference: true,
		Capabilities: []cms.Capability{
			{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}},
			{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}, Parameters: []byte{2, 1, 128}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzParseEntry feeds certs/<fingerprint>.json as Open reads it.
func FuzzParseEntry(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "cache", certsDir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseEntry(data)
		if err != nil {
			return
		}
		if len(e.Addresses) == 0 {
			t.Fatal("parsed an entry without an address")
		}
		out, err := marshalEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseEntry(out); err != nil {
			t.Fatalf("a marshalled entry does not parse: %v", err)
		}
	})
}
