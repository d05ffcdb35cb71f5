package storage_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/internal/storetest"
	"smimeproxy/storage"
)

var layout = storage.Layout{
	Files: []string{"head.json"},
	Dirs:  map[string]func(string) bool{"items": func(name string) bool { return strings.HasSuffix(name, ".json") }},
	Lock:  true,
}

func put(t *testing.T, d storage.Docs, docs map[string]string) {
	t.Helper()
	err := d.Update(context.Background(), func(tx storage.Tx) error {
		for name, data := range docs {
			if err := tx.Put(name, []byte(data)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, d storage.Docs) map[string]string {
	t.Helper()
	snap, err := d.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, doc := range snap.Docs {
		out[name] = string(doc.Data)
	}
	return out
}

func TestStores(t *testing.T) {
	storetest.Run(t, []storetest.Test{
		{Name: "Documents", Run: testDocuments},
		{Name: "Copy", Run: testCopy},
	})
}

// testDocuments: what is written is read back, Create and Delete say when
// there is a document or none, and a failed update changes nothing that a
// database keeps.
func testDocuments(t *testing.T, k storetest.Kind) {
	d := k.New(t, "keystore", layout)
	before, err := d.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, map[string]string{"head.json": "{}", "items/a.json": "A", "items/b.json": ""})
	if got := load(t, d); len(got) != 3 || got["items/a.json"] != "A" || got["items/b.json"] != "" {
		t.Errorf("Load after Put = %v", got)
	}
	if !d.Changed(before) {
		t.Error("Changed() = false after a write")
	}
	err = d.Update(context.Background(), func(tx storage.Tx) error {
		if err := tx.Create("items/a.json", []byte("again")); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Create over a document = %v, want fs.ErrExist", err)
		}
		if err := tx.Delete("items/none.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Delete of no document = %v, want fs.ErrNotExist", err)
		}
		if _, err := tx.Get("items/none.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get of no document = %v, want fs.ErrNotExist", err)
		}
		return tx.Delete("items/b.json")
	})
	if err != nil {
		t.Fatal(err)
	}
	// Stamps let a reader skip what it holds: only the changed document
	// comes with its data.
	snap, err := d.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, map[string]string{"items/a.json": "A2"})
	again, err := d.Load(context.Background(), func(name, stamp string) bool { return snap.Docs[name].Stamp == stamp })
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Docs["items/a.json"]; string(got.Data) != "A2" || again.Docs["head.json"].Data != nil {
		t.Errorf("Load with have: a.json %q, head.json %q; want the new a.json only", got.Data, again.Docs["head.json"].Data)
	}
	if snap.Same(again) || !again.Same(again) {
		t.Error("Same() does not tell a changed store")
	}
}

// testCopy copies into an empty store and refuses one that holds documents.
func testCopy(t *testing.T, k storetest.Kind) {
	src := k.New(t, "keystore", layout)
	put(t, src, map[string]string{"head.json": "{}", "items/a.json": "A"})
	dst := k.New(t, "certcache", layout)
	if n, err := storage.Copy(context.Background(), dst, src); n != 2 || err != nil {
		t.Fatalf("Copy = %d, %v; want 2 documents", n, err)
	}
	if got, want := load(t, dst), load(t, src); len(got) != 2 || got["items/a.json"] != want["items/a.json"] {
		t.Errorf("copied %v, want %v", got, want)
	}
	if _, err := storage.Copy(context.Background(), dst, src); !errors.Is(err, storage.ErrNotEmpty) {
		t.Errorf("Copy into a store with documents = %v, want ErrNotEmpty", err)
	}
}

// TestDirRefusesForeignNames: a name that is not the layout's (one read
// from a database being copied into a directory) never becomes a path.
func TestDirRefusesForeignNames(t *testing.T) {
	root := t.TempDir()
	d := storage.OpenDir(filepath.Join(root, "store"), layout)
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../escape.json", "items/../../escape.json", "/etc/escape.json", "other/x.json", "items/x.txt", "items/sub/x.json"} {
		err := d.Update(context.Background(), func(tx storage.Tx) error { return tx.Put(name, []byte("x")) })
		if err == nil {
			t.Errorf("Put(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "escape.json")); err == nil {
		t.Error("a file was written outside the store")
	}
}
