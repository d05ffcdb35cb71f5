package smime

import (
	"bytes"
	"mime"
	"slices"
	"strings"
)

// Reading header protection (RFC 9788 4): the payload's protected fields
// are what the reader sees. A protected field wins over the outer ones of
// its name; an outer field whose name the payload lacks stays, so trace
// fields and what servers added on the way are kept. In a payload that came
// out of an encryption layer, the Legacy Display Element is left out: the
// reader sees the fields where fields belong. Outside such a payload an
// hp-legacy-display parameter is ignored, or anyone could hide the start of
// a message.

// promotion is what header protection changes in the served header.
type promotion struct {
	// fields are the protected fields that take the place of the outer
	// fields of the names in replace: those whose values differ.
	fields  []field
	replace map[string]bool
	// stripped is the payload without its Legacy Display Element; nil
	// when it has none or keeps it.
	stripped *entity
}

// headerProtection reads the header protection of the entity to serve, l,
// into w.o, and returns what it changes in the served message: nil when l
// carries none. The top level's own fields are never protected ones.
func (w *opener) headerProtection(top *entity, l layer) *promotion {
	// Within a kept multipart/signed, the protected fields sit on its first part.
	direct := true
	for range maxLayers {
		if k := Classify(l.e.header); k != Signed && k != PGPSigned {
			break
		}
		first, _, ok := signedParts(l)
		if !ok {
			return nil
		}
		e, err := parseEntity(l.buf[first.Start:first.rfcEnd], w.lim.MaxHeaderBytes)
		if err != nil {
			return nil
		}
		l, direct = layer{buf: l.buf, part: first, e: e}, false
	}
	e := l.e
	if e == top {
		return nil
	}
	_, params := mediaType(e.header)
	var mode string
	switch hp := strings.ToLower(params[hpParam]); {
	case hp == "cipher" || hp == "clear":
		mode = hp
	case strings.EqualFold(params["protected-headers"], "v1"):
		mode = "v1"
	default:
		return nil // none, or a value RFC 9788 does not define
	}
	var fields []field
	for _, f := range e.fields {
		if isProtectable(f.name) {
			fields = append(fields, f)
		}
	}
	w.o.HeaderProtection = mode
	w.o.ProtectedHeaders = headerOf(fields)

	pr := &promotion{replace: differing(top.fields, fields)}
	for _, f := range fields {
		if pr.replace[f.name] {
			pr.fields = append(pr.fields, f)
		}
	}
	if pr.replace["From"] {
		w.checkFrom(fromAddresses(w.o.ProtectedHeaders))
	}
	if direct && w.o.Encrypted && w.o.Decrypted && mode != "clear" {
		pr.stripped = w.withoutLegacyDisplay(l, mode)
	}
	return pr
}

// differing names the fields of protected whose values differ from those
// of the outer fields of the same name.
func differing(outer, protected []field) map[string]bool {
	values := func(fields []field) map[string][]string {
		m := map[string][]string{}
		for _, f := range fields {
			m[f.name] = append(m[f.name], fieldValue(f.raw))
		}
		return m
	}
	out, in := values(outer), values(protected)
	diff := map[string]bool{}
	for name, v := range in {
		if !slices.Equal(out[name], v) {
			diff[name] = true
		}
	}
	return diff
}

// checkFrom checks again, against from (the protected From the reader
// sees), the signatures that were checked against the outer From.
func (w *opener) checkFrom(from []string) {
	if len(from) == 0 {
		return
	}
	for _, s := range w.o.Signatures {
		if !s.fromChecked || s.Status != StatusValid && s.Status != StatusAddressMismatch {
			continue
		}
		if namesAll(s.Signer, from) {
			s.Status, s.Reason = StatusValid, reasonVerified
		} else {
			s.Status, s.Reason = StatusAddressMismatch, reasonAddressMismatch
		}
	}
}

// edit replaces buf[start:end] by repl.
type edit struct {
	start, end int
	repl       []byte
}

