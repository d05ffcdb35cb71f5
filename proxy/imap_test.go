package proxy_test

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"smimeproxy/smime"
)

// openForTest is what the proxy should serve for msg, as the reader with
// key id sees it, without the field the proxy adds.
func openForTest(t *testing.T, msg []byte, ids ...*smime.KeyPair) []byte {
	t.Helper()
	var keys []smime.KeyPair
	for _, id := range ids {
		keys = append(keys, *id)
	}
	o, err := smime.Open(msg, &smime.OpenOptions{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return o.Message
}

// splitField separates the Authentication-Results field the proxy adds from
// the rest of the served message.
func splitField(t *testing.T, served []byte) (field string, rest []byte) {
	t.Helper()
	if !bytes.HasPrefix(served, []byte("Authentication-Results: ")) {
		t.Fatalf("served message does not start with Authentication-Results:\n%.300s", served)
	}
	i := 0
	for {
		j := bytes.Index(served[i:], []byte("\r\n"))
		if j < 0 {
			t.Fatalf("unterminated field in %q", served)
		}
		i += j + 2
		if i >= len(served) || (served[i] != ' ' && served[i] != '\t') {
			return string(served[:i]), served[i:]
		}
	}
}

func fetchOne(t *testing.T, c *imapclient.Client, uid imap.UID, opts *imap.FetchOptions) *imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(imap.UIDSetNum(uid), opts).Collect()
	if err != nil {
		t.Fatalf("UID FETCH %d: %v", uid, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("UID FETCH %d: %d messages", uid, len(msgs))
	}
	return msgs[0]
}

func TestIMAPFetchPlainAndEncrypted(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	p := env.pki

	plain := mailMessage("alice@example.test", "bob@example.test", "plain hello", "just text")
	secret := mailMessage("alice@example.test", "bob@example.test", "secret hello", "the secret text")
	enc, err := smime.Encrypt(secret, []*x509.Certificate{p.bob.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	uPlain := up.appendMsg("bob@example.test", "INBOX", plain)
	uEnc := up.appendMsg("bob@example.test", "INBOX", enc)

	c := env.client(t, "bob@example.test")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	got := fetchOne(t, c, uPlain, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	if b := got.FindBodySection(&imap.FetchItemBodySection{}); !bytes.Equal(b, plain) {
		t.Errorf("plain BODY[] = %q, want %q", b, plain)
	}

	got = fetchOne(t, c, uEnc, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	served := got.FindBodySection(&imap.FetchItemBodySection{})
	field, rest := splitField(t, served)
	want := openForTest(t, enc, &smime.KeyPair{Cert: p.bob.Cert, Key: p.bob.Key})
	if !bytes.Equal(rest, want) {
		t.Errorf("encrypted BODY[] after the field = %q, want %q", rest, want)
	}
	if !strings.Contains(string(served), "the secret text") {
		t.Errorf("served message is not decrypted: %q", served)
	}
	if !strings.Contains(field, "proxy.example.test; smime=none") || !strings.Contains(field, "to bob@example.test") {
		t.Errorf("field = %q", field)
	}
}
