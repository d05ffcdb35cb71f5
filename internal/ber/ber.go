// Package ber reads BER, the ASN.1 encoding that S/MIME and PKCS #12 senders
// may use (NSS and Java write indefinite lengths and constructed strings),
// and writes it back as DER, which cryptobyte, crypto/x509 and go-pkcs12
// require.
//
// The parser never panics: nesting is capped at MaxDepth (so the recursion,
// and the stack, stay small whatever the input), every length is checked
// against the bytes that are there, and tag numbers are limited to 31 bits,
// as cryptobyte and encoding/asn1 limit them.
package ber

import (
	"bytes"
	"fmt"
)

// MaxDepth bounds nesting; real CMS nests about fifteen levels deep.
const MaxDepth = 64

// Class is the class of a tag.
type Class uint8

const (
	ClassUniversal       Class = 0x00
	ClassApplication     Class = 0x40
	ClassContextSpecific Class = 0x80
	ClassPrivate         Class = 0xc0
)

// Universal tag numbers used by this package and its callers.
const (
	TagBitString   = 3
	TagOctetString = 4
	TagOID         = 6
	TagSequence    = 16
)

// Header is an element's identifier and length octets.
type Header struct {
	Class       Class
	Tag         int
	Constructed bool
	Indefinite  bool // the content ends with an end-of-contents marker
	Length      int  // the content length when not Indefinite
}

// ReadHeader reads the identifier and length octets at the start of data and
// returns what follows them. A definite length must fit in what follows.
func ReadHeader(data []byte) (h Header, rest []byte, err error) {
	h, pos, err := readHeader(data, 0)
	if err != nil {
		return Header{}, nil, err
	}
	return h, data[pos:], nil
}

func errorAt(off int, msg string) error {
	return fmt.Errorf("ber: %s at offset %d", msg, off)
}