// withoutLegacyDisplay returns the payload l without its Legacy Display
// Element: for hp, the elements of the main body parts marked
// hp-legacy-display="1"; for the older protected-headers="v1", the legacy
// display part that leads a multipart/mixed. Nil when there is none, or
// when l is not a whole buffer the walker read.
func (w *opener) withoutLegacyDisplay(l layer, mode string) *entity {
	buf, root := l.buf, l.part
	if root.Start != 0 || len(buf)-len(l.e.body) != root.BodyStart {
		return nil
	}
	var edits []edit
	if mode == "v1" {
		edits = legacyPart(buf, l.e, root, w.lim.MaxHeaderBytes)
	} else {
		mainBodyParts(buf, l.e, root, w.lim.MaxHeaderBytes, func(e *entity, p *Part) {
			edits = append(edits, legacyElement(buf, e, p)...)
		})
	}
	if len(edits) == 0 {
		return nil
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	out := make([]byte, 0, len(buf))
	at := 0
	for _, e := range edits {
		out = append(out, buf[at:e.start]...)
		out = append(out, e.repl...)
		at = e.end
	}
	out = append(out, buf[at:]...)
	e, err := parseEntity(out, w.lim.MaxHeaderBytes)
	if err != nil {
		return nil
	}
	return e
}

// legacyElement returns the edits that take the Legacy Display Element out
// of the main body part e, found in buf as p, and the hp-legacy-display
// parameter off its Content-Type; none when it has no element.
func legacyElement(buf []byte, e *entity, p *Part) []edit {
	t, params := mediaType(e.header)
	if params[legacyDisplayParam] != "1" {
		return nil
	}
	end := p.rfcEnd
	if p.Start == 0 {
		end = len(buf) // the payload itself
	}
	bodyStart := end - len(e.body)
	ct, at := -1, p.Start
	for i, f := range e.fields {
		if f.name == "Content-Type" {
			ct = i
			break
		}
		at += len(f.raw)
	}
	if ct < 0 || bodyStart < p.BodyStart {
		return nil
	}
	typ, ps, err := mime.ParseMediaType(fieldValue(e.fields[ct].raw))
	if err != nil {
		return nil
	}
	delete(ps, legacyDisplayParam)
	v := mime.FormatMediaType(typ, ps)
	if v == "" {
		return nil
	}
	text, err := decodeBody(e)
	if err != nil {
		return nil
	}
	var ok bool
	if t == "text/html" {
		text, ok = stripLegacyHTML(text)
	} else {
		text, ok = stripLegacyText(text)
	}
	if !ok {
		return nil
	}
	var body []byte
	switch transferEncoding(e.header) {
	case "base64":
		body = appendBase64(nil, text)
		if bytes.HasSuffix(e.body, []byte("\n")) {
			body = append(body, "\r\n"...)
		}
	case "quoted-printable":
		body = encodeQP(text)
	default:
		body = text
	}
	return []edit{
		{start: at, end: at + len(e.fields[ct].raw), repl: []byte(fieldName(e.fields[ct].raw) + ": " + v + "\r\n")},
		{start: bodyStart, end: end, repl: body},
	}
}

// legacyPart returns the edit that takes out the legacy display part of
// the older scheme (draft-autocrypt-lamps-protected-headers): the first
// part of a multipart/mixed payload e, found in buf as p, when it is
// text/plain or text/rfc822-headers marked protected-headers="v1".
func legacyPart(buf []byte, e *entity, p *Part, maxHeader int) []edit {
	if t, _ := mediaType(e.header); t != "multipart/mixed" || p.Kind != Multipart || len(p.Children) < 2 {
		return nil
	}
	first := p.Children[0]
	fe, err := parseEntity(buf[first.Start:first.rfcEnd], maxHeader)
	if err != nil {
		return nil
	}
	t, params := mediaType(fe.header)
	if t != "text/plain" && t != "text/rfc822-headers" || !strings.EqualFold(params["protected-headers"], "v1") {
		return nil
	}
	// From the first delimiter line to the second: the line break before
	// the second stays, as the first one's.
	return []edit{{start: delimLine(buf, first.delim), end: delimLine(buf, p.Children[1].delim)}}
}

// delimLine is where the delimiter line whose line break before it starts
// at delim begins.
func delimLine(buf []byte, delim int) int {
	switch {
	case bytes.HasPrefix(buf[delim:], []byte("\r\n")):
		return delim + 2
	case bytes.HasPrefix(buf[delim:], []byte("\n")):
		return delim + 1
	}
	return delim
}
