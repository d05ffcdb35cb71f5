package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"smimeproxy/config"
	"smimeproxy/smime"
)

// attachment is the binary attachment of multipartMessage.
var attachment = func() []byte {
	b := make([]byte, 3000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// multipartMessage has a text part and a base64 attachment.
func multipartMessage(subject string) []byte {
	enc := base64.StdEncoding.EncodeToString(attachment)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	lines = append(lines, enc)
	return []byte("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: " + subject +
		"\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <mp@example.test>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\nTwo lines.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=data.bin\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=data.bin\r\n\r\n" + strings.Join(lines, "\r\n") + "\r\n--b1--\r\n")
}

// describe writes a body structure as text, for comparing two of them;
// ext adds the extension data that BODYSTRUCTURE has and BODY has not.
func describe(bs imap.BodyStructure, ext bool) string {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		enc := strings.ToLower(bs.Encoding)
		if enc == "" {
			enc = "7bit"
		}
		s := fmt.Sprintf("%s/%s(%d,%s", strings.ToLower(bs.Type), strings.ToLower(bs.Subtype), bs.Size, enc)
		if bs.Text != nil {
			s += fmt.Sprintf(",%d lines", bs.Text.NumLines)
		}
		if ext && bs.Extended != nil && bs.Extended.Disposition != nil {
			s += "," + bs.Extended.Disposition.Value
		}
		return s + ")"
	case *imap.BodyStructureMultiPart:
		var parts []string
		for _, c := range bs.Children {
			parts = append(parts, describe(c, ext))
		}
		return "multipart/" + strings.ToLower(bs.Subtype) + "[" + strings.Join(parts, " ") + "]"
	}
	return fmt.Sprintf("%T", bs)
}

func TestIMAPEncryptedItemsConsistent(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	p := env.pki
	const user = "bob@example.test"
	signed, err := smime.Sign(multipartMessage("items"), p.identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"encrypted", mustEncrypt(t, multipartMessage("items"), p.bob.Cert)},
		{"signed then encrypted", mustEncrypt(t, signed, p.bob.Cert)},
		{"signed", signed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid := up.appendMsg(user, "INBOX", tc.msg)
			c := env.client(t, user)
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			whole := &imap.FetchItemBodySection{Peek: true}
			served := fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).FindBodySection(whole)
			if !strings.Contains(string(served), "See the attachment.") {
				t.Fatalf("served message is not opened:\n%s", served)
			}

			sections := []*imap.FetchItemBodySection{
				{Specifier: imap.PartSpecifierHeader, Peek: true},
				{Specifier: imap.PartSpecifierText, Peek: true},
				{Part: []int{1}, Peek: true},
				{Part: []int{1, 2}, Peek: true},
				{Part: []int{1, 2}, Specifier: imap.PartSpecifierMIME, Peek: true},
				{Part: []int{2}, Peek: true},
				{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "Authentication-Results"}, Peek: true},
				{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject"}, Peek: true},
				{Partial: &imap.SectionPartial{Offset: 5, Size: 40}, Peek: true},
			}
			if tc.name == "encrypted" {
				// Not signed: the attachment is part 2 of the top multipart.
				sections[3] = &imap.FetchItemBodySection{Part: []int{2}, Peek: true}
				sections[4] = &imap.FetchItemBodySection{Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true}
			}
			binPart := sections[3].Part
			opts := &imap.FetchOptions{
				UID: true, RFC822Size: true, Envelope: true,
				BodyStructure:     &imap.FetchItemBodyStructure{Extended: true},
				BodySection:       sections,
				BinarySection:     []*imap.FetchItemBinarySection{{Part: binPart, Peek: true}},
				BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: binPart}},
			}
			got := fetchOne(t, c, uid, opts)
			if got.RFC822Size != int64(len(served)) {
				t.Errorf("RFC822.SIZE = %d, len(BODY[]) = %d", got.RFC822Size, len(served))
			}
			for _, sec := range sections {
				want := imapserver.ExtractBodySection(bytes.NewReader(served), sec)
				if b := got.FindBodySection(sec); !bytes.Equal(b, want) {
					t.Errorf("section %+v = %q, want %q", sec, b, want)
				}
			}
			header, text := got.FindBodySection(sections[0]), got.FindBodySection(sections[1])
			if !bytes.Equal(append(append([]byte{}, header...), text...), served) {
				t.Errorf("BODY[HEADER] + BODY[TEXT] != BODY[]")
			}
			if b := got.FindBinarySection(opts.BinarySection[0]); !bytes.Equal(b, attachment) {
				t.Errorf("BINARY[%v] = %d bytes, want the attachment's %d", binPart, len(b), len(attachment))
			}
			if n, _ := got.FindBinarySectionSize(binPart); n != uint32(len(attachment)) {
				t.Errorf("BINARY.SIZE[%v] = %d, want %d", binPart, n, len(attachment))
			}
			if g, w := describe(got.BodyStructure, true), describe(imapserver.ExtractBodyStructure(bytes.NewReader(served)), true); g != w {
				t.Errorf("BODYSTRUCTURE = %s, want %s", g, w)
			}
			h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(served)))
			if err != nil {
				t.Fatal(err)
			}
			wantEnv := imapserver.ExtractEnvelope(h)
			if got.Envelope == nil || got.Envelope.Subject != wantEnv.Subject || got.Envelope.MessageID != wantEnv.MessageID ||
				len(got.Envelope.From) != 1 || got.Envelope.From[0].Name != "Alice" {
				t.Errorf("ENVELOPE = %+v, want %+v", got.Envelope, wantEnv)
			}

			// BODY (no extension data) by sequence number, from the cache.
			seqs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, BodyStructure: &imap.FetchItemBodyStructure{}}).Collect()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range seqs {
				if m.UID == uid && describe(m.BodyStructure, false) != describe(got.BodyStructure, false) {
					t.Errorf("BODY = %s, want %s", describe(m.BodyStructure, false), describe(got.BodyStructure, false))
				}
			}
		})
	}
}

