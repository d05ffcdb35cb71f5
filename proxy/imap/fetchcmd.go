package imap

import (
	"fmt"
	"strconv"
	"strings"
)

// fetchCmd is a client's FETCH or UID FETCH, as far as the relay reads it:
// the set it names and the items it asks for. The command itself goes
// upstream as the client wrote it.
type fetchCmd struct {
	uid   bool
	set   string
	items []fetchItem
	// setAt and setEnd are where the set is in the command's first line,
	// so that the relay can send the command for part of it; itemsEnd is
	// where the items end, and the modifiers, if any, begin.
	setAt, setEnd, itemsEnd int
}

// fetchItem is one item asked for: BODY.PEEK and BINARY.PEEK are named
// BODY and BINARY, since they are answered under those names.
type fetchItem struct {
	raw     string // as written
	peek    bool   // BODY.PEEK or BINARY.PEEK
	name    string // upper case
	section string // between the brackets, as written; "" with hasSection for BODY[]
	hasSect bool
	partial bool
	offset  int64
	count   int64
}

// contentItems are the items whose answer depends on a message's content,
// which the relay changes for S/MIME messages.
var contentItems = map[string]bool{
	"BODY": true, "BODYSTRUCTURE": true, "BINARY": true, "BINARY.SIZE": true,
	"RFC822": true, "RFC822.HEADER": true, "RFC822.TEXT": true, "RFC822.SIZE": true,
	"ENVELOPE": true, "PREVIEW": true, "SNIPPET": true,
}

// fetchMacros are RFC 3501's shorthands.
var fetchMacros = map[string][]string{
	"ALL":  {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"},
	"FAST": {"FLAGS", "INTERNALDATE", "RFC822.SIZE"},
	"FULL": {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"},
}

func (f *fetchCmd) needsContent() bool {
	for _, it := range f.items {
		if contentItems[it.name] {
			return true
		}
	}
	return false
}

// parseFetch reads a FETCH command's arguments; sc is after the command
// name.
func parseFetch(sc *scanner, uid bool) (*fetchCmd, error) {
	f := &fetchCmd{uid: uid}
	if err := sc.sp(); err != nil {
		return nil, err
	}
	f.setAt = sc.pos
	set, err := sc.atom()
	if err != nil {
		return nil, err
	}
	f.set, f.setEnd = set, sc.pos
	if err := sc.sp(); err != nil {
		return nil, err
	}
	list := sc.peek() == '('
	if list {
		sc.pos++
	}
	for {
		it, err := parseFetchItem(sc)
		if err != nil {
			return nil, err
		}
		if m, ok := fetchMacros[it.name]; ok && !it.hasSect {
			for _, n := range m {
				f.items = append(f.items, fetchItem{raw: n, name: n})
			}
		} else {
			f.items = append(f.items, it)
		}
		if !list {
			break
		}
		if sc.peek() == ')' {
			sc.pos++
			break
		}
		if err := sc.sp(); err != nil {
			return nil, err
		}
	}
	// Modifiers such as (CHANGEDSINCE n) may follow; the upstream reads them.
	f.itemsEnd = sc.pos
	return f, nil
}

// parseFetchItem reads one item of a FETCH command: a name, an optional
// [section] and an optional <partial>.
func parseFetchItem(sc *scanner) (fetchItem, error) {
	var it fetchItem
	start := sc.pos
	name, sect, has, rest, err := itemName(sc)
	if err != nil {
		return it, err
	}
	it.raw = string(sc.line[start:sc.pos])
	it.name = strings.ToUpper(name)
	it.name, it.peek = strings.CutSuffix(it.name, ".PEEK")
	it.section, it.hasSect = sect, has
	if rest != "" {
		o, c, ok := strings.Cut(strings.Trim(rest, "<>"), ".")
		off, err1 := strconv.ParseInt(o, 10, 64)
		cnt, err2 := strconv.ParseInt(c, 10, 64)
		if !ok || err1 != nil || err2 != nil || off < 0 || cnt <= 0 {
			return it, fmt.Errorf("%w: invalid partial %q", errSyntax, rest)
		}
		it.partial, it.offset, it.count = true, off, cnt
	}
	return it, nil
}

// itemName reads an item's name as it appears in a command or a response:
// NAME, NAME[section] or NAME[section]<partial>. The section may hold
// spaces, parentheses and quoted strings.
func itemName(sc *scanner) (name, section string, hasSection bool, partial string, err error) {
	start := sc.pos
	for !sc.atEOL() {
		c := sc.line[sc.pos]
		if c == '[' || c == ' ' || c == '(' || c == ')' || c == '"' || c == '<' {
			break
		}
		sc.pos++
	}
	name = string(sc.line[start:sc.pos])
	if name == "" {
		return "", "", false, "", fmt.Errorf("%w: expected a fetch item", errSyntax)
	}
	if !sc.atEOL() && sc.line[sc.pos] == '[' {
		sc.pos++
		sstart := sc.pos
		quoted := false
		for {
			if sc.atEOL() {
				return "", "", false, "", fmt.Errorf("%w: unfinished section", errSyntax)
			}
			c := sc.line[sc.pos]
			if quoted && c == '\\' {
				sc.pos += 2
				continue
			}
			if c == '"' {
				quoted = !quoted
			}
			if c == ']' && !quoted {
				break
			}
			sc.pos++
		}
		section = string(sc.line[sstart:sc.pos])
		hasSection = true
		sc.pos++
	}
	if !sc.atEOL() && sc.line[sc.pos] == '<' {
		pstart := sc.pos
		for !sc.atEOL() && sc.line[sc.pos] != '>' {
			sc.pos++
		}
		if sc.atEOL() {
			return "", "", false, "", fmt.Errorf("%w: unfinished partial", errSyntax)
		}
		sc.pos++
		partial = string(sc.line[pstart:sc.pos])
	}
	return name, section, hasSection, partial, nil
}