// readHeader reads the header at off and returns the offset of the content.
func readHeader(data []byte, off int) (Header, int, error) {
	pos := off
	if pos >= len(data) {
		return Header{}, 0, errorAt(off, "truncated identifier")
	}
	b := data[pos]
	pos++
	h := Header{Class: Class(b & 0xc0), Constructed: b&0x20 != 0, Tag: int(b & 0x1f)}
	if h.Tag == 0x1f {
		// High tag number form: base-128 digits, the last without bit 8.
		// X.690 8.1.2 forbids leading zero digits and this form for tags
		// below 31, so each tag has one encoding.
		h.Tag = 0
		for {
			if pos >= len(data) {
				return Header{}, 0, errorAt(off, "truncated identifier")
			}
			c := data[pos]
			pos++
			if h.Tag == 0 && c == 0x80 {
				return Header{}, 0, errorAt(off, "tag number not minimally encoded")
			}
			if h.Tag >= 1<<24 {
				return Header{}, 0, errorAt(off, "tag number too large")
			}
			h.Tag = h.Tag<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if h.Tag < 0x1f {
			return Header{}, 0, errorAt(off, "tag number not minimally encoded")
		}
	}
	if pos >= len(data) {
		return Header{}, 0, errorAt(off, "truncated length")
	}
	b = data[pos]
	pos++
	switch {
	case b < 0x80:
		h.Length = int(b)
	case b == 0x80:
		if !h.Constructed {
			return Header{}, 0, errorAt(off, "indefinite length on a primitive element")
		}
		h.Indefinite = true
		return h, pos, nil
	case b == 0xff:
		return Header{}, 0, errorAt(off, "reserved length octet")
	default:
		// Non-minimal lengths are valid BER; the check against len(data)
		// keeps the value from overflowing, however many octets there are.
		count := int(b & 0x7f)
		if count > len(data)-pos {
			return Header{}, 0, errorAt(off, "truncated length")
		}
		for _, c := range data[pos : pos+count] {
			if h.Length > len(data)>>8 {
				return Header{}, 0, errorAt(off, "length exceeds the bytes available")
			}
			h.Length = h.Length<<8 | int(c)
		}
		pos += count
	}
	if h.Length > len(data)-pos {
		return Header{}, 0, errorAt(off, "length exceeds the bytes available")
	}
	return h, pos, nil
}

// Node is an element read by Parse, already in DER form but for the
// constructed strings under implicit tags (see Join).
type Node struct {
	class       Class
	tag         int
	constructed bool
	off         int      // offset in the parsed input, for errors
	pieces      [][]byte // primitive: content, in segments to concatenate
	children    []*Node
}

// Class, Tag and Constructed describe n's identifier.
func (n *Node) Class() Class { return n.class }

func (n *Node) Tag() int { return n.tag }

func (n *Node) Constructed() bool { return n.constructed }

// Children returns the elements inside a constructed element.
func (n *Node) Children() []*Node { return n.children }

// Bytes returns the content of a primitive element; it may share memory
// with the parsed input.
func (n *Node) Bytes() []byte {
	if len(n.pieces) == 1 {
		return n.pieces[0]
	}
	return bytes.Join(n.pieces, nil)
}

// SetBytes makes n a primitive element with content b.
func (n *Node) SetBytes(b []byte) {
	n.constructed, n.children, n.pieces = false, nil, [][]byte{b}
}

// Parse reads the one element in data. Bytes after it are an error.
//
// Lengths become definite and minimal, and constructed universal strings
// (OCTET STRING, BIT STRING, the character strings and the times) become
// primitive. A constructed element under a context-specific, application
// or private tag is left as it is: only the caller knows whether the tag is
// implicit (a string sent in segments, for Join) or explicit (a wrapper).
// SET OF order is kept, because signatures cover the order the sender
// chose.
func Parse(data []byte) (*Node, error) {
	n, end, err := parse(data, 0, 0)
	if err != nil {
		return nil, err
	}
	if end != len(data) {
		return nil, errorAt(end, fmt.Sprintf("%d bytes after the element", len(data)-end))
	}
	return n, nil
}

// Normalize converts the first element of data from BER to DER, as Parse
// does. Bytes after the element are ignored.
//
// It builds no tree: one pass checks the input and measures every
// constructed element, a second writes the DER. So it needs the output and
// one record per constructed element, however many small elements a
// hostile sender packs in (a tree costs some hundred bytes per element).
func Normalize(data []byte) ([]byte, error) {
	n := &normalizer{}
	end, h, length, _, err := n.measure(data, 0, 0)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+tagOctets(h.Tag)+lengthSize(length)+length)
	out, _ = n.write(out, data[:end], 0, false, false)
	return out, nil
}

// record is what the measuring pass learns of a constructed element.
type record struct {
	length int  // the length of its DER content
	unused byte // of a BIT STRING, the unused bits of its last segment
}

type normalizer struct {
	records []record // one per constructed element, in the order the passes visit them
	next    int      // the record the writing pass takes next
}

// measure checks the element at off and returns the offset after it, its
// header, the length of its DER content and, for a BIT STRING, its unused
// bits. It records every constructed element it meets.
func (n *normalizer) measure(data []byte, off, depth int) (int, Header, int, byte, error) {
	if depth > MaxDepth {
		return 0, Header{}, 0, 0, errorAt(off, "nested too deeply")
	}
	h, pos, err := readHeader(data, off)
	if err != nil {
		return 0, Header{}, 0, 0, err
	}
	if !h.Constructed {
		if h.Class == ClassUniversal && h.Tag == 0 {
			return 0, Header{}, 0, 0, errorAt(off, "unexpected end-of-contents")
		}
		var unused byte
		if h.Length > 0 {
			unused = data[pos]
		}
		return pos + h.Length, h, h.Length, unused, nil
	}
	idx := len(n.records)
	n.records = append(n.records, record{})
	// Children may not run past a definite-length parent.
	if !h.Indefinite {
		data = data[:pos+h.Length]
	}
	str := h.Class == ClassUniversal && isString(h.Tag)
	bits := str && h.Tag == TagBitString
	length := 0
	if bits {
		length = 1 // the unused bits octet
	}
	var unused byte
	for segs := 0; ; segs++ {
		if done, err := atEnd(data, off, pos, h.Indefinite); err != nil {
			return 0, Header{}, 0, 0, err
		} else if done {
			if h.Indefinite {
				pos += 2
			}
			break
		}
		end, ch, clen, cunused, err := n.measure(data, pos, depth+1)
		if err != nil {
			return 0, Header{}, 0, 0, err
		}
		switch {
		case !str:
			length += 1 + tagOctets(ch.Tag) + lengthSize(clen) + clen
		case ch.Class != ClassUniversal || ch.Tag != h.Tag:
			// A constructed segment of the same type was joined itself.
			return 0, Header{}, 0, 0, errorAt(pos, "constructed string holds another type")
		case bits && (clen == 0 || segs > 0 && unused != 0):
			// Only the last segment may have unused bits.
			return 0, Header{}, 0, 0, errorAt(pos, "bad BIT STRING segment")
		case bits:
			length += clen - 1
			unused = cunused
		default:
			length += clen
		}
		pos = end
	}
	n.records[idx] = record{length: length, unused: unused}
	return pos, h, length, unused, nil
}

