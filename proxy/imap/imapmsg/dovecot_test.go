package imapmsg

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"smimeproxy/internal/hostile"
	"smimeproxy/internal/lab"
	"smimeproxy/smime"
)

// imapConn is a raw IMAP client: it sends command lines and reads the
// answers as bytes, literals included, so that a test sees exactly what
// the server sent.
type imapConn struct {
	t    testing.TB
	addr string
	c    net.Conn
	r    *bufio.Reader
	tag  int
	// setup are the commands that bring a new connection to where the
	// last one was: LOGIN and SELECT.
	setup []string
}

func dialIMAP(t testing.TB, addr string) *imapConn {
	t.Helper()
	ic := &imapConn{t: t, addr: addr}
	ic.dial()
	t.Cleanup(func() { ic.c.Close() })
	return ic
}

func (ic *imapConn) dial() {
	ic.t.Helper()
	c, err := net.DialTimeout("tcp", ic.addr, 10*time.Second)
	if err != nil {
		ic.t.Fatalf("dial %s: %v", ic.addr, err)
	}
	ic.c, ic.r = c, bufio.NewReaderSize(c, 1<<16)
	if _, err := ic.response(); err != nil {
		ic.t.Fatalf("greeting: %v", err)
	}
}

// redial connects again after the server dropped the connection (Dovecot
// does on some broken encodings).
func (ic *imapConn) redial() {
	ic.t.Helper()
	ic.c.Close()
	ic.dial()
	setup := ic.setup
	ic.setup = nil
	for _, s := range setup {
		ic.ok("%s", s)
	}
	ic.setup = setup
}

// response reads one response line, with the literals it announces.
func (ic *imapConn) response() ([]byte, error) {
	ic.c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var resp []byte
	for {
		line, err := ic.r.ReadBytes('\n')
		resp = append(resp, line...)
		if err != nil {
			return resp, err
		}
		n, ok := literalSize(line)
		if !ok {
			return resp, nil
		}
		lit := make([]byte, n)
		if _, err := ioReadFull(ic.r, lit); err != nil {
			return resp, err
		}
		resp = append(resp, lit...)
	}
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// literalSize reads "{n}\r\n" (or "~{n}\r\n") at the end of a line.
func literalSize(line []byte) (int, bool) {
	line = bytes.TrimSuffix(line, []byte("\r\n"))
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(line[i+1 : len(line)-1]))
	return n, err == nil
}

// cmd sends a command and returns its untagged responses and the tagged
// status line.
func (ic *imapConn) cmd(format string, args ...any) ([][]byte, string) {
	ic.t.Helper()
	ic.tag++
	tag := fmt.Sprintf("t%d", ic.tag)
	if _, err := fmt.Fprintf(ic.c, tag+" "+format+"\r\n", args...); err != nil {
		ic.t.Fatal(err)
	}
	var untagged [][]byte
	for {
		resp, err := ic.response()
		if err != nil {
			ic.redial()
			return untagged, "BYE " + string(bytes.Join(untagged, nil))
		}
		if bytes.HasPrefix(resp, []byte(tag+" ")) {
			return untagged, strings.TrimSpace(string(resp[len(tag)+1:]))
		}
		if bytes.HasPrefix(resp, []byte("* BYE ")) {
			continue
		}
		untagged = append(untagged, resp)
	}
}

func (ic *imapConn) ok(format string, args ...any) [][]byte {
	ic.t.Helper()
	u, status := ic.cmd(format, args...)
	if !strings.HasPrefix(status, "OK") {
		ic.t.Fatalf("%s: %s", fmt.Sprintf(format, args...), status)
	}
	return u
}

// appendMsg stores msg in box and returns its UID.
func (ic *imapConn) appendMsg(box string, msg []byte) string {
	ic.t.Helper()
	ic.tag++
	tag := fmt.Sprintf("t%d", ic.tag)
	fmt.Fprintf(ic.c, "%s APPEND %s {%d+}\r\n", tag, box, len(msg))
	ic.c.Write(msg)
	ic.c.Write([]byte("\r\n"))
	for {
		resp, err := ic.response()
		if err != nil {
			ic.t.Fatal(err)
		}
		if s := string(resp); strings.HasPrefix(s, tag+" ") {
			if !strings.HasPrefix(s, tag+" OK [APPENDUID ") {
				ic.t.Fatalf("APPEND: %s", s)
			}
			return strings.TrimSuffix(strings.Fields(s)[4], "]")
		}
	}
}

