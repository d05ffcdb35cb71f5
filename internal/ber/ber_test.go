package ber_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"smimeproxy/internal/ber"
	"smimeproxy/internal/hostile"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"der unchanged", "30 03 02 01 05", "30 03 02 01 05"},
		{"indefinite", "30 80 02 01 05 00 00", "30 03 02 01 05"},
		{"nested indefinite", "30 80 a0 80 04 01 aa 00 00 00 00", "30 05 a0 03 04 01 aa"},
		{"long length not minimal", "04 82 00 02 aa bb", "04 02 aa bb"},
		{"constructed octets", "24 80 04 02 aa bb 04 01 cc 00 00", "04 03 aa bb cc"},
		{"nested constructed octets", "24 09 24 80 04 01 aa 00 00 04 00", "04 01 aa"},
		{"empty constructed octets", "24 80 00 00", "04 00"},
		{"constructed bits", "23 09 03 02 00 aa 03 03 04 bb c0", "03 04 04 aa bb c0"},
		{"constructed utf8", "2c 80 0c 01 61 0c 01 62 00 00", "0c 02 61 62"},
		{"implicit tag kept constructed", "a0 80 04 01 aa 04 01 bb 00 00", "a0 06 04 01 aa 04 01 bb"},
		{"set order kept", "31 06 02 01 09 02 01 01", "31 06 02 01 09 02 01 01"},
		{"trailing bytes ignored", "30 00 ff ff", "30 00"},
		{"high tag number", "bf 81 00 80 05 00 00 00", "bf 81 00 02 05 00"},
		{"long content", "04 81 80" + strings.Repeat("00", 128), "04 81 80" + strings.Repeat("00", 128)},
	}
	for _, tc := range tests {
		got, err := ber.Normalize(unhex(t, tc.in))
		if err != nil {
			t.Errorf("Normalize(%s): %v", tc.name, err)
			continue
		}
		if want := unhex(t, tc.want); !bytes.Equal(got, want) {
			t.Errorf("Normalize(%s) = % x, want % x", tc.name, got, want)
		}
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"truncated", "30 05 02 01"},
		{"missing end-of-contents", "30 80 02 01 05"},
		{"indefinite primitive", "04 80 aa 00 00"},
		{"length beyond input", "04 84 7f ff ff ff aa"},
		{"huge length", "04 88 ff ff ff ff ff ff ff ff"},
		{"child overruns parent", "30 02 04 02 aa bb"},
		{"stray end-of-contents", "30 02 00 00"},
		{"mixed string segments", "24 80 02 01 00 00 00"},
		{"bit string with unused bits inside", "23 08 03 02 04 a0 03 02 00 bb"},
		{"empty bit string segment", "23 02 03 00"},
		{"reserved length", "04 ff"},
		{"endless tag", "1f 81 81"},
		{"low tag in high form", "1f 05 00"},
		{"tag with a leading zero digit", "1f 80 7f 00"},
		{"tag beyond 31 bits", "1f 88 80 80 80 00 00"},
		{"deep", strings.Repeat("30 80 ", ber.MaxDepth+2)},
	}
	for _, tc := range tests {
		got, err := ber.Normalize(unhex(t, tc.in))
		if err == nil {
			t.Errorf("Normalize(%s) = % x, want an error", tc.name, got)
		} else if !strings.HasPrefix(err.Error(), "ber: ") {
			t.Errorf("Normalize(%s) error %q lacks the package prefix", tc.name, err)
		}
	}
}

// TestNormalizeHostile: BER nested 100,000 levels deep is refused at
// MaxDepth, after a bounded amount of work; lengths of 4 GB and more are
// refused at once; many tiny elements cost memory in proportion to the
// input, not a hundred times it.
func TestNormalizeHostile(t *testing.T) {
	deep := hostile.DeepBER(100000)
	if _, err := ber.Normalize(deep); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Errorf("Normalize(100,000 levels) = %v, want nested too deeply", err)
	}
	shallow := hostile.DeepBER(ber.MaxDepth + 10)
	if a, b := testing.AllocsPerRun(5, func() { _, _ = ber.Normalize(shallow) }), testing.AllocsPerRun(5, func() { _, _ = ber.Normalize(deep) }); b > a {
		t.Errorf("100,000 levels take %.0f allocations, %d levels %.0f: the work is not bounded", b, ber.MaxDepth+10, a)
	}
	for _, in := range []string{"30 84 ff ff ff ff 06 09", "30 88 7f ff ff ff ff ff ff ff 05 00", "30 80 30 84 7f ff ff ff 02 01 00 00 00"} {
		if _, err := ber.Normalize(unhex(t, in)); err == nil {
			t.Errorf("Normalize(%s) accepted an absurd length", in)
		}
	}
	tiny := append([]byte{0x30, 0x80}, bytes.Repeat([]byte{0x04, 0x00}, 1<<19)...)
	tiny = append(tiny, 0, 0)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	der, err := ber.Normalize(tiny)
	runtime.ReadMemStats(&after)
	if err != nil || len(der) != 5+1<<20 {
		t.Fatalf("Normalize(1 MiB of empty strings) = %d bytes, %v", len(der), err)
	}
	if used := after.TotalAlloc - before.TotalAlloc; used > 3*uint64(len(tiny)) {
		t.Errorf("Normalize allocated %d bytes for %d bytes of input", used, len(tiny))
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, in string
		want     ber.Header
		rest     string
	}{
		{"sequence", "30 03 02 01 05", ber.Header{Class: ber.ClassUniversal, Tag: ber.TagSequence, Constructed: true, Length: 3}, "02 01 05"},
		{"indefinite", "30 80 06 01 2a 00 00", ber.Header{Tag: ber.TagSequence, Constructed: true, Indefinite: true}, "06 01 2a 00 00"},
		{"long length", "04 81 01 aa", ber.Header{Tag: ber.TagOctetString, Length: 1}, "aa"},
		{"context", "a0 00", ber.Header{Class: ber.ClassContextSpecific, Constructed: true}, ""},
		{"high tag", "5f 81 00 00", ber.Header{Class: ber.ClassApplication, Tag: 128}, ""},
	}
	for _, tc := range tests {
		h, rest, err := ber.ReadHeader(unhex(t, tc.in))
		if err != nil {
			t.Errorf("ReadHeader(%s): %v", tc.name, err)
			continue
		}
		if h != tc.want || !bytes.Equal(rest, unhex(t, tc.rest)) {
			t.Errorf("ReadHeader(%s) = %+v, % x; want %+v, %s", tc.name, h, rest, tc.want, tc.rest)
		}
	}
	if _, _, err := ber.ReadHeader(unhex(t, "04 05 aa")); err == nil {
		t.Error("ReadHeader(length beyond the input) succeeded")
	}
}

