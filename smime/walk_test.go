package smime

import (
	"fmt"
	"strings"
	"testing"

	"smimeproxy/internal/hostile"
)

// shape renders the tree under p: M(...) a multipart, R(...) a message, L
// a leaf with its body quoted; a * marks an entity whose Content-* fields do
// not count (not MIME).
func shape(msg []byte, p *Part) string {
	var b strings.Builder
	if !p.MIME {
		b.WriteByte('*')
	}
	switch p.Kind {
	case Multipart:
		b.WriteString("M(")
	case Message:
		b.WriteString("R(")
	default:
		fmt.Fprintf(&b, "L%q", msg[p.BodyStart:p.End])
		return b.String()
	}
	for i, c := range p.Children {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(shape(msg, c))
	}
	b.WriteByte(')')
	return b.String()
}

const mixed = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"

// TestWalk: the walker reads MIME structure as Dovecot does (and RFC 2046
// 5.1.1 says): delimiters by prefix, the longest boundary that fits, outer
// delimiters ending inner parts, containers past a limit read as leaves.
func TestWalk(t *testing.T) {
	tests := []struct{ name, msg, want string }{
		{"plain", "Subject: x\r\n\r\nhello\r\n", `*L"hello\r\n"`},
		{"no header", "\r\nhello", `*L"hello"`},
		{"header only", "Subject: x\r\n", `*L""`},
		{"content-type alone is MIME", "Content-Type: text/plain\r\n\r\nx", `L"x"`},
		{"transfer encoding alone is not", "Content-Transfer-Encoding: base64\r\n\r\nx", `*L"x"`},
		{"two parts", mixed + "pre\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n", `M(L"one",L"two")`},
		{"lf only", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--\n", `M(L"one")`},
		{"delimiter by prefix", mixed + "--b\r\n\r\none\r\n--bogus\r\n\r\ntwo\r\n--b--\r\n", `M(L"one",L"two")`},
		{"boundaries are case-sensitive", mixed + "--b\r\n\r\none\r\n--B\r\n--b--\r\n", `M(L"one\r\n--B")`},
		{"longest boundary wins", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\n\r\nin\r\n--ab--\r\n--a--\r\n",
			`M(M(L"in"))`},
		{"outer delimiter ends inner parts", mixed + "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nunclosed\r\n--b\r\n\r\nnext\r\n--b--\r\n",
			`M(M(L"unclosed"),L"next")`},
		{"close only", mixed + "--b--\r\n", `M()`},
		{"delimiter only", mixed + "--b\r\n", `M(L"")`},
		{"delimiter at the end without line break", mixed + "--b\r\n\r\nx\r\n--b", `M(L"x")`},
		{"empty parts", mixed + "--b\r\n--b\r\n\r\n--b--", `M(L"",L"")`},
		{"boundary never found", mixed + "text\r\n", `M()`},
		{"no boundary parameter", "Content-Type: multipart/mixed\r\n\r\n--b\r\n", `M()`},
		{"empty boundary", "Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\nx\r\n----\r\n", `M(L"x")`},
		{"header cut by a delimiter", mixed + "--b\r\nContent-Type: text/plain\r\n--b--\r\n", `M(L"")`},
		{"message header cut by a delimiter", mixed + "--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n--b--\r\n", `M(R(*L""))`},
		{"message/rfc822", "Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner body", `R(*L"inner body")`},
		{"digest parts are messages", "Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nSubject: in\r\n\r\nx\r\n--b\r\nContent-Type: text/plain\r\n\r\ny\r\n--b--\r\n",
			`M(R(*L"x"),L"y")`},
		{"boundary folded", "Content-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", `M(L"x")`},
		{"first content-type counts", "Content-Type: multipart/mixed; boundary=b\r\nContent-Type: text/plain\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", `M(L"x")`},
		{"rfc 2231 boundary", "Content-Type: multipart/mixed; boundary*0=\"b\"; boundary*1=\"c\"\r\n\r\n--bc\r\n\r\nx\r\n--bc--\r\n", `M(L"x")`},
	}
	for _, tc := range tests {
		msg := []byte(tc.msg)
		if got := shape(msg, Walk(msg, nil).Root); got != tc.want {
			t.Errorf("Walk(%s) = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestWalkEnds: a part ends before the line break of the delimiter after
// it; where that break ends a line of its own (the close delimiter of an
// inner multipart) Dovecot leaves it in the part, RFC 2046 (and so a
// signature) does not.
func TestWalkEnds(t *testing.T) {
	msg := []byte("Content-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--s\r\n\r\nsig\r\n--s--\r\n")
	first := Walk(msg, nil).Root.Children[0]
	if got := string(msg[first.Start:first.End]); !strings.HasSuffix(got, "--b--\r\n") {
		t.Errorf("IMAP view of the first part ends %q, want the close delimiter and its CRLF", got[len(got)-10:])
	}
	if got := string(msg[first.Start:first.rfcEnd]); !strings.HasSuffix(got, "x\r\n--b--") {
		t.Errorf("RFC view of the first part ends %q, want the close delimiter without CRLF", got[len(got)-10:])
	}
	if got, want := first.BodySize(), int64(first.End-first.BodyStart); got != want {
		t.Errorf("BodySize %d, want %d for CRLF text", got, want)
	}
}

func TestWalkSizes(t *testing.T) {
	msg := []byte("A: 1\n\nline\nline\r\n")
	r := Walk(msg, nil).Root
	if r.HeaderSize() != 8 || r.HeaderLines() != 2 || r.BodySize() != 12 || r.BodyLines() != 2 {
		t.Errorf("header %d bytes %d lines, body %d bytes %d lines; want 8 2 12 2 (LF counted as CRLF)",
			r.HeaderSize(), r.HeaderLines(), r.BodySize(), r.BodyLines())
	}
}

// TestWalkLimits: past each limit the walker stops looking and says which
// limit it met, exactly where Dovecot stops.
func TestWalkLimits(t *testing.T) {
	lim := &Limits{MaxDepth: 5, MaxParts: 20, MaxHeaderBytes: 1000}
	depth := func(p *Part) int {
		for len(p.Children) > 0 {
			p = p.Children[0]
		}
		return p.Depth
	}
	tests := []struct {
		name  string
		msg   []byte
		bound Bound
		check func(*Tree) string
	}{
		{"nested to the limit", hostile.Nested(5), "", func(t *Tree) string {
			return fmt.Sprint(depth(t.Root), t.Parts)
		}},
		{"nested past the limit", hostile.Nested(6), BoundDepth, func(t *Tree) string {
			return fmt.Sprint(depth(t.Root), t.Parts)
		}},
		{"messages past the limit", hostile.NestedMessages(6), BoundDepth, func(t *Tree) string {
			return fmt.Sprint(depth(t.Root), t.Parts)
		}},
		{"parts to the limit", hostile.ManyParts(18), "", func(t *Tree) string {
			return fmt.Sprint(len(t.Root.Children), t.Parts)
		}},
		{"parts past the limit", hostile.ManyParts(20), BoundParts, func(t *Tree) string {
			return fmt.Sprint(len(t.Root.Children), t.Parts)
		}},
		{"header past the limit", hostile.HugeHeader(2000), BoundHeader, func(t *Tree) string {
			return fmt.Sprint(t.Root.Kind, t.Root.MIME)
		}},
	}
	// At the limit even a close delimiter no longer counts, as in Dovecot.
	want := []string{"4 5", "4 5", "4 5", "18 19", "19 20", "0 false"}
	for i, tc := range tests {
		tree := Walk(tc.msg, lim)
		var got Bound
		if tree.Limit != nil {
			got = tree.Limit.Bound
		}
		if got != tc.bound {
			t.Errorf("Walk(%s): limit %q, want %q", tc.name, got, tc.bound)
		}
		if s := tc.check(tree); s != want[i] {
			t.Errorf("Walk(%s) = %s, want %s", tc.name, s, want[i])
		}
	}
	// The last part takes what follows it, delimiters and all.
	tree := Walk(hostile.ManyParts(20), lim)
	last := tree.Root.Children[len(tree.Root.Children)-1]
	if body := string(hostile.ManyParts(20)[last.BodyStart:last.End]); !strings.HasSuffix(body, "part 19\r\n--p--\r\n") {
		t.Errorf("last part ends %q", body[len(body)-20:])
	}
}

// walkWork is how many bytes the walker looks at for msg.
func walkWork(msg []byte) int {
	w := newWalker(msg, nil)
	w.run()
	return w.work
}

// TestWalkLinear: the work the walker does grows as the message, however
// the message nests: twice the levels (or parts) cost at most about twice.
func TestWalkLinear(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(int) []byte
		n    int
	}{
		{"nested", hostile.Nested, 10000},
		{"signed nested", hostile.SignedNested, 10000},
		{"nested messages", hostile.NestedMessages, 10000},
		{"parts", hostile.ManyParts, 20000},
	} {
		small, large := tc.make(tc.n), tc.make(2*tc.n)
		ws, wl := walkWork(small), walkWork(large)
		ratio := float64(wl) / float64(ws)
		t.Logf("%s: %d levels %d bytes looked at, %d levels %d (x%.2f; the message grew x%.2f)",
			tc.name, tc.n, ws, 2*tc.n, wl, ratio, float64(len(large))/float64(len(small)))
		if ratio > 2.2 {
			t.Errorf("%s: work grew x%.2f for twice the levels, want about x2", tc.name, ratio)
		}
		if perByte := float64(wl) / float64(len(large)); perByte > 100 {
			t.Errorf("%s: %.0f bytes looked at per byte of message", tc.name, perByte)
		}
	}
}

// FuzzWalk: the walker never panics, stays within its limits and returns
// a tree whose parts nest inside each other, in order, within the message.
func FuzzWalk(f *testing.F) {
	for _, c := range hostile.Messages() {
		if len(c.Msg) < 4096 {
			f.Add(c.Msg)
		}
	}
	f.Add([]byte(mixed + "--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nSubject: in\r\n\r\nx\r\n--b--\r\n"))
	lim := &Limits{MaxDepth: 4, MaxParts: 16, MaxHeaderBytes: 256}
	f.Fuzz(func(t *testing.T, msg []byte) {
		tree := Walk(msg, lim)
		parts := 0
		var check func(p *Part, start, end, depth int)
		check = func(p *Part, start, end, depth int) {
			parts++
			if p.Depth != depth || depth >= lim.MaxDepth {
				t.Fatalf("part at depth %d says %d (limit %d)", depth, p.Depth, lim.MaxDepth)
			}
			if !(start <= p.Start && p.Start <= p.BodyStart && p.BodyStart <= p.End && p.End <= end) {
				t.Fatalf("part [%d %d %d] outside [%d %d]", p.Start, p.BodyStart, p.End, start, end)
			}
			if p.rfcEnd < p.Start || p.rfcEnd > p.End {
				t.Fatalf("part [%d %d] ends at %d as RFC 2046 reads it", p.Start, p.End, p.rfcEnd)
			}
			if p.HeaderSize() < int64(p.BodyStart-p.Start) || p.BodySize() < int64(p.End-p.BodyStart) || p.BodyLines() < 0 {
				t.Fatalf("part sizes %d %d %d", p.HeaderSize(), p.BodySize(), p.BodyLines())
			}
			if p.Kind == Message && len(p.Children) != 1 || p.Kind == Leaf && len(p.Children) != 0 {
				t.Fatalf("%v part with %d children", p.Kind, len(p.Children))
			}
			next := p.BodyStart
			for _, c := range p.Children {
				check(c, next, p.End, depth+1)
				next = c.End
			}
		}
		check(tree.Root, 0, len(msg), 0)
		if tree.Root.Start != 0 || tree.Root.End != len(msg) {
			t.Fatalf("root [%d %d] of %d bytes", tree.Root.Start, tree.Root.End, len(msg))
		}
		if parts != tree.Parts || parts > lim.MaxParts {
			t.Fatalf("%d parts, tree says %d (limit %d)", parts, tree.Parts, lim.MaxParts)
		}
	})
}
