package smime

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"smimeproxy/internal/hostile"
	"smimeproxy/internal/testpki"
)

// SignedMessage.Encrypt skips the reading that Encrypt does, trusting that
// Sign wrote the message canonical and within the limits. These tests hold
// it to that: for every message, prepare, as Encrypt runs it, splits what
// SignMessage made where SignMessage says, into the same two halves.

// checkSplit fails unless Encrypt's reading of s finds what s records.
func checkSplit(t *testing.T, s *SignedMessage, lim *Limits) {
	t.Helper()
	p, err := prepare(s.Bytes(), lim, 0, NoHeaderProtection)
	if err != nil {
		t.Fatalf("Encrypt would refuse what Sign made: %v\n%q", err, s.Bytes())
	}
	if !p.hasMIMEVer {
		t.Errorf("the signed message has no MIME-Version:\n%q", s.Bytes())
	}
	if got, want := bytes.Join(p.outer, nil), s.msg[:s.header]; !bytes.Equal(got, want) {
		t.Errorf("outer header: Encrypt reads\n%q\nSignMessage recorded\n%q", got, want)
	}
	if got, want := p.content(), s.msg[s.header:]; !bytes.Equal(got, want) {
		t.Errorf("content entity: Encrypt reads\n%q\nSignMessage recorded\n%q", got, want)
	}
}

var splitOptions = []SignOptions{
	{},
	{Opaque: true},
	{HeaderProtection: ProtectClear},
	{HeaderProtection: ProtectCipher},
	{Opaque: true, HeaderProtection: ProtectCipher},
}

func splitSeeds(t testing.TB) [][]byte {
	var msgs [][]byte
	for _, glob := range []string{"testdata/*.eml", "testdata/hostile/*.eml"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			msg, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, msg)
		}
	}
	if len(msgs) == 0 {
		t.Fatal("no testdata")
	}
	return msgs
}

func TestSignedMessageSplit(t *testing.T) {
	id := testIdentity(t)
	for i, msg := range splitSeeds(t) {
		for _, opts := range splitOptions {
			s, err := SignMessage(msg, id, &opts)
			if err != nil {
				t.Logf("message %d, %+v: %v", i, opts, err)
				continue
			}
			checkSplit(t, s, nil)
		}
	}
}

// TestSignedMessageLimits: Sign refuses what would be past the limits once
// signed, so that Encrypt would never refuse what it made.
func TestSignedMessageLimits(t *testing.T) {
	id := testIdentity(t)
	lim := &Limits{MaxDepth: 6, MaxParts: 20, MaxHeaderBytes: 4096}
	for _, tc := range []struct {
		name  string
		msg   []byte
		bound Bound
	}{
		{"parts at the limit", hostile.ManyParts(16), ""},
		{"parts past the limit", hostile.ManyParts(17), BoundParts},
		{"unclosed, parts at the limit", unclosed(hostile.ManyParts(16)), ""},
		{"unclosed, parts past the limit", unclosed(hostile.ManyParts(17)), BoundParts},
		{"depth at the limit", hostile.Nested(5), ""},
		{"depth past the limit", hostile.Nested(6), BoundDepth},
	} {
		if w := Walk(tc.msg, nil); w.Limit != nil {
			t.Fatalf("%s: the test message is past the default limits", tc.name)
		}
		s, err := SignMessage(tc.msg, id, &SignOptions{Limits: lim})
		le, isLimit := errors.AsType[*LimitError](err)
		switch {
		case tc.bound == "" && err != nil:
			t.Errorf("%s: Sign = %v, want a signed message", tc.name, err)
		case tc.bound == "":
			checkSplit(t, s, lim)
		case !isLimit || le.Bound != tc.bound || le.Limit != limitOf(lim, tc.bound):
			t.Errorf("%s: Sign = %v, want the %s limit", tc.name, err, tc.bound)
		}
	}
}

func limitOf(lim *Limits, b Bound) int {
	if b == BoundDepth {
		return lim.MaxDepth
	}
	return lim.MaxParts
}

// unclosed drops the close delimiter that ends msg.
func unclosed(msg []byte) []byte {
	end := bytes.LastIndex(msg, []byte("\r\n--"))
	return msg[:end+2]
}

func FuzzSignedMessage(f *testing.F) {
	for _, msg := range splitSeeds(f) {
		f.Add(msg)
	}
	id := testIdentity(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, opts := range splitOptions {
			if s, err := SignMessage(msg, id, &opts); err == nil {
				checkSplit(t, s, nil)
			}
		}
	})
}

func testIdentity(t testing.TB) *Identity {
	ca := testpki.NewCA(t, "split root")
	alice := ca.Issue(t, "alice@example.com", &testpki.Options{Key: "p256"})
	return &Identity{Cert: alice.Cert, Key: alice.Key, Chain: alice.Chain}
}