func mustEncrypt(t testing.TB, msg []byte, to ...*x509.Certificate) []byte {
	t.Helper()
	enc, err := smime.Encrypt(msg, to, nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func TestIMAPSignedVerifiedAndHarvested(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	p := env.pki
	const user = "bob@example.test"
	ctx := context.Background()
	if e, err := env.certs.Lookup(ctx, "alice@example.test"); err == nil {
		t.Fatalf("alice's certificate is in the cache before any signed mail: %v", e)
	}
	body := mailMessage("alice@example.test", user, "signed", "signed by alice")
	detached, err := smime.Sign(body, p.identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	opaque, err := smime.Sign(body, p.identity(p.alice), &smime.SignOptions{Opaque: true})
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(detached, []byte("signed by alice"), []byte("signed by mallory"), 1)

	uDetached := up.appendMsg(user, "INBOX", detached)
	uOpaque := up.appendMsg(user, "INBOX", opaque)
	uTampered := up.appendMsg(user, "INBOX", tampered)
	c := env.client(t, user)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	whole := &imap.FetchItemBodySection{Peek: true}
	get := func(uid imap.UID) []byte {
		return fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).FindBodySection(whole)
	}

	field, rest := splitField(t, get(uDetached))
	if !strings.Contains(field, "smime=pass") || !strings.Contains(field, "body.smime-identifier=alice@example.test") {
		t.Errorf("detached: field = %q", field)
	}
	if !bytes.Equal(rest, detached) {
		t.Errorf("detached: the signed message is not served as it was")
	}

	field, rest = splitField(t, get(uOpaque))
	if !strings.Contains(field, "smime=pass") {
		t.Errorf("opaque: field = %q", field)
	}
	if !bytes.Contains(rest, []byte("Content-Type: text/plain")) || !bytes.Contains(rest, []byte("signed by alice")) {
		t.Errorf("opaque: not unwrapped:\n%s", rest)
	}

	field, _ = splitField(t, get(uTampered))
	if !strings.Contains(field, "smime=fail") {
		t.Errorf("tampered: field = %q", field)
	}

	e, err := env.certs.Lookup(ctx, "alice@example.test")
	if err != nil {
		t.Fatalf("alice's certificate was not harvested: %v", err)
	}
	if !e.Cert.Equal(p.alice.Cert) {
		t.Errorf("harvested %s, want alice's certificate", e.Cert.Subject)
	}
	if got := env.metric(t, "smimeproxy_certs_harvested_total"); got != 2 {
		t.Errorf("harvested counter = %v, want 2 (the tampered one is not harvested)", got)
	}
	if got := env.metric(t, "smimeproxy_opened_total", "action", "verify", "result", "invalid"); got != 1 {
		t.Errorf("invalid signatures counted = %v, want 1", got)
	}
}

func TestIMAPUndecryptableServedAsIs(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	p := env.pki
	const user = "bob@example.test"
	carol := p.ca.Issue(t, "carol@example.org", nil)
	toCarol := mustEncrypt(t, mailMessage("alice@example.test", "carol@example.org", "for carol", "not for bob"), carol.Cert)
	good := mustEncrypt(t, mailMessage("alice@example.test", user, "cut", "the text"), p.bob.Cert)
	i := bytes.Index(good, []byte("\r\n\r\n"))
	truncated := good[:i+4+(len(good)-i-4)/2]
	malformed := []byte("From: x@example.test\r\nSubject: junk\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nTm90IENNUyBhdCBhbGw=\r\n")
	p7m := []byte("From: x@example.test\r\nSubject: p7m\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/octet-stream; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nTm90IENNUyBhdCBhbGw=\r\n")

	up.user(user)
	c := env.client(t, user)
	for _, tc := range []struct {
		name, reason string
		msg          []byte
	}{
		{"no key", "no matching key", toCarol},
		{"truncated", "not decrypted", truncated},
		{"malformed", "not decrypted: malformed", malformed},
		{"p7m", "smime=none", p7m},
	} {
		uid := up.appendMsg(user, "INBOX", tc.msg)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		whole := &imap.FetchItemBodySection{Peek: true}
		got := fetchOne(t, c, uid, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{whole}})
		field, rest := splitField(t, got.FindBodySection(whole))
		if !bytes.Equal(rest, tc.msg) {
			t.Errorf("%s: not served as it is:\n%s", tc.name, rest)
		}
		unfolded := strings.ReplaceAll(field, "\r\n ", " ")
		if !strings.Contains(unfolded, tc.reason) || (tc.name != "p7m") != strings.Contains(unfolded, "encrypted") {
			t.Errorf("%s: field = %q, want it to say %q", tc.name, field, tc.reason)
		}
		if got.RFC822Size != int64(len(field)+len(tc.msg)) {
			t.Errorf("%s: RFC822.SIZE = %d, want %d", tc.name, got.RFC822Size, len(field)+len(tc.msg))
		}
	}
}

// upstreamFlags reads a message's flags straight from the upstream.
func upstreamFlags(t *testing.T, up *imapUpstream, user, mailbox string, uid imap.UID) []imap.Flag {
	t.Helper()
	c, err := imapclient.DialInsecure(up.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, "pw-"+user).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("upstream FETCH %d: %v %v", uid, msgs, err)
	}
	return msgs[0].Flags
}