// atEnd reports whether the content of a constructed element ends at pos:
// its end-of-contents marker, or the end of its definite length.
func atEnd(data []byte, off, pos int, indefinite bool) (bool, error) {
	if !indefinite {
		return pos == len(data), nil
	}
	if pos+2 <= len(data) && data[pos] == 0 && data[pos+1] == 0 {
		return true, nil
	}
	if pos >= len(data) {
		return false, errorAt(off, "missing end-of-contents")
	}
	return false, nil
}

// write appends the DER of the element at off, which measure checked, and
// returns the offset after it. Within a string sent in segments (joining),
// only the contents are written, without their unused bits octet (bits).
func (n *normalizer) write(out, data []byte, off int, joining, bits bool) ([]byte, int) {
	h, pos, _ := readHeader(data, off)
	if !h.Constructed {
		content := data[pos : pos+h.Length]
		if joining {
			if bits {
				content = content[1:]
			}
			return append(out, content...), pos + h.Length
		}
		out = appendHeader(out, h.Class, h.Tag, false, h.Length)
		return append(out, content...), pos + h.Length
	}
	r := n.records[n.next]
	n.next++
	if !h.Indefinite {
		data = data[:pos+h.Length]
	}
	str := h.Class == ClassUniversal && isString(h.Tag)
	if !joining {
		out = appendHeader(out, h.Class, h.Tag, !str, r.length)
		if str && h.Tag == TagBitString {
			out = append(out, r.unused)
		}
		joining, bits = str, str && h.Tag == TagBitString
	}
	for {
		if done, _ := atEnd(data, off, pos, h.Indefinite); done {
			if h.Indefinite {
				pos += 2
			}
			return out, pos
		}
		out, pos = n.write(out, data, pos, joining, bits)
	}
}

// appendHeader appends identifier and definite, minimal length octets.
func appendHeader(out []byte, class Class, tag int, constructed bool, length int) []byte {
	id := byte(class)
	if constructed {
		id |= 0x20
	}
	if tag < 0x1f {
		out = append(out, id|byte(tag))
	} else {
		out = append(out, id|0x1f)
		for i := tagOctets(tag) - 1; i >= 0; i-- {
			c := byte(tag>>(7*i)) & 0x7f
			if i > 0 {
				c |= 0x80
			}
			out = append(out, c)
		}
	}
	if length < 0x80 {
		return append(out, byte(length))
	}
	count := lengthSize(length) - 1
	out = append(out, 0x80|byte(count))
	for i := count - 1; i >= 0; i-- {
		out = append(out, byte(length>>(8*i)))
	}
	return out
}

