package smime

import "bytes"

// EditHeader rewrites the header fields of the RFC 5322 message msg with the
// package's own MIME reader, so that what Sign later sees is split the same
// way. edit gets each field's canonical name and its raw bytes (continuation
// lines and line ending included) and returns what to put in its place: raw
// itself to keep it, nil to drop it. Everything edit keeps, and the body, stay
// byte for byte; when edit changes nothing, msg itself is returned. A
// header block larger than DefaultLimits.MaxHeaderBytes is a *LimitError.
func EditHeader(msg []byte, edit func(name string, raw []byte) []byte) ([]byte, error) {
	e, err := parseEntity(msg, DefaultLimits.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	edited := make([][]byte, len(e.fields))
	n, changed := 0, false
	for i, f := range e.fields {
		edited[i] = edit(f.name, f.raw)
		n += len(f.raw)
		changed = changed || !bytes.Equal(edited[i], f.raw)
	}
	if !changed {
		return msg, nil // no copy of a message that may be large
	}
	out := make([]byte, 0, len(msg))
	for _, f := range edited {
		out = append(out, f...)
	}
	// The fields are contiguous from the start; what follows them is the
	// blank line and the body, or nothing for a message without a body.
	return append(out, msg[n:]...), nil
}