// fetchItems parses the item list of "* n FETCH (...)" into the raw bytes
// of each item's value, by item name as the server wrote it.
func fetchItems(t testing.TB, resp []byte) map[string][]byte {
	i := bytes.Index(resp, []byte(" FETCH ("))
	if i < 0 {
		t.Fatalf("not a FETCH response: %q", resp)
	}
	s := resp[i+len(" FETCH ("):]
	items := map[string][]byte{}
	for len(s) > 0 && s[0] != ')' {
		j := 0
		for j < len(s) && s[j] != ' ' {
			if s[j] == '[' {
				j += bytes.IndexByte(s[j:], ']')
			}
			j++
		}
		name := string(s[:j])
		s = s[j+1:]
		n := valueLen(t, s)
		items[name] = s[:n]
		s = bytes.TrimPrefix(s[n:], []byte(" "))
	}
	return items
}

// valueLen is the length of the IMAP value at the start of s.
func valueLen(t testing.TB, s []byte) int {
	switch {
	case s[0] == '"':
		for i := 1; i < len(s); i++ {
			if s[i] == '\\' {
				i++
			} else if s[i] == '"' {
				return i + 1
			}
		}
	case s[0] == '{' || s[0] == '~' && s[1] == '{':
		end := bytes.Index(s, []byte("}\r\n"))
		n, _ := strconv.Atoi(string(s[bytes.IndexByte(s, '{')+1 : end]))
		return end + 3 + n
	case s[0] == '(':
		i := 1
		for i < len(s) && s[i] != ')' {
			if s[i] == ' ' {
				i++
				continue
			}
			i += valueLen(t, s[i:])
		}
		return i + 1
	default:
		i := 0
		for i < len(s) && s[i] != ' ' && s[i] != ')' {
			i++
		}
		return i
	}
	t.Fatalf("cannot read a value from %.40q", s)
	return 0
}

// stringValue is the content of a quoted string or literal; NIL is nil.
func stringValue(v []byte) []byte {
	switch {
	case string(v) == "NIL":
		return nil
	case v[0] == '"':
		var b []byte
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' {
				i++
			}
			b = append(b, v[i])
		}
		return append([]byte{}, b...)
	default:
		return v[bytes.Index(v, []byte("}\r\n"))+3:]
	}
}

// corpus is every message the differential test compares.
func corpus(t testing.TB) []hostile.Case {
	files, _ := filepath.Glob("testdata/*.eml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.eml")
	}
	var cases []hostile.Case
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, hostile.Case{Name: filepath.Base(f), Msg: b})
	}
	return append(cases, hostile.Messages()...)
}

// paths are the section numbers of the parts of m, in order; for a large
// tree the first 20 and the last 5.
func (m *Message) paths() [][]int {
	var all [][]int
	var walk func(p *part, path []int)
	walk = func(p *part, path []int) {
		switch {
		case p.Kind == smime.Multipart:
			for i, c := range p.children {
				sub := append(append([]int{}, path...), i+1)
				all = append(all, sub)
				walk(c, sub)
			}
		case p.Kind == smime.Message && p.children[0].Kind == smime.Multipart:
			walk(p.children[0], path)
		case p.Kind == smime.Message:
			all = append(all, append(append([]int{}, path...), 1))
		}
	}
	if m.root.Kind != smime.Multipart {
		all = append(all, []int{1})
	}
	walk(m.root, nil)
	if len(all) > 25 {
		all = append(all[:20], all[len(all)-5:]...)
	}
	return all
}

func dotted(path []int) string {
	s := make([]string, len(path))
	for i, n := range path {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ".")
}

var update = flag.Bool("update", false, "rewrite testdata/dovecot/*.answers from the lab's Dovecot")

// answers are what Dovecot answered for one message: the raw value of
// each FETCH item by the name Dovecot gave it, and, for the BINARY items
// fetched one by one, "NO ..." or "BYE ..." when it refused.
type answers map[string][]byte

