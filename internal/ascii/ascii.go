// Package ascii tells whether bytes are 7-bit, fast: both proxies ask it
// of whole messages.
package ascii

import "encoding/binary"

// Valid reports whether b has no byte over 0x7f. It reads 32 bytes at a
// time: byte by byte it was much of the cost of signing a large message.
func Valid(b []byte) bool {
	for len(b) >= 32 {
		w := binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		if w&0x8080808080808080 != 0 {
			return false
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
