package imap

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// parseRaw parses a whole command as parseSearch gets it.
func parseRaw(raw []byte) (*searchCmd, error) {
	first, err := readLine(bufio.NewReader(bytes.NewReader(raw)), maxSearch)
	if err != nil {
		return nil, err
	}
	return parseSearch(raw, first)
}

func TestParseSearch(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		uid, sort bool
		prefix    string
		charset   string
		criteria  string // as appendCriteria writes them
		text      bool
		groups    []string
	}{
		{name: "plain", raw: "a SEARCH FLAGGED\r\n", prefix: "a SEARCH ", criteria: "FLAGGED", groups: []string{"FLAGGED"}},
		{name: "body", raw: "a search body oak\r\n", prefix: "a search ", criteria: `BODY "oak"`, text: true},
		{name: "uid esearch charset", raw: "t1 uid Search Return (min MAX) charset utf-8 SINCE 1-Jan-2020 SUBJECT {4}\r\nc\xc3\xa9! BCC \"x\\\"y\"\r\n",
			uid: true, prefix: "t1 uid Search Return (min MAX) charset utf-8 ", charset: "utf-8",
			criteria: "SINCE 1-Jan-2020 SUBJECT {4}\r\nc\xc3\xa9! BCC \"x\\\"y\"", text: true, groups: []string{"SINCE 1-Jan-2020"}},
		{name: "sort", raw: "a UID SORT RETURN (COUNT) (REVERSE DATE) \"US-ASCII\" OR SEEN TEXT x\r\n", uid: true, sort: true,
			prefix: "a UID SORT RETURN (COUNT) (REVERSE DATE) \"US-ASCII\" ", charset: "US-ASCII", criteria: `OR SEEN TEXT "x"`, text: true, groups: []string{"SEEN"}},
		{name: "groups", raw: "a SEARCH 1:5 NOT (SEEN OR FLAGGED HEADER X-Tag a) OR (DELETED $) BODY b UNSEEN MODSEQ \"/flags/\\\\seen\" all 5 FUZZY TEXT c\r\n",
			prefix: "a SEARCH ", criteria: "1:5 NOT (SEEN OR FLAGGED HEADER \"X-Tag\" \"a\") OR (DELETED $) BODY \"b\" UNSEEN MODSEQ \"/flags/\\\\seen\" all 5 FUZZY TEXT \"c\"",
			text: true, groups: []string{"FLAGGED", "SEEN", "(DELETED $)", "1:5 UNSEEN MODSEQ \"/flags/\\\\seen\" all 5"}},
		{name: "empty string", raw: "a SEARCH HEADER X-Flag \"\"\r\n", prefix: "a SEARCH ", criteria: `HEADER "X-Flag" ""`, text: true},
	} {
		q, err := parseRaw([]byte(tc.raw))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if q.uid != tc.uid || q.sort != tc.sort || q.prefix != tc.prefix || q.charset != tc.charset || q.hasText() != tc.text {
			t.Errorf("%s: %+v", tc.name, q)
		}
		if got := string(appendCriteria(nil, q.keys)); got != tc.criteria {
			t.Errorf("%s: criteria %q, want %q", tc.name, got, tc.criteria)
		}
		sr := &searchRun{q: q}
		sr.and(q.keys)
		if len(sr.groups) != len(tc.groups) {
			t.Errorf("%s: groups %q, want %q", tc.name, sr.groups, tc.groups)
			continue
		}
		for i := range tc.groups {
			if sr.groups[i] != tc.groups[i] {
				t.Errorf("%s: groups %q, want %q", tc.name, sr.groups, tc.groups)
			}
		}
	}
}

func TestParseSearchRefused(t *testing.T) {
	for _, raw := range []string{
		"a SEARCH\r\n",
		"a SEARCH (FROM\r\n",
		"a SEARCH BODY\r\n",
		"a SEARCH NOSUCHKEY x\r\n",
		"a SEARCH BODY x)\r\n",
		"a SEARCH KEYWORD {3}\r\nabc\r\n",
		"a SEARCH CHARSET {5}\r\nUTF-8 BODY x\r\n",
		"a SORT (SUBJECT {3}\r\nabc) UTF-8 BODY x\r\n",
		"a SORT BODY x\r\n",
		"a SEARCH RETURN (ALL (x)) BODY x\r\n",
		"a SEARCH " + string(bytes.Repeat([]byte("NOT "), maxSearchDepth+2)) + "BODY x\r\n",
	} {
		if q, err := parseRaw([]byte(raw)); err == nil {
			t.Errorf("parseSearch(%q) = %+v, want an error", raw, q)
		}
	}
	q, err := parseRaw([]byte("a SEARCH RETURN (UPDATE) BODY x\r\n"))
	if err != nil || !q.update {
		t.Errorf("RETURN (UPDATE): %+v, %v", q, err)
	}
}