// items are the FETCH items asked for a message whose parts are paths.
func items(paths [][]int) []string {
	items := []string{"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "PREVIEW",
		"BODY.PEEK[]", "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]",
		"BODY.PEEK[HEADER.FIELDS (FROM Subject x-missing \"Content-Type\")]",
		"BODY.PEEK[HEADER.FIELDS.NOT (from SUBJECT)]", "BODY.PEEK[99]", "BODY.PEEK[1.99.1]"}
	for _, p := range paths {
		d := dotted(p)
		items = append(items, "BODY.PEEK["+d+"]", "BODY.PEEK["+d+".MIME]", "BODY.PEEK["+d+".HEADER]",
			"BODY.PEEK["+d+".TEXT]", "BODY.PEEK["+d+".HEADER.FIELDS (SUBJECT)]", "BODY.PEEK["+d+".HEADER.FIELDS.NOT (SUBJECT)]")
	}
	return items
}

// binaryItems are fetched one at a time: Dovecot fails a whole FETCH, or
// the connection, over one of them.
func binaryItems(paths [][]int) []string {
	var items []string
	for _, p := range append([][]int{nil}, paths...) {
		d := dotted(p)
		items = append(items, "BINARY.PEEK["+d+"]", "BINARY.SIZE["+d+"]")
	}
	return items
}

// ask fetches every item of the message at uid from Dovecot.
func ask(t *testing.T, ic *imapConn, uid string, paths [][]int) answers {
	untagged := ic.ok("UID FETCH %s (%s)", uid, strings.Join(items(paths), " "))
	got := answers(fetchItems(t, untagged[0]))
	delete(got, "UID")
	for _, item := range binaryItems(paths) {
		untagged, status := ic.cmd("UID FETCH %s (%s)", uid, item)
		if !strings.HasPrefix(status, "OK") {
			got[strings.Replace(item, ".PEEK", "", 1)] = []byte(status)
			continue
		}
		for name, v := range fetchItems(t, untagged[0]) {
			if name != "UID" {
				got[name] = v
			}
		}
	}
	return got
}

// TestDovecot: every message of testdata and of the hostile corpus, stored
// byte for byte in a fresh mailbox of the lab's Dovecot, reads the same
// through imapmsg as Dovecot answers for it, item by item. With -update it
// records Dovecot's answers for testdata in testdata/dovecot, which
// TestAnswers compares without the lab.
func TestDovecot(t *testing.T) {
	l := lab.Start(t)
	u := l.User(t, "alice")
	ic := dialIMAP(t, l.IMAP)
	login := fmt.Sprintf("LOGIN %s %s", u.Address, u.Password)
	ic.ok("%s", login)
	ic.setup = []string{login}
	box := fmt.Sprintf("imapmsg-%d", time.Now().UnixNano())
	ic.ok("CREATE %s", box)
	t.Cleanup(func() { ic.cmd("DELETE %s", box) })
	cases := corpus(t)
	uids := make([]string, len(cases))
	for i, c := range cases {
		uids[i] = ic.appendMsg(box, c.Msg)
	}
	ic.ok("SELECT %s", box)
	ic.setup = append(ic.setup, "SELECT "+box)
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			m := Parse(c.Msg, nil)
			got := ask(t, ic, uids[i], m.paths())
			if *update && strings.HasSuffix(c.Name, ".eml") {
				writeAnswers(t, c.Name, got)
			}
			verify(t, m, got)
		})
	}
}

// TestAnswers compares imapmsg with the answers of Dovecot recorded in
// testdata/dovecot, without the lab.
func TestAnswers(t *testing.T) {
	for _, c := range corpus(t) {
		if !strings.HasSuffix(c.Name, ".eml") {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			verify(t, Parse(c.Msg, nil), readAnswers(t, c.Name))
		})
	}
}

func answersFile(name string) string {
	return filepath.Join("testdata", "dovecot", strings.TrimSuffix(name, ".eml")+".answers")
}

