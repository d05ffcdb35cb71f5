package imap

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// searchCmd is a client's SEARCH or SORT (RFC 9051 6.4.4, RFC 5256, with
// RFC 4731's and RFC 5267's RETURN options), UID or not, as far as the
// relay reads it to search inside S/MIME messages: what comes before the
// criteria, as written, and the criteria as a tree.
type searchCmd struct {
	uid  bool
	sort bool
	// prefix is the command up to its criteria, as written:
	// "a UID SEARCH RETURN (MIN) CHARSET UTF-8 ".
	prefix  string
	charset string // as written; "" when none is given
	update  bool   // RETURN (UPDATE): CONTEXT=SEARCH, which the relay does not offer
	keys    []*searchKey
}

// searchKey is one search key. A key that holds no text key is kept as
// written and goes upstream as it is; text keys are kept by their strings,
// which the relay matches itself.
type searchKey struct {
	name string       // upper case: the key's name, or "(" for a parenthesised list
	raw  string       // a key without text keys, as written
	args [][]byte     // a text key's strings: HEADER's field name and value, or the value
	kids []*searchKey // OR's two, NOT's and FUZZY's one, a list's
}

// textKeys are the keys that match a message's text, by the number of
// strings they take.
var textKeys = map[string]int{
	"BCC": 1, "BODY": 1, "CC": 1, "FROM": 1, "SUBJECT": 1, "TEXT": 1, "TO": 1, "HEADER": 2,
}

