package cms

// maxBERDepth bounds nesting; real CMS nests about fifteen levels deep.
const maxBERDepth = 64

// berNode is one parsed element on its way from BER to DER.
type berNode struct {
	id       []byte   // identifier octets as they will be written
	pieces   [][]byte // primitive: content, possibly in segments to concatenate
	children []*berNode
	length   int // content length once normalised
}

// berParser reads BER: definite or indefinite lengths, non-minimal length
// octets and constructed strings.
type berParser struct {
	data []byte
	pos  int
}

// normalize converts the first BER element of data to DER: indefinite
// lengths become definite, lengths minimal, and constructed strings
// primitive. It leaves SET OF order alone, because signatures cover the
// order the sender chose. Bytes after the element are ignored.
func normalize(data []byte) ([]byte, error) {
	p := berParser{data: data}
	n, err := p.element(0)
	if err != nil {
		return nil, err
	}
	return n.write(make([]byte, 0, n.size())), nil
}

// identifier reads identifier octets and reports whether they mark a
// constructed element.
func (p *berParser) identifier() ([]byte, bool, error) {
	start := p.pos
	if p.pos >= len(p.data) {
		return nil, false, malformed("truncated identifier")
	}
	first := p.data[p.pos]
	p.pos++
	if first&0x1f == 0x1f {
		// High tag number form: base-128 digits, the last without bit 8.
		for {
			if p.pos >= len(p.data) || p.pos-start > 5 {
				return nil, false, malformed("bad tag number")
			}
			c := p.data[p.pos]
			p.pos++
			if c&0x80 == 0 {
				break
			}
		}
	}
	return p.data[start:p.pos], first&0x20 != 0, nil
}

// length reads length octets; indefinite is true for the 0x80 form.
func (p *berParser) length() (n int, indefinite bool, err error) {
	if p.pos >= len(p.data) {
		return 0, false, malformed("truncated length")
	}
	b := p.data[p.pos]
	p.pos++
	switch {
	case b < 0x80:
		n = int(b)
	case b == 0x80:
		return 0, true, nil
	case b == 0xff:
		return 0, false, malformed("reserved length octet")
	default:
		count := int(b & 0x7f)
		if count > len(p.data)-p.pos {
			return 0, false, malformed("truncated length")
		}
		for _, c := range p.data[p.pos : p.pos+count] {
			if n > len(p.data)>>8 {
				return 0, false, malformed("length exceeds the input")
			}
			n = n<<8 | int(c)
		}
		p.pos += count
	}
	if n > len(p.data)-p.pos {
		return 0, false, malformed("length exceeds the input")
	}
	return n, false, nil
}

func (p *berParser) element(depth int) (*berNode, error) {
	if depth > maxBERDepth {
		return nil, malformed("nested too deeply")
	}
	id, constructed, err := p.identifier()
	if err != nil {
		return nil, err
	}
	if id[0] == 0 {
		return nil, malformed("unexpected end-of-contents")
	}
	length, indefinite, err := p.length()
	if err != nil {
		return nil, err
	}
	if !constructed {
		if indefinite {
			return nil, malformed("indefinite length on a primitive element")
		}
		content := p.data[p.pos : p.pos+length]
		p.pos += length
		return &berNode{id: id, pieces: [][]byte{content}, length: length}, nil
	}
	n := &berNode{id: id}
	end := p.pos + length
	for {
		if indefinite {
			if p.pos+2 <= len(p.data) && p.data[p.pos] == 0 && p.data[p.pos+1] == 0 {
				p.pos += 2
				break
			}
			if p.pos >= len(p.data) {
				return nil, malformed("missing end-of-contents")
			}
		} else if p.pos == end {
			break
		}
		child, err := p.element(depth + 1)
		if err != nil {
			return nil, err
		}
		if !indefinite && p.pos > end {
			return nil, malformed("element overruns its parent")
		}
		n.children = append(n.children, child)
		n.length += child.size()
	}
	if isUniversalString(id) {
		return flattenString(n)
	}
	return n, nil
}

// isUniversalString reports whether id names a universal string type
// (OCTET STRING, BIT STRING, the character strings, the times), whose
// constructed BER form DER writes as one primitive element.
func isUniversalString(id []byte) bool {
	if len(id) != 1 || id[0]&0xc0 != 0 {
		return false
	}
	switch id[0] & 0x1f {
	case 3, 4, 7, 12, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30:
		return true
	}
	return false
}

// flattenString turns a constructed string into a primitive one whose content
// is its segments' contents in order.
func flattenString(n *berNode) (*berNode, error) {
	tag := n.id[0] &^ 0x20
	out := &berNode{id: []byte{tag}}
	if tag != 3 {
		for _, c := range n.children {
			if c.id[0] != tag || len(c.id) != 1 {
				return nil, malformed("constructed string holds another type")
			}
			out.pieces = append(out.pieces, c.pieces...)
			out.length += c.length
		}
		return out, nil
	}
	// BIT STRING segments each start with their count of unused bits; only
	// the last segment may have any.
	content := []byte{0}
	for i, c := range n.children {
		if c.id[0] != tag || len(c.id) != 1 {
			return nil, malformed("constructed string holds another type")
		}
		seg := c.joined()
		if len(seg) == 0 || (i < len(n.children)-1 && seg[0] != 0) {
			return nil, malformed("bad BIT STRING segment")
		}
		content[0] = seg[0]
		content = append(content, seg[1:]...)
	}
	out.pieces = [][]byte{content}
	out.length = len(content)
	return out, nil
}

func (n *berNode) joined() []byte {
	if len(n.pieces) == 1 {
		return n.pieces[0]
	}
	out := make([]byte, 0, n.length)
	for _, p := range n.pieces {
		out = append(out, p...)
	}
	return out
}

// size is the length of n's DER encoding.
func (n *berNode) size() int {
	return len(n.id) + lengthSize(n.length) + n.length
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

func (n *berNode) write(out []byte) []byte {
	out = append(out, n.id...)
	if n.length < 0x80 {
		out = append(out, byte(n.length))
	} else {
		count := lengthSize(n.length) - 1
		out = append(out, 0x80|byte(count))
		for i := count - 1; i >= 0; i-- {
			out = append(out, byte(n.length>>(8*i)))
		}
	}
	for _, p := range n.pieces {
		out = append(out, p...)
	}
	for _, c := range n.children {
		out = c.write(out)
	}
	return out
}
