package cms

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
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
		{"constructed bits", "23 09 03 02 00 aa 03 03 04 bb c0", "03 04 04 aa bb c0"},
		{"implicit tag kept constructed", "a0 80 04 01 aa 04 01 bb 00 00", "a0 06 04 01 aa 04 01 bb"},
		{"set order kept", "31 06 02 01 09 02 01 01", "31 06 02 01 09 02 01 01"},
		{"trailing bytes ignored", "30 00 ff ff", "30 00"},
		{"high tag number", "bf 81 00 80 05 00 00 00", "bf 81 00 02 05 00"},
		{"long content", "04 81 80" + strings.Repeat("00", 128), "04 81 80" + strings.Repeat("00", 128)},
	}
	for _, tc := range tests {
		got, err := normalize(unhex(t, tc.in))
		if err != nil {
			t.Errorf("normalize(%s): %v", tc.name, err)
			continue
		}
		if want := unhex(t, tc.want); !bytes.Equal(got, want) {
			t.Errorf("normalize(%s) = % x, want % x", tc.name, got, want)
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
		{"reserved length", "04 ff"},
		{"endless tag", "1f 81 81"},
		{"deep", strings.Repeat("30 80 ", maxBERDepth+2)},
	}
	for _, tc := range tests {
		if got, err := normalize(unhex(t, tc.in)); err == nil {
			t.Errorf("normalize(%s) = % x, want an error", tc.name, got)
		}
	}
}

func FuzzBER(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "*.p7?"))
	for _, name := range names {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte{0x30, 0x80, 0x24, 0x80, 0x04, 0x01, 0xaa, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		der, err := normalize(data)
		if err != nil {
			return
		}
		again, err := normalize(der)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("DER output is not a fixed point: % x -> % x (%v)", der, again, err)
		}
		s := cryptobyte.String(der)
		var elem cryptobyte.String
		if der[0]&0x1f != 0x1f && (!s.ReadAnyASN1Element(&elem, nil) || !s.Empty()) {
			t.Fatalf("cryptobyte cannot read the DER: % x", der)
		}
	})
}
