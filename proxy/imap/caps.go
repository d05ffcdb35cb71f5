package imap

import (
	"bytes"
	"strings"
)

// After login the client is offered the upstream's own capabilities, minus
// the ones the relay cannot keep honest. Each is named here with the reason;
// the README's table says the same.
var removedCaps = []struct {
	prefix string // a capability, or with a trailing "=" every variant of one
	why    string
}{
	{"COMPRESS=", "the relay reads and rewrites the stream, so a compressed upstream leg would be opaque to it"},
	{"NOTIFY", "NOTIFY sends message data outside the FETCH answers the relay rewrites"},
	{"URLAUTH", "a URL would hand out an S/MIME message's content past the relay"},
	{"URLAUTH=", "as URLAUTH"},
	{"URL-PARTIAL", "as URLAUTH"},
	{"CATENATE", "CATENATE copies message content by URL, past the relay"},
	{"UNAUTHENTICATE", "the upstream connection would change user under the relay, which decrypts with the first user's keys"},
	{"LOGIN-REFERRALS", "a referral would send the client past the proxy"},
	{"MAILBOX-REFERRALS", "a referral would send the client past the proxy"},
	{"CONTEXT=SEARCH", "the upstream would update a search's results from the messages as stored, where the relay searches inside S/MIME ones"},
	{"CONTEXT=SORT", "as CONTEXT=SEARCH"},
}

// refusedCommands are the commands of removed capabilities: a client that
// sends one anyway is answered by the relay, never by the upstream.
var refusedCommands = map[string]string{
	"COMPRESS":       "COMPRESS is not available through this proxy",
	"NOTIFY":         "NOTIFY is not available through this proxy",
	"URLFETCH":       "URLAUTH is not available through this proxy",
	"GENURLAUTH":     "URLAUTH is not available through this proxy",
	"RESETKEY":       "URLAUTH is not available through this proxy",
	"UNAUTHENTICATE": "UNAUTHENTICATE is not available through this proxy; log out instead",
	"STARTTLS":       "TLS can only be started before login",
	"AUTHENTICATE":   "Already logged in",
	"LOGIN":          "Already logged in",
	"CANCELUPDATE":   "CONTEXT=SEARCH is not available through this proxy",
}

func removedCap(c string) bool {
	for _, r := range removedCaps {
		if strings.HasSuffix(r.prefix, "=") && len(c) > len(r.prefix) && strings.EqualFold(c[:len(r.prefix)], r.prefix) ||
			strings.EqualFold(c, r.prefix) {
			return true
		}
	}
	return false
}

// filterCaps removes the relay's exceptions from a space-separated list of
// capabilities, keeping the rest as the upstream wrote them.
func filterCaps(list []byte) []byte {
	fields := bytes.Fields(list)
	out := make([]byte, 0, len(list))
	for _, f := range fields {
		if removedCap(string(f)) {
			continue
		}
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, f...)
	}
	return out
}

// filterCapLine rewrites the capabilities in one response line, whether
// they are a CAPABILITY response or a [CAPABILITY ...] response code; any
// other line is returned as it is.
func filterCapLine(line []byte) []byte {
	body := trimEOL(line)
	eol := line[len(body):]
	if rest, ok := cutPrefixFold(body, "* CAPABILITY "); ok {
		return concat([]byte("* CAPABILITY "), filterCaps(rest), eol)
	}
	i := indexFold(body, "[CAPABILITY ")
	if i < 0 {
		return line
	}
	start := i + len("[CAPABILITY ")
	end := bytes.IndexByte(body[start:], ']')
	if end < 0 {
		return line
	}
	end += start
	return concat(body[:start], filterCaps(body[start:end]), body[end:], eol)
}

func concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func cutPrefixFold(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || !eqFold(b[:len(prefix)], prefix) {
		return b, false
	}
	return b[len(prefix):], true
}

func indexFold(b []byte, sub string) int {
	for i := 0; i+len(sub) <= len(b); i++ {
		if eqFold(b[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// hasCap reports whether a list of capabilities has c.
func hasCap(caps []string, c string) bool {
	for _, x := range caps {
		if eqFold(x, c) {
			return true
		}
	}
	return false
}