// plainKeys are the keys without text that take no argument (RFC 9051,
// RFC 8514's SAVEDATESUPPORTED), and argKeys those that take one atom or
// quoted string (a date, a number, a flag, a UID set: RFC 9051, RFC 5032's
// OLDER and YOUNGER, RFC 8514's SAVED*, RFC 8474's EMAILID and THREADID,
// RFC 5466's FILTER).
var (
	plainKeys = setOf("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
		"UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "SAVEDATESUPPORTED")
	argKeys = setOf("KEYWORD", "UNKEYWORD", "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
		"SAVEDBEFORE", "SAVEDON", "SAVEDSINCE", "LARGER", "SMALLER", "UID", "OLDER", "YOUNGER",
		"EMAILID", "THREADID", "FILTER")
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// maxSearchDepth bounds the nesting of criteria the relay reads; deeper
// ones go upstream as they are.
const maxSearchDepth = 64

// parseSearch reads a SEARCH, UID SEARCH, SORT or UID SORT command read
// whole (raw, whose first line is first). An error means the relay does
// not read it, and the upstream judges it.
func parseSearch(raw, first []byte) (*searchCmd, error) {
	sc := newScanner(bufio.NewReader(bytes.NewReader(raw[len(first):])), maxSearch, first)
	_, name, err := commandHead(sc)
	if err != nil {
		return nil, err
	}
	q := &searchCmd{}
	if name == "UID" {
		q.uid = true
		if err := sc.sp(); err != nil {
			return nil, err
		}
		if name, err = sc.atom(); err != nil {
			return nil, err
		}
		name = strings.ToUpper(name)
	}
	q.sort = name == "SORT"
	if err := sc.sp(); err != nil {
		return nil, err
	}
	if err := q.returnOptions(sc); err != nil {
		return nil, err
	}
	if err := q.charsetOf(sc); err != nil {
		return nil, err
	}
	// Nothing so far may be a literal: the prefix is on the first line.
	q.prefix = string(sc.line[:sc.pos])
	p := searchParser{sc: sc}
	for {
		k, err := p.key(0)
		if err != nil {
			return nil, err
		}
		q.keys = append(q.keys, k)
		if sc.done() {
			return q, nil
		}
		if err := sc.sp(); err != nil {
			return nil, err
		}
	}
}

// returnOptions reads "RETURN (...) ", if there.
func (q *searchCmd) returnOptions(sc *scanner) error {
	start := sc.pos
	if a, err := sc.atom(); err != nil || !eqFold(a, "RETURN") {
		sc.pos = start
		return nil
	}
	if err := sc.sp(); err != nil {
		return err
	}
	opts, err := atomList(sc)
	if err != nil {
		return err
	}
	for _, o := range opts {
		q.update = q.update || eqFold(o, "UPDATE")
	}
	return sc.sp()
}

// charsetOf reads SEARCH's "CHARSET x ", if there, and SORT's sort
// criteria and charset.
func (q *searchCmd) charsetOf(sc *scanner) error {
	if q.sort {
		if _, err := atomList(sc); err != nil {
			return err
		}
		if err := sc.sp(); err != nil {
			return err
		}
		return q.charsetValue(sc)
	}
	start := sc.pos
	if a, err := sc.atom(); err != nil || !eqFold(a, "CHARSET") {
		sc.pos = start
		return nil
	}
	if err := sc.sp(); err != nil {
		return err
	}
	return q.charsetValue(sc)
}

// charsetValue reads a charset, an atom or a quoted string, and the space
// after it.
func (q *searchCmd) charsetValue(sc *scanner) error {
	var cs []byte
	var err error
	if sc.peek() == '"' {
		cs, err = sc.quoted()
	} else {
		var a string
		a, err = sc.atom()
		cs = []byte(a)
	}
	if err != nil {
		return err
	}
	q.charset = string(cs)
	return sc.sp()
}

// atomList reads a parenthesised list of atoms, such as RETURN options or
// sort criteria.
func atomList(sc *scanner) ([]string, error) {
	if sc.peek() != '(' {
		return nil, fmt.Errorf("%w: expected a list", errSyntax)
	}
	sc.pos++
	var list []string
	for sc.peek() != ')' {
		if len(list) > 0 {
			if err := sc.sp(); err != nil {
				return nil, err
			}
		}
		a, err := sc.atom()
		if err != nil {
			return nil, err
		}
		list = append(list, a)
	}
	sc.pos++
	return list, nil
}

// hasText reports whether the criteria hold a text key.
func (q *searchCmd) hasText() bool {
	for _, k := range q.keys {
		if k.hasText() {
			return true
		}
	}
	return false
}

func (k *searchKey) hasText() bool {
	if textKeys[k.name] > 0 {
		return true
	}
	for _, c := range k.kids {
		if c.hasText() {
			return true
		}
	}
	return false
}

// searchParser reads search keys.
type searchParser struct{ sc *scanner }

func (p searchParser) key(depth int) (*searchKey, error) {
	sc := p.sc
	if depth > maxSearchDepth {
		return nil, fmt.Errorf("%w: criteria nested too deep", errSyntax)
	}
	start := sc.pos
	if sc.peek() == '(' {
		sc.pos++
		k := &searchKey{name: "("}
		for {
			kid, err := p.key(depth + 1)
			if err != nil {
				return nil, err
			}
			k.kids = append(k.kids, kid)
			if sc.peek() == ')' {
				sc.pos++
				break
			}
			if err := sc.sp(); err != nil {
				return nil, err
			}
		}
		if !k.hasText() {
			k.raw = string(sc.line[start:sc.pos])
		}
		return k, nil
	}
	a, err := sc.atom()
	if err != nil {
		return nil, err
	}
	k := &searchKey{name: strings.ToUpper(a)}
	switch {
	case isSequenceSet(a):
		k.name = "SET"
	case plainKeys[k.name]:
	case argKeys[k.name]:
		if err := sc.sp(); err != nil {
			return nil, err
		}
		if sc.peek() == '"' {
			_, err = sc.quoted()
		} else {
			_, err = sc.atom()
		}
		if err != nil {
			return nil, err
		}
	case k.name == "MODSEQ":
		// MODSEQ ["/flags/name" priv|shared|all] n (RFC 7162)
		if err := sc.sp(); err != nil {
			return nil, err
		}
		if sc.peek() == '"' {
			if _, err := sc.quoted(); err != nil {
				return nil, err
			}
			if err := sc.sp(); err != nil {
				return nil, err
			}
			if _, err := sc.atom(); err != nil {
				return nil, err
			}
			if err := sc.sp(); err != nil {
				return nil, err
			}
		}
		if _, err := sc.atom(); err != nil {
			return nil, err
		}
	case textKeys[k.name] > 0:
		for range textKeys[k.name] {
			if err := sc.sp(); err != nil {
				return nil, err
			}
			s, err := sc.astring(maxSearch, nil)
			if err != nil {
				return nil, err
			}
			k.args = append(k.args, s)
		}
		return k, nil
	case k.name == "NOT" || k.name == "FUZZY" || k.name == "OR":
		n := 1
		if k.name == "OR" {
			n = 2
		}
		for range n {
			if err := sc.sp(); err != nil {
				return nil, err
			}
			kid, err := p.key(depth + 1)
			if err != nil {
				return nil, err
			}
			k.kids = append(k.kids, kid)
		}
		if k.hasText() {
			return k, nil
		}
		// A key without text keys is on one line: its start is still there.
	default:
		return nil, fmt.Errorf("%w: unknown search key %q", errSyntax, a)
	}
	k.raw = string(sc.line[start:sc.pos])
	return k, nil
}

// isSequenceSet reports whether an atom is a sequence set ("1:5,7,*", "$").
func isSequenceSet(a string) bool {
	if a == "" || !(a[0] >= '0' && a[0] <= '9' || a[0] == '*' || a[0] == '$') {
		return false
	}
	for _, c := range []byte(a) {
		if !(c >= '0' && c <= '9' || c == ':' || c == ',' || c == '*' || c == '$') {
			return false
		}
	}
	return true
}

// appendCriteria writes keys as criteria, text keys' strings quoted or as
// literals, everything else as the client wrote it.
func appendCriteria(b []byte, keys []*searchKey) []byte {
	for i, k := range keys {
		if i > 0 {
			b = append(b, ' ')
		}
		b = k.append(b)
	}
	return b
}

func (k *searchKey) append(b []byte) []byte {
	switch {
	case k.raw != "":
		return append(b, k.raw...)
	case k.name == "(":
		b = append(b, '(')
		b = appendCriteria(b, k.kids)
		return append(b, ')')
	case len(k.kids) > 0:
		b = append(b, k.name...)
		for _, c := range k.kids {
			b = append(b, ' ')
			b = c.append(b)
		}
		return b
	}
	b = append(b, k.name...)
	for _, a := range k.args {
		b = append(b, ' ')
		b = appendString(b, a)
	}
	return b
}