// writeAnswers stores answers as records "name length" LF value LF.
func writeAnswers(t *testing.T, name string, a answers) {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(a)) {
		fmt.Fprintf(&b, "%s\x00%d\n", k, len(a[k]))
		b.Write(a[k])
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(answersFile(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(answersFile(name), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readAnswers(t *testing.T, name string) answers {
	b, err := os.ReadFile(answersFile(name))
	if err != nil {
		t.Fatalf("%v (record it: SMIMEPROXY_INTEGRATION=1 go test -run TestDovecot -update)", err)
	}
	a := answers{}
	for len(b) > 0 {
		head, rest, _ := bytes.Cut(b, []byte("\n"))
		k, n, _ := bytes.Cut(head, []byte{0})
		size, err := strconv.Atoi(string(n))
		if err != nil || size+1 > len(rest) {
			t.Fatalf("%s: broken record %q", answersFile(name), head)
		}
		a[string(k)] = rest[:size]
		b = rest[size+1:]
	}
	return a
}

// verify compares imapmsg's description of m with Dovecot's answers.
func verify(t *testing.T, m *Message, got answers) {
	check := func(item string, want, have []byte) {
		t.Helper()
		if !bytes.Equal(want, have) {
			i := 0
			for i < len(want) && i < len(have) && want[i] == have[i] {
				i++
			}
			from := max(0, i-150)
			t.Errorf("%s: differ at byte %d of %d/%d:\ndovecot ...%.300q\nimapmsg ...%.300q", item, i, len(want), len(have), want[from:], have[from:])
		}
	}
	check("ENVELOPE", got["ENVELOPE"], m.Envelope())
	check("BODYSTRUCTURE", got["BODYSTRUCTURE"], m.BodyStructure(true))
	check("BODY", got["BODY"], m.BodyStructure(false))
	check("RFC822.SIZE", got["RFC822.SIZE"], []byte(strconv.FormatInt(m.Size(), 10)))
	check("PREVIEW", stringValue(got["PREVIEW"]), []byte(m.Preview()))
	for name, v := range got {
		spec, ok := strings.CutPrefix(name, "BODY[")
		if !ok {
			continue
		}
		spec = spec[:strings.LastIndexByte(spec, ']')]
		s, err := ParseSection(spec)
		if err != nil {
			t.Errorf("ParseSection(%q): %v", spec, err)
			continue
		}
		check(name, stringValue(v), m.Section(s))
	}
	for _, p := range append([][]int{nil}, m.paths()...) {
		d := dotted(p)
		v, refused := got["BINARY["+d+"]"], false
		if bytes.HasPrefix(v, []byte("NO ")) || bytes.HasPrefix(v, []byte("BYE ")) {
			refused = true
		}
		b, err := m.Binary(p)
		var unknown *UnknownCTEError
		switch {
		case !refused && err != nil:
			t.Errorf("BINARY[%s]: imapmsg %v, dovecot %.100q", d, err, v)
		case !refused:
			check("BINARY["+d+"]", stringValue(v), b)
			if lit8 := bytes.HasPrefix(v, []byte("~{")); lit8 != m.Literal8(p) {
				t.Errorf("BINARY[%s]: dovecot literal8 %v, imapmsg %v", d, lit8, !lit8)
			}
		case err == nil:
			t.Errorf("BINARY[%s]: dovecot %s, imapmsg %d bytes", d, v, len(b))
		case bytes.Contains(v, []byte("[UNKNOWN-CTE]")) != errors.As(err, &unknown):
			t.Errorf("BINARY[%s]: dovecot %s, imapmsg %v", d, v, err)
		}
		size := got["BINARY.SIZE["+d+"]"]
		n, err := m.BinarySize(p)
		switch {
		case bytes.HasPrefix(size, []byte("NO ")) || bytes.HasPrefix(size, []byte("BYE ")):
			if err == nil {
				t.Errorf("BINARY.SIZE[%s]: dovecot %s, imapmsg %d", d, size, n)
			}
		case err != nil:
			t.Errorf("BINARY.SIZE[%s]: imapmsg %v, dovecot %s", d, err, size)
		case !refused && string(size) != strconv.Itoa(len(stringValue(v))):
			// Dovecot's own BINARY.SIZE disagrees with the BINARY it
			// sends (see the package doc): imapmsg follows BINARY.
			t.Logf("BINARY.SIZE[%s]: dovecot %s, its BINARY %d bytes, imapmsg %d", d, size, len(stringValue(v)), n)
		default:
			check("BINARY.SIZE["+d+"]", size, []byte(strconv.FormatInt(n, 10)))
		}
	}
}