// TestParse walks and edits a tree as a PKCS #12 reader does: a SEQUENCE
// holding an INTEGER and [0] IMPLICIT OCTET STRING sent in segments.
func TestParse(t *testing.T) {
	n, err := ber.Parse(unhex(t, "30 80 02 01 03 a0 80 04 01 aa 04 02 bb cc 00 00 00 00"))
	if err != nil {
		t.Fatal(err)
	}
	if n.Class() != ber.ClassUniversal || n.Tag() != ber.TagSequence || !n.Constructed() || len(n.Children()) != 2 {
		t.Fatalf("Parse: got class %#x tag %d constructed %v with %d children, want a SEQUENCE of 2",
			n.Class(), n.Tag(), n.Constructed(), len(n.Children()))
	}
	version, octets := n.Children()[0], n.Children()[1]
	if got := version.Bytes(); !bytes.Equal(got, []byte{3}) {
		t.Errorf("INTEGER content = % x, want 03", got)
	}
	if err := octets.Join(ber.TagOctetString); err != nil {
		t.Fatalf("Join: %v", err)
	}
	if got, want := octets.Bytes(), unhex(t, "aa bb cc"); octets.Constructed() || !bytes.Equal(got, want) {
		t.Errorf("joined [0] = % x (constructed %v), want primitive % x", got, octets.Constructed(), want)
	}
	if got, want := n.DER(), unhex(t, "30 08 02 01 03 80 03 aa bb cc"); !bytes.Equal(got, want) {
		t.Errorf("DER() = % x, want % x", got, want)
	}
	version.SetBytes(bytes.Repeat([]byte{1}, 200))
	want := append(unhex(t, "30 81 d0 02 81 c8"), bytes.Repeat([]byte{1}, 200)...)
	if got := n.DER(); !bytes.Equal(got, append(want, unhex(t, "80 03 aa bb cc")...)) {
		t.Errorf("DER() after SetBytes = % x", got)
	}

	if _, err := ber.Parse(unhex(t, "30 00 00")); err == nil {
		t.Error("Parse accepted a byte after the element")
	}
	foreign, err := ber.Parse(unhex(t, "a0 03 02 01 05"))
	if err != nil {
		t.Fatal(err)
	}
	if err := foreign.Join(ber.TagOctetString); err == nil {
		t.Error("Join accepted an INTEGER as an OCTET STRING segment")
	}
}

// FuzzNormalize checks that Normalize never panics, that its output is a
// fixed point, and that cryptobyte, which reads only DER, reads it.
func FuzzNormalize(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.p*"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, seed := range []string{
		"30 80 24 80 04 01 aa 00 00 00 00",
		"23 09 03 02 00 aa 03 03 04 bb c0",
		"bf 81 00 80 05 00 00 00",
		"a0 80 04 01 aa 04 01 bb 00 00",
	} {
		f.Add(unhex(f, seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		der, err := ber.Normalize(data)
		// Normalize builds no tree but must read exactly as Parse does.
		if n, perr := ber.Parse(data); perr == nil && (err != nil || !bytes.Equal(der, n.DER())) {
			t.Fatalf("Normalize(% x) = % x, %v; Parse gives % x", data, der, err, n.DER())
		}
		if err != nil {
			return
		}
		again, err := ber.Normalize(der)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("DER output is not a fixed point: % x -> % x (%v)", der, again, err)
		}
		n, err := ber.Parse(der)
		if err != nil || !bytes.Equal(n.DER(), der) {
			t.Fatalf("Parse(% x) disagrees with Normalize (%v)", der, err)
		}
		checkDER(t, cryptobyte.String(der))
	})
}

// checkDER reads every element of s with cryptobyte, descending into
// constructed ones. It stops at a high tag number, which cryptobyte cannot
// read.
func checkDER(t *testing.T, s cryptobyte.String) {
	t.Helper()
	for !s.Empty() {
		if s[0]&0x1f == 0x1f {
			return
		}
		var content cryptobyte.String
		var tag cbasn1.Tag
		if !s.ReadAnyASN1(&content, &tag) {
			t.Fatalf("cryptobyte cannot read the DER: % x", s)
		}
		if tag == cbasn1.OCTET_STRING.Constructed() || tag == cbasn1.BIT_STRING.Constructed() {
			t.Fatalf("constructed string in DER: % x", content)
		}
		if tag&0x20 != 0 { // constructed
			checkDER(t, content)
		}
	}
}