// parse reads the element at off and returns the offset after it.
func parse(data []byte, off, depth int) (*Node, int, error) {
	if depth > MaxDepth {
		return nil, 0, errorAt(off, "nested too deeply")
	}
	h, pos, err := readHeader(data, off)
	if err != nil {
		return nil, 0, err
	}
	n := &Node{class: h.Class, tag: h.Tag, constructed: h.Constructed, off: off}
	if !h.Constructed {
		if h.Class == ClassUniversal && h.Tag == 0 {
			return nil, 0, errorAt(off, "unexpected end-of-contents")
		}
		n.pieces = [][]byte{data[pos : pos+h.Length]}
		return n, pos + h.Length, nil
	}
	// Children may not run past a definite-length parent.
	if !h.Indefinite {
		data = data[:pos+h.Length]
	}
	for {
		if h.Indefinite {
			if pos+2 <= len(data) && data[pos] == 0 && data[pos+1] == 0 {
				pos += 2
				break
			}
			if pos >= len(data) {
				return nil, 0, errorAt(off, "missing end-of-contents")
			}
		} else if pos == len(data) {
			break
		}
		child, next, err := parse(data, pos, depth+1)
		if err != nil {
			return nil, 0, err
		}
		n.children = append(n.children, child)
		pos = next
	}
	if h.Class == ClassUniversal && isString(h.Tag) {
		if err := n.Join(h.Tag); err != nil {
			return nil, 0, err
		}
	}
	return n, pos, nil
}

// isString reports whether a universal tag names a string type, whose
// constructed BER form DER writes as one primitive element.
func isString(tag int) bool {
	switch tag {
	case 3, 4, 7, 12, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30:
		return true
	}
	return false
}

// Join turns n, a string sent in segments, into a primitive element whose
// content is the segments' contents in order, as DER requires. The
// segments must be universal elements of type tag: n's own tag for a
// universal string, the underlying type for an implicitly tagged one such
// as [0] IMPLICIT OCTET STRING. Join leaves a primitive element alone.
func (n *Node) Join(tag int) error {
	if !n.constructed {
		return nil
	}
	var pieces [][]byte
	if tag == TagBitString {
		// Each segment starts with its count of unused bits; only the last
		// may have any, and its count becomes the string's.
		pieces = [][]byte{{0}}
	}
	for i, c := range n.children {
		if c.class != ClassUniversal || c.tag != tag || c.constructed {
			return errorAt(c.off, "constructed string holds another type")
		}
		if tag != TagBitString {
			pieces = append(pieces, c.pieces...)
			continue
		}
		seg := c.Bytes()
		if len(seg) == 0 || (i < len(n.children)-1 && seg[0] != 0) {
			return errorAt(c.off, "bad BIT STRING segment")
		}
		pieces[0] = seg[:1]
		pieces = append(pieces, seg[1:])
	}
	n.constructed, n.children, n.pieces = false, nil, pieces
	return nil
}

// DER encodes n with definite, minimal lengths.
func (n *Node) DER() []byte {
	var lengths []int
	size := n.measure(&lengths)
	out, _ := n.write(make([]byte, 0, size), lengths)
	return out
}

// measure appends the content lengths of n and the elements inside it, in
// the order write visits them, and returns the size of n's encoding.
func (n *Node) measure(lengths *[]int) int {
	i := len(*lengths)
	*lengths = append(*lengths, 0)
	length := 0
	for _, p := range n.pieces {
		length += len(p)
	}
	for _, c := range n.children {
		length += c.measure(lengths)
	}
	(*lengths)[i] = length
	return 1 + tagOctets(n.tag) + lengthSize(length) + length
}

func (n *Node) write(out []byte, lengths []int) ([]byte, []int) {
	out = appendHeader(out, n.class, n.tag, n.constructed, lengths[0])
	lengths = lengths[1:]
	for _, p := range n.pieces {
		out = append(out, p...)
	}
	for _, c := range n.children {
		out, lengths = c.write(out, lengths)
	}
	return out, lengths
}

// tagOctets is how many identifier octets follow the first for tag: none
// below 31, else its base-128 digits.
func tagOctets(tag int) int {
	size := 0
	if tag >= 0x1f {
		for ; tag > 0; tag >>= 7 {
			size++
		}
	}
	return size
}

func lengthSize(n int) int {
	if n < 0x80 {
		return 1
	}
	size := 1
	for ; n > 0; n >>= 8 {
		size++
	}
	return size
}