func hasSeen(flags []imap.Flag) bool {
	for _, f := range flags {
		if strings.EqualFold(string(f), string(imap.FlagSeen)) {
			return true
		}
	}
	return false
}

func TestIMAPSeenAsUpstream(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	plain := up.appendMsg(user, "INBOX", mailMessage("alice@example.test", user, "plain", "text"))
	enc := up.appendMsg(user, "INBOX", mustEncrypt(t, mailMessage("alice@example.test", user, "enc", "secret"), env.pki.bob.Cert))
	cached := up.appendMsg(user, "INBOX", mustEncrypt(t, mailMessage("alice@example.test", user, "enc2", "secret2"), env.pki.bob.Cert))

	c, _ := dialIMAPRaw(t, env.addr)
	c.expectOK("LOGIN " + user + " pw-" + user)
	c.expectOK("SELECT INBOX")
	for _, uid := range []imap.UID{plain, enc, cached} {
		untagged := c.expectOK(fmt.Sprintf("UID FETCH %d (BODY.PEEK[] BODY.PEEK[HEADER] RFC822.SIZE)", uid))
		if len(untagged) != 1 || strings.Contains(untagged[0], `\Seen`) {
			t.Errorf("UID %d BODY.PEEK[]: %.200q", uid, untagged)
		}
		if hasSeen(upstreamFlags(t, up, user, "INBOX", uid)) {
			t.Errorf("UID %d: BODY.PEEK[] set \\Seen", uid)
		}
	}
	// The third is now cached: \Seen must be set all the same.
	for _, uid := range []imap.UID{plain, enc, cached} {
		untagged := c.expectOK(fmt.Sprintf("UID FETCH %d BODY[TEXT]", uid))
		if uid == plain {
			// imapmemserver reports the change in a FETCH response of its
			// own, which go-imap's client hands over asynchronously: it
			// may reach the client with the next command.
			untagged = append(untagged, c.expectOK("NOOP")...)
		}
		if !containsMatch(untagged, fmt.Sprintf(`^\* \d+ FETCH \(.*UID %d.*FLAGS \([^)]*\\Seen`, uid)) &&
			!containsMatch(untagged, fmt.Sprintf(`^\* \d+ FETCH \(.*FLAGS \([^)]*\\Seen[^)]*\).*UID %d`, uid)) {
			t.Errorf("UID %d BODY[TEXT]: the client is not told of \\Seen: %.300q", uid, untagged)
		}
		if !hasSeen(upstreamFlags(t, up, user, "INBOX", uid)) {
			t.Errorf("UID %d: BODY[] did not set \\Seen upstream", uid)
		}
	}
}

func TestIMAPCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mb     int
		cached bool
	}{{"on", 1, true}, {"off", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			up := startIMAPUpstream(t)
			env := newIMAPEnv(t, up, &imapEnvOptions{configure: func(c *config.Config) { c.IMAP.CacheMB = tc.mb }})
			const user = "bob@example.test"
			uid := up.appendMsg(user, "INBOX", mustEncrypt(t, multipartMessage("cache"), env.pki.bob.Cert))
			c := env.client(t, user)
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			// A client that fetches the header, then the structure, then a part.
			fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}}})
			full := up.fullFetches.Load()
			fetchOne(t, c, uid, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
			fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: []int{1}, Peek: true}}})
			decrypts := env.metric(t, "smimeproxy_opened_total", "action", "decrypt", "result", "ok")
			if tc.cached {
				if got := up.fullFetches.Load(); got != full {
					t.Errorf("the message was fetched whole %d more times", got-full)
				}
				if decrypts != 1 {
					t.Errorf("decrypted %v times, want 1", decrypts)
				}
				if hits := env.metric(t, "smimeproxy_imap_cache_hits_total"); hits != 2 {
					t.Errorf("cache hits = %v, want 2", hits)
				}
				if b := env.metric(t, "smimeproxy_imap_cache_bytes"); b <= 0 {
					t.Errorf("cache bytes = %v", b)
				}
			} else {
				if got := up.fullFetches.Load(); got != full+2 {
					t.Errorf("with the cache off, fetched whole %d more times, want 2", got-full)
				}
				if decrypts != 3 {
					t.Errorf("decrypted %v times, want 3", decrypts)
				}
			}
		})
	}
}

func TestIMAPUserIsolation(t *testing.T) {
	up := startIMAPUpstream(t)
	// bob's login sees alice's mailboxes: a shared mailbox.
	const alice, bob = "alice@example.test", "bob@example.test"
	up.share(bob, alice)
	env := newIMAPEnv(t, up, nil)
	p := env.pki
	toAlice := mustEncrypt(t, mailMessage("carol@example.org", alice, "for alice", "alice's secret"), p.alice.Cert)
	toBoth := mustEncrypt(t, mailMessage("carol@example.org", alice+", "+bob, "for both", "our secret"), p.alice.Cert, p.bob.Cert)
	uAlice := up.appendMsg(alice, "INBOX", toAlice)
	uBoth := up.appendMsg(alice, "INBOX", toBoth)
	whole := &imap.FetchItemBodySection{Peek: true}
	get := func(c *imapclient.Client, uid imap.UID) (string, []byte) {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		field, rest := splitField(t, fetchOne(t, c, uid, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).FindBodySection(whole))
		return strings.ReplaceAll(field, "\r\n ", " "), rest
	}

	// alice first, so that her opened message is in the cache.
	ca := env.client(t, alice)
	if _, rest := get(ca, uAlice); !bytes.Contains(rest, []byte("alice's secret")) {
		t.Fatalf("alice cannot read her own message")
	}
	cb := env.client(t, bob)
	field, rest := get(cb, uAlice)
	if bytes.Contains(rest, []byte("alice's secret")) || !bytes.Equal(rest, toAlice) {
		t.Errorf("bob was served alice's message decrypted:\n%s", rest)
	}
	if !strings.Contains(field, "no matching key") || !strings.Contains(field, "none of them this user") {
		t.Errorf("bob's field = %q", field)
	}
	field, rest = get(cb, uBoth)
	if !bytes.Contains(rest, []byte("our secret")) {
		t.Errorf("bob cannot read a message encrypted to him too")
	}
	if !strings.Contains(field, "to bob@example.test and 1 other recipient") || strings.Contains(field, alice) {
		t.Errorf("bob's field names others' addresses: %q", field)
	}
}

