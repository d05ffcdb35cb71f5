package smime

import (
	"bytes"
	"errors"
	"mime"
	"slices"
	"strings"

	"smimeproxy/internal/ascii"
)

// Header protection (RFC 9788) puts a copy of the message's header fields
// inside the cryptographic payload, the entity that is signed or encrypted,
// and says so with an hp parameter on its Content-Type: "clear" when the
// message is only signed, "cipher" when it is encrypted. For encrypted mail
// the fields left outside then go through the baseline Header
// Confidentiality Policy (RFC 9788 3.2.2): the Subject becomes "[...]",
// Comments and Keywords go, and the rest stay. The payload records each
// protected field still outside as an HP-Outer field, and a Legacy Display
// Element in the main body parts shows what was hidden to readers whose
// client does not know header protection.

// HeaderProtection says whether Sign protects the header fields (RFC 9788).
type HeaderProtection uint8

const (
	// NoHeaderProtection leaves the header fields outside only.
	NoHeaderProtection HeaderProtection = iota
	// ProtectClear copies the header fields into the signed entity
	// (hp="clear"), for mail that is only signed: nothing outside changes.
	ProtectClear
	// ProtectCipher copies them into the signed entity (hp="cipher") for
	// mail that will be encrypted next, and obscures the outer header as the
	// baseline policy says, so that Encrypt then carries it outside.
	ProtectCipher
)

// The Content-Type parameters and the field of RFC 9788.
const (
	hpParam            = "hp"
	legacyDisplayParam = "hp-legacy-display"
	hpOuterField       = "Hp-Outer" // canonical form of HP-Outer
	obscuredSubject    = "[...]"
)

// errProtectedContent: header protection applies to the innermost entity,
// so content that is already S/MIME or PGP/MIME cannot carry it.
var errProtectedContent = errors.New("smime: header protection: the content is already signed or encrypted; protect the header when signing it")

// transportFields are written by the systems a message passes through, not
// by its author: they are neither copied into a payload nor taken from one,
// so that a sender cannot plant, say, a verdict the reader's server seems
// to have given.
var transportFields = map[string]bool{
	"Received":                   true,
	"Return-Path":                true,
	"Delivered-To":               true,
	"Authentication-Results":     true,
	"Received-Spf":               true,
	"Dkim-Signature":             true,
	"Arc-Seal":                   true,
	"Arc-Message-Signature":      true,
	"Arc-Authentication-Results": true,
}

// isProtectable reports whether a header field named name (canonical form)
// is one that header protection copies: not a content field, not
// MIME-Version, not a transport field, not HP-Outer.
func isProtectable(name string) bool {
	return !isContentField(name) && name != "Mime-Version" && name != hpOuterField && !transportFields[name]
}

// userFacing are the fields a reader sees (RFC 9788 1.1.2): when the
// policy hides one, the Legacy Display Element shows it.
var userFacing = map[string]bool{
	"Subject": true, "From": true, "To": true, "Cc": true, "Date": true,
	"Reply-To": true, "Followup-To": true, "Keywords": true, "Comments": true,
}

// protection is what header protection adds to a payload.
type protection struct {
	mode HeaderProtection
	// copies are the protected fields; hpOuter (cipher) records those of
	// them that stay outside, as they are there.
	copies, hpOuter []field
	// legacy is what the Legacy Display Element shows; nil: none.
	legacy []legacyLine
}

// protect plans header protection in mode for the header fields of e.
func protect(e *entity, mode HeaderProtection) *protection {
	pr := &protection{mode: mode}
	for _, f := range e.fields {
		if !isProtectable(f.name) {
			continue
		}
		raw := crlfField(f.raw)
		pr.copies = append(pr.copies, field{name: f.name, raw: raw})
		if mode != ProtectCipher {
			continue
		}
		out := baseline(f.name, raw)
		if out != nil {
			pr.hpOuter = append(pr.hpOuter, field{name: hpOuterField, raw: append([]byte("HP-Outer: "), out...)})
		}
		if userFacing[f.name] && (out == nil || fieldValue(out) != fieldValue(raw)) {
			pr.legacy = append(pr.legacy, legacyLine{name: fieldName(raw), value: fieldValue(raw)})
		}
	}
	return pr
}

// outside is what the outer header field raw, named name, becomes in a
// message protected in mode; nil removes it.
func outside(name string, raw []byte, mode HeaderProtection) []byte {
	if mode != ProtectCipher || !isProtectable(name) {
		return raw
	}
	return baseline(name, raw)
}

// baseline is hcp_baseline (RFC 9788 3.2.2): what the field raw, named
// name, becomes outside an encrypted message; nil removes it.
func baseline(name string, raw []byte) []byte {
	switch name {
	case "Subject":
		return []byte(fieldName(raw) + ": " + obscuredSubject + "\r\n")
	case "Comments", "Keywords":
		return nil
	}
	return raw
}

// fieldName is the name of the raw field as written.
func fieldName(raw []byte) string {
	name, _, _ := bytes.Cut(raw, []byte(":"))
	return strings.TrimRight(string(name), " \t")
}