// TestEval: the criteria's value for one message from the upstream's
// answers to their parts without text, and unknown while a text key's is.
func TestEval(t *testing.T) {
	q, err := parseRaw([]byte("a SEARCH OR (SEEN BODY x) NOT (FLAGGED SUBJECT y)\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	sr := &searchRun{q: q}
	root := sr.and(q.keys)
	// groups: SEEN, FLAGGED
	seen, flagged := map[uint32]bool{1: true, 2: true}, map[uint32]bool{2: true, 3: true}
	member := []map[uint32]bool{seen, flagged}
	for _, tc := range []struct {
		num          uint32
		v, known     bool
		explanations string
	}{
		{1, true, true, "SEEN, not FLAGGED: NOT (FLAGGED ...) is true"},
		{2, false, false, "SEEN and FLAGGED: both sides need the text"},
		{3, false, false, "FLAGGED, not SEEN: the right side needs the text"},
		{4, true, true, "neither: the right side is true"},
	} {
		v, known := root.eval(tc.num, member, nil)
		if v != tc.v || known != tc.known {
			t.Errorf("message %d (%s): %v, %v", tc.num, tc.explanations, v, known)
		}
	}
}

func TestRewritten(t *testing.T) {
	q, err := parseRaw([]byte("a UID SEARCH RETURN (SAVE) CHARSET UTF-8 FLAGGED BODY " + "{2}\r\n\xc3\xa9\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		matched, unmatched []uint32
		want               string
	}{
		{[]uint32{7, 5, 6}, []uint32{9}, "a UID SEARCH RETURN (SAVE) CHARSET UTF-8 OR (FLAGGED BODY {2}\r\n\xc3\xa9) UID 5:7 NOT UID 9\r\n"},
		{nil, []uint32{9, 11}, "a UID SEARCH RETURN (SAVE) CHARSET UTF-8 FLAGGED BODY {2}\r\n\xc3\xa9 NOT UID 9,11\r\n"},
		{[]uint32{3}, nil, "a UID SEARCH RETURN (SAVE) CHARSET UTF-8 OR (FLAGGED BODY {2}\r\n\xc3\xa9) UID 3\r\n"},
	} {
		if got := string(q.rewritten(tc.matched, tc.unmatched)); got != tc.want {
			t.Errorf("rewritten(%v, %v) = %q, want %q", tc.matched, tc.unmatched, got, tc.want)
		}
	}
}

// FuzzSearchCommand: parseSearch never panics; what it reads, it writes
// back so that it reads the same again, and the rewritten command too.
func FuzzSearchCommand(f *testing.F) {
	files, _ := filepath.Glob("testdata/search/*.imap")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, err := parseRaw(raw)
		if err != nil {
			return
		}
		sr := &searchRun{q: q}
		root := sr.and(q.keys)
		member := make([]map[uint32]bool, len(sr.groups))
		root.eval(1, member, nil)
		want := appendCriteria(nil, q.keys)
		for _, re := range [][]byte{q.rewritten(nil, nil), q.rewritten([]uint32{1, 2}, []uint32{4})} {
			q2, err := parseRaw(re)
			if err != nil {
				t.Fatalf("%q, rewritten as %q, does not parse: %v", raw, re, err)
			}
			if q2.uid != q.uid || q2.sort != q.sort || q2.charset != q.charset || q2.update != q.update || q2.prefix != q.prefix {
				t.Fatalf("%q, rewritten as %q, reads as %+v, was %+v", raw, re, q2, q)
			}
			if len(re) == len(q.rewritten(nil, nil)) && !bytes.Equal(appendCriteria(nil, q2.keys), want) {
				t.Fatalf("%q, rewritten as %q, has criteria %q, want %q", raw, re, appendCriteria(nil, q2.keys), want)
			}
		}
	})
}
