package ascii

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", true}, {"plain text\r\n", true}, {"\x7f\x00", true}, {"\x80", false},
		{"abcdefg\x80", false}, {"abcdefgh\xff", false}, {strings.Repeat("abcdefgh", 9) + "\xc3\xbc", false},
		{strings.Repeat("abcdefgh", 9) + "tail", true},
		{strings.Repeat("a", 31) + "\x80" + strings.Repeat("a", 32), false},
		{strings.Repeat("a", 40) + "\x80" + strings.Repeat("a", 3), false},
	} {
		if got := Valid([]byte(tc.in)); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestValidEveryPosition: one byte over 0x7f is found wherever it stands,
// in every part of the scan.
func TestValidEveryPosition(t *testing.T) {
	for n := range 80 {
		for i := range n {
			b := []byte(strings.Repeat("x", n))
			b[i] = 0x80 | byte(i)
			if Valid(b) {
				t.Fatalf("Valid says %d bytes with 0x%x at %d are 7-bit", n, b[i], i)
			}
		}
	}
}
