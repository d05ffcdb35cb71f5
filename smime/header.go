package smime

// EditHeader rewrites the header fields of the RFC 5322 message msg with the
// package's own MIME reader, so that what Sign later sees is split the same
// way. edit gets each field's canonical name and its raw bytes (continuation
// lines and line ending included) and returns what to put in its place: raw
// itself to keep it, nil to drop it. Everything edit keeps, and the body, stay
// byte for byte. A header block larger than DefaultLimits.MaxHeaderBytes is
// a *LimitError.
func EditHeader(msg []byte, edit func(name string, raw []byte) []byte) ([]byte, error) {
	e, err := parseEntity(msg, DefaultLimits.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(msg))
	n := 0
	for _, f := range e.fields {
		out = append(out, edit(f.name, f.raw)...)
		n += len(f.raw)
	}
	// The fields are contiguous from the start; what follows them is the
	// blank line and the body, or nothing for a message without a body.
	return append(out, msg[n:]...), nil
}