func TestIMAPFlagsOfManyMessagesIsOneFetch(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	const n = 10000
	usr := up.user(user)
	msg := mailMessage("alice@example.test", user, "many", "x")
	for range n {
		if _, err := usr.Append("INBOX", literal{bytes.NewReader(msg), int64(len(msg))}, &imap.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c := env.client(t, user)
	before := up.fetches.Load()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if got := up.fetches.Load() - before; got != 0 {
		t.Errorf("SELECT cost %d upstream FETCHes, want 0", got)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, UID: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Errorf("FETCH 1:* FLAGS: %d messages, want %d", len(msgs), n)
	}
	if got := up.fetches.Load() - before; got != 1 {
		t.Errorf("FETCH 1:* FLAGS cost %d upstream FETCHes, want 1", got)
	}
}

// TestIMAPHeaderListing: what a client asks to list a mailbox comes in one
// upstream FETCH with the classifying fields, and the S/MIME messages are
// answered from their opened form all the same.
func TestIMAPHeaderListing(t *testing.T) {
	up := startIMAPUpstream(t)
	env := newIMAPEnv(t, up, nil)
	const user = "bob@example.test"
	plain := mailMessage("alice@example.test", user, "plain", "text")
	huge := append([]byte("X-Huge: "+strings.Repeat("x", 2<<20)+"\r\n"), plain...)
	enc := mustEncrypt(t, mailMessage("alice@example.test", user, "enc", "secret"), env.pki.bob.Cert)
	uids := []imap.UID{up.appendMsg(user, "INBOX", plain), up.appendMsg(user, "INBOX", enc), up.appendMsg(user, "INBOX", huge)}
	c := env.client(t, user)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	fields := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "Content-Type", "X-Huge"}, Peek: true}
	before := up.fetches.Load()
	msgs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, RFC822Size: true, Flags: true, Envelope: true,
		BodySection: []*imap.FetchItemBodySection{fields}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	// One FETCH, one for the huge header held back, one for the S/MIME body.
	if got := up.fetches.Load() - before; got != 3 {
		t.Errorf("%d upstream FETCHes, want 3", got)
	}
	byUID := map[imap.UID]*imapclient.FetchMessageBuffer{}
	for _, m := range msgs {
		byUID[m.UID] = m
	}
	for i, raw := range [][]byte{plain, enc, huge} {
		m := byUID[uids[i]]
		if m == nil {
			t.Fatalf("UID %d missing", uids[i])
		}
		served := raw
		if i == 1 {
			served = fetchOne(t, c, uids[i], &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).FindBodySection(&imap.FetchItemBodySection{})
		}
		if m.RFC822Size != int64(len(served)) {
			t.Errorf("UID %d: RFC822.SIZE %d, want %d", uids[i], m.RFC822Size, len(served))
		}
		if got, want := m.FindBodySection(fields), imapserver.ExtractBodySection(bytes.NewReader(served), fields); !bytes.Equal(got, want) {
			t.Errorf("UID %d: fields %q, want %q", uids[i], got, want)
		}
	}
	if got := string(byUID[uids[1]].FindBodySection(fields)); !strings.Contains(got, "text/plain") {
		t.Errorf("the encrypted message's Content-Type is not the decrypted one: %q", got)
	}
}