// fieldValue is the raw field's value, unfolded and trimmed.
func fieldValue(raw []byte) string {
	_, v, _ := bytes.Cut(raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// withParams returns the Content-Type field raw with each of params set,
// ending in CRLF. A parameter it does not have yet is appended, leaving the
// rest as written; one it has is replaced, which needs the value to parse.
// False when it cannot be done.
func withParams(raw []byte, params ...[2]string) ([]byte, bool) {
	_, have := mediaType(headerOf([]field{{name: "Content-Type", raw: raw}}))
	replace := false
	for _, p := range params {
		_, ok := have[p[0]]
		replace = replace || ok
	}
	if replace {
		t, ps, err := mime.ParseMediaType(fieldValue(raw))
		if err != nil {
			return nil, false
		}
		for _, p := range params {
			ps[p[0]] = p[1]
		}
		v := mime.FormatMediaType(t, ps)
		if v == "" {
			return nil, false
		}
		return []byte(fieldName(raw) + ": " + v + "\r\n"), true
	}
	out := bytes.TrimRight(crlfField(raw), "\r\n")
	out = out[:len(out):len(out)]
	for _, p := range params {
		add := " " + p[0] + "=\"" + p[1] + "\""
		line := out[bytes.LastIndexByte(out, '\n')+1:]
		if len(line)+1+len(add) > 76 {
			out = append(out, ";\r\n"...)
		} else {
			out = append(out, ';')
		}
		out = append(out, add...)
	}
	return append(out, "\r\n"...), true
}

// mainBodyParts calls visit for each main body part below e, which the
// walker found in buf as p (RFC 9788 4.5.2): a text/plain or text/html leaf
// that is not an attachment; every alternative of a multipart/alternative;
// the first part of any other multipart, except signed and encrypted ones,
// whose bytes stay as they are.
func mainBodyParts(buf []byte, e *entity, p *Part, maxHeader int, visit func(*entity, *Part)) {
	t, _ := mediaType(e.header)
	children := p.Children
	switch {
	case p.Kind == Leaf && (t == "text/plain" || t == "text/html"):
		if d, _, _ := mime.ParseMediaType(e.header.Get("Content-Disposition")); d != "attachment" {
			visit(e, p)
		}
		return
	case p.Kind != Multipart || len(children) == 0 || t == "multipart/signed" || t == "multipart/encrypted":
		return
	case t != "multipart/alternative":
		children = children[:1]
	}
	for _, child := range children {
		if ce, err := parseEntity(buf[child.Start:child.rfcEnd], maxHeader); err == nil {
			mainBodyParts(buf, ce, child, maxHeader, visit)
		}
	}
}

// legacyLeaf writes the main body part e, of type t, with the Legacy
// Display Element at the start of its text. False, with nothing written,
// when its Content-Type cannot take the parameter that says so.
func (c *canon) legacyLeaf(e *entity, t string) (bool, error) {
	body, err := decodeBody(e)
	if err != nil {
		return false, err
	}
	fields := slices.Clone(e.fields)
	ct := slices.IndexFunc(fields, func(f field) bool { return f.name == "Content-Type" })
	if ct < 0 {
		fields = append(fields, field{name: "Content-Type", raw: []byte("Content-Type: text/plain; charset=us-ascii\r\n")})
		ct = len(fields) - 1
	}
	_, params := mediaType(headerOf(fields))
	if params[legacyDisplayParam] != "" {
		return false, nil // it has one already
	}
	set := [][2]string{{legacyDisplayParam, "1"}}
	// The text is the element and then the body, which is not copied to
	// join them unless it must be encoded: the element ends in a line
	// break, so each is 7-bit safe alone if the whole is.
	var text [][]byte
	if t == "text/html" {
		text = [][]byte{insertHTML(body, legacyHTML(c.legacy))}
	} else {
		elem := legacyText(c.legacy, true)
		if !ascii.Valid(elem) {
			switch strings.ToLower(params["charset"]) {
			case "", "us-ascii":
				set = append(set, [2]string{"charset", "utf-8"})
			case "utf-8", "utf8":
			default:
				elem = legacyText(c.legacy, false)
			}
		}
		text = [][]byte{elem, body}
	}
	raw, ok := withParams(fields[ct].raw, set...)
	if !ok {
		return false, nil
	}
	fields[ct] = field{name: "Content-Type", raw: raw}
	cte := transferEncoding(e.header)
	switch {
	case cte == "base64":
		c.join(fields, "base64", appendBase64(nil, bytes.Join(text, nil)), true)
	case cte != "quoted-printable" && !slices.ContainsFunc(text, func(b []byte) bool { return !sevenBitSafe(b) }):
		newCTE := ""
		if cte == "8bit" || cte == "binary" {
			newCTE = "7bit"
		}
		c.fields(fields, newCTE)
		c.put(crlf, true)
		for _, b := range text {
			c.put(toCRLF(b), true)
		}
	default:
		c.join(fields, "quoted-printable", encodeQP(bytes.Join(text, nil)), true)
	}
	return true, nil
}
