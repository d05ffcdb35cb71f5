package keystore

import (
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds for %s: %v", pattern, err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// FuzzDecodePKCS12 feeds what a person may hand ImportPKCS12.
func FuzzDecodePKCS12(f *testing.F) {
	addSeeds(f, filepath.Join("testdata", "pkcs12", "*"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, certs, err := decodePKCS12(data, p12Password)
		if err == nil && (key == nil || len(certs) == 0) {
			t.Fatal("decodePKCS12 succeeded without a key or certificate")
		}
	})
}

// FuzzParseHeader feeds keystore.json as Open and Unlock read it.
func FuzzParseHeader(f *testing.F) {
	addSeeds(f, filepath.Join("testdata", "store*", headerFile))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseHeader(data)
		if err != nil {
			return
		}
		// Parameters that pass the checks must be safe to derive with.
		if h.KDF.MemoryKiB <= 1<<10 && h.KDF.Time <= 2 {
			h.unwrap([]byte(fixturePassphrase))
		}
	})
}

// FuzzParseEntry feeds keys/<id>.json as Open reads it.
func FuzzParseEntry(f *testing.F) {
	addSeeds(f, filepath.Join("testdata", "store*", keysDir, "*.json"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseEntry(data)
		if err != nil {
			return
		}
		if _, err := e.marshal(); err != nil {
			t.Fatalf("a parsed entry does not marshal: %v", err)
		}
		infoOf(e, e.created) // must not panic, e.g. on an entry without emails
	})
}
