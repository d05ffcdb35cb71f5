package smtp

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/config"
	"smimeproxy/internal/lab"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	imapproxy "smimeproxy/proxy/imap"
)

// TestLabEndToEnd is how people meet S/MIME through the proxy, against the
// lab's Postfix and Dovecot: alice writes to bob, whose certificate nobody
// knows, so the message goes out signed only; bob reads it, which harvests
// alice's certificate; bob's reply then goes out encrypted with no set-up at
// all, and alice reads it decrypted.
func TestLabEndToEnd(t *testing.T) {
	l := lab.Start(t)
	p := testPKI(t)
	ids := labIdentities(t, p)
	ks := newKeystore(t, ids.alice, ids.bob)
	cc := certCache(t, p) // the trust anchor, and nobody's certificate

	c := config.Default()
	c.ServerName = "proxy.test"
	c.SMTP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	c.SMTP.Upstream = config.Upstream{Addr: l.Submission, TLS: config.TLSStartTLS, CAFile: l.CA}
	c.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSNone}}
	c.IMAP.Upstream = config.Upstream{Addr: l.IMAP, TLS: config.TLSStartTLS, CAFile: l.CA}
	opts := proxy.Options{Config: c, Policy: policy.FromConfig(c.Policy), Keys: ks, Certs: cc,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	sp, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := imapproxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []interface {
		Start(context.Context) error
		Shutdown(context.Context) error
	}{sp, ip} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s.Shutdown(ctx)
		})
	}
	alice, bob := l.User(t, "alice"), l.User(t, "bob")

	send := func(from, to lab.User, subject, body string) {
		t.Helper()
		sc, err := gosmtp.Dial(sp.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		if err := sc.Auth(sasl.NewPlainClient("", from.Address, from.Password)); err != nil {
			t.Fatalf("AUTH as %s: %v", from.Address, err)
		}
		msg := "From: " + from.Address + "\r\nTo: " + to.Address + "\r\nSubject: " + subject + "\r\nMessage-ID: " + msgID(subject) +
			"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\n" + body + "\r\n"
		if err := sc.SendMail(from.Address, []string{to.Address}, strings.NewReader(msg)); err != nil {
			t.Fatalf("send as %s: %v", from.Address, err)
		}
	}
	read := func(u lab.User, subject string) []byte {
		t.Helper()
		ic, err := imapclient.DialInsecure(ip.Addrs()[0].String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ic.Close()
		if err := ic.Login(u.Address, u.Password).Wait(); err != nil {
			t.Fatalf("LOGIN as %s through the proxy: %v", u.Address, err)
		}
		if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		// By Message-ID: the server sees only "[...]" as the Subject of encrypted mail.
		found, err := ic.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: msgID(subject)}}}, nil).Wait()
		if err != nil || len(found.AllUIDs()) != 1 {
			t.Fatalf("SEARCH for %q in %s's INBOX: %v, %v", subject, u.Address, err, found)
		}
		section := &imap.FetchItemBodySection{Peek: true}
		msgs, err := ic.Fetch(imap.UIDSetNum(found.AllUIDs()[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("FETCH: %v", err)
		}
		return msgs[0].FindBodySection(section)
	}
	marker := marker(t)

	send(alice, bob, "hello "+marker, "Hi Bob, this is Alice.")
	stored := l.WaitMessage(t, bob.Address, msgID("hello "+marker))
	if !bytes.Contains(stored, []byte("application/pkcs7-signature")) || bytes.Contains(stored, []byte("application/pkcs7-mime")) {
		t.Fatalf("alice's first message reached bob's mailbox not as signed only (his certificate is unknown):\n%s", stored)
	}
	if _, err := cc.Lookup(ctx, alice.Address); err == nil {
		t.Fatal("alice's certificate is in the cache before bob read her message")
	}

	got := read(bob, "hello "+marker)
	if !bytes.Contains(got, []byte("smime=pass")) {
		t.Fatalf("bob read alice's message without a passing signature:\n%s", got)
	}
	if _, err := cc.Lookup(ctx, alice.Address); err != nil {
		t.Fatalf("alice's certificate was not harvested when bob read her message: %v", err)
	}

	send(bob, alice, "Re: hello "+marker, "Hi Alice, nice to hear from you.")
	stored = l.WaitMessage(t, alice.Address, msgID("Re: hello "+marker))
	if !bytes.Contains(stored, []byte("application/pkcs7-mime")) || bytes.Contains(stored, []byte("nice to hear")) ||
		!bytes.Contains(stored, []byte("\nSubject: [...]\n")) || bytes.Contains(stored, []byte("Subject: Re: hello")) {
		t.Fatalf("bob's reply reached alice's mailbox not encrypted, its Subject hidden:\n%s", stored)
	}
	got = read(alice, "Re: hello "+marker)
	if !bytes.Contains(got, []byte("nice to hear from you")) || !bytes.Contains(got, []byte("smime=pass")) ||
		!bytes.Contains(got, []byte("Subject: Re: hello "+marker+"\r\n")) {
		t.Fatalf("alice read bob's reply not decrypted and verified, with its Subject:\n%s", got)
	}
}

// msgID is the Message-ID of the message with this subject.
func msgID(subject string) string {
	return "<" + strings.ReplaceAll(subject, " ", ".") + "@example.test>"
}
