package imap

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"mime"
	"strings"

	"smimeproxy/config"
	"smimeproxy/internal/mailaddr"
	"smimeproxy/smime"
)

// The Authentication-Results field says what the proxy found, but no mail
// client shows it. For the states a person must notice, the proxy also puts
// a word before the Subject (imap.verdict), and optionally a short text at
// the top of the message, as Apple Mail shows a band over a bad signature.
// Both are part of the served message, so that every item a client fetches
// (ENVELOPE, header fields, structure, sizes, ranges) agrees.

// verdictState is what a person is told of a message, the worst state met.
type verdictState int

const (
	stateNone verdictState = iota // neither signed nor encrypted
	stateValid
	stateUndecryptable
	stateUntrusted
	stateMismatch
	stateInvalid
)

// stateOf reads the state from what Open found.
func stateOf(o *smime.Opened) verdictState {
	st := stateNone
	if o.Encrypted && !o.Decrypted {
		st = stateUndecryptable
	}
	for _, sig := range o.Signatures {
		var s verdictState
		switch sig.Status {
		case smime.StatusValid:
			s = stateValid
		case smime.StatusUntrusted, smime.StatusExpired, smime.StatusUnknownSigner, smime.StatusWeak:
			s = stateUntrusted
		case smime.StatusAddressMismatch:
			s = stateMismatch
		default:
			s = stateInvalid
		}
		st = max(st, s)
	}
	return st
}

// word is the configured word for a state.
func verdictWord(v config.Verdict, st verdictState) string {
	switch st {
	case stateValid:
		return v.Valid
	case stateUndecryptable:
		return v.Undecryptable
	case stateUntrusted:
		return v.Untrusted
	case stateMismatch:
		return v.Mismatch
	case stateInvalid:
		return v.Invalid
	}
	return ""
}

// ownMessage reports a message the user's own mail client signed or
// encrypted itself, with a key the proxy may not know: one from one of the
// user's addresses whose signatures did not fail. It is left as it is, but
// for a signature that does not verify, which nobody's own client makes.
func ownMessage(st verdictState, from []string, own []string) bool {
	if st == stateInvalid || st == stateMismatch {
		return false
	}
	for _, f := range from {
		for _, a := range own {
			if f == mailaddr.Normalize(a) {
				return true
			}
		}
	}
	return false
}

// verdictReason is the banner's sentence: the word, without brackets, and
// why.
func verdictReason(word string, o *smime.Opened) string {
	what := strings.TrimSpace(strings.Trim(strings.TrimSpace(word), "[]"))
	why := ""
	for _, sig := range o.Signatures {
		if sig.Status != smime.StatusValid {
			why = sig.Reason
			break
		}
	}
	if why == "" && o.DecryptErr != nil {
		why = "no key of yours opens it"
	}
	if why == "" {
		return what + "."
	}
	return what + ": " + why + "."
}

// withVerdict returns msg with word before its Subject and, when banner is
// set, a text part holding text before its content.
func withVerdict(msg []byte, word, text string, banner bool) []byte {
	fields, body := splitHeader(msg)
	eol := "\r\n"
	prefix := []byte(encodeWord(word))
	subject := false
	for i, f := range fields {
		name, value, ok := bytes.Cut(f, []byte(":"))
		if !ok || !strings.EqualFold(strings.TrimSpace(string(name)), "Subject") {
			continue
		}
		lead := len(value) - len(bytes.TrimLeft(value, " \t"))
		fields[i] = concat(name, []byte(": "), prefix, value[lead:])
		subject = true
		break
	}
	if !subject {
		fields = append(fields, []byte("Subject: "+strings.TrimSpace(string(prefix))+eol))
	}
	if !banner {
		var b bytes.Buffer
		for _, f := range fields {
			b.Write(f)
		}
		b.WriteString(eol)
		b.Write(body)
		return b.Bytes()
	}
	var top, content [][]byte
	for _, f := range fields {
		name, _, _ := bytes.Cut(f, []byte(":"))
		n := strings.ToLower(strings.TrimSpace(string(name)))
		switch {
		case strings.HasPrefix(n, "content-"):
			content = append(content, f)
		case n != "mime-version":
			top = append(top, f)
		}
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "verdict-" + hex.EncodeToString(rnd[:])
	var b bytes.Buffer
	for _, f := range top {
		b.Write(f)
	}
	b.WriteString("MIME-Version: 1.0" + eol)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"" + boundary + "\"" + eol + eol)
	b.WriteString("--" + boundary + eol)
	b.WriteString("Content-Type: text/plain; charset=utf-8" + eol + "Content-Disposition: inline" + eol)
	b.WriteString("Content-Transfer-Encoding: 8bit" + eol + eol)
	b.WriteString(text + eol)
	b.WriteString("--" + boundary + eol)
	for _, f := range content {
		b.Write(f)
	}
	b.WriteString(eol)
	b.Write(body)
	if !bytes.HasSuffix(body, []byte("\n")) {
		b.WriteString(eol)
	}
	b.WriteString("--" + boundary + "--" + eol)
	return b.Bytes()
}

// encodeWord writes a word for a header field: as it is when ASCII, as an
// RFC 2047 encoded word otherwise, followed by a space either way.
func encodeWord(word string) string {
	w := strings.TrimSpace(word)
	for i := 0; i < len(w); i++ {
		if w[i] >= 0x80 {
			return mime.QEncoding.Encode("utf-8", w) + " "
		}
	}
	return w + " "
}

// splitHeader splits a message into its header fields (each with its
// continuation lines and line ending) and its body.
func splitHeader(msg []byte) (fields [][]byte, body []byte) {
	end := headerEnd(msg)
	if end < 0 {
		end = len(msg)
	}
	for rest := msg[:end]; len(rest) > 0; {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		line := rest[:n]
		rest = rest[n:]
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			last := fields[len(fields)-1]
			fields[len(fields)-1] = append(last[:len(last):len(last)], line...)
			continue
		}
		fields = append(fields, line)
	}
	body = msg[end:]
	body = bytes.TrimPrefix(body, []byte("\r\n"))
	body = bytes.TrimPrefix(body, []byte("\n"))
	return fields, body
}
