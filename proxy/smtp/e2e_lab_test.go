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
	"smimeproxy/smime"
)

// TestLabEndToEnd is how people meet S/MIME through the proxy, against the
// lab's Postfix and Dovecot. alice and bob are both users of this proxy, so
// their mail to each other is encrypted from the very first message, with an
// empty certificate cache. carol is outside: alice's first message to her goes
// out signed only; carol's signed answer, once alice reads it, teaches the
// proxy carol's certificate, and alice's next message to carol goes out
// encrypted to her with no set-up at all.
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
	alice, bob, carol := l.User(t, "alice"), l.User(t, "bob"), l.User(t, "carol")

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
		if err := sc.SendMail(from.Address, []string{to.Address}, strings.NewReader(e2eMessage(from, to, subject, body))); err != nil {
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

	t.Run("colleagues", func(t *testing.T) {
		send(alice, bob, "hello "+marker, "Hi Bob, this is Alice.")
		stored := l.WaitMessage(t, bob.Address, msgID("hello "+marker))
		if !bytes.Contains(stored, []byte("application/pkcs7-mime")) || bytes.Contains(stored, []byte("this is Alice")) ||
			!bytes.Contains(stored, []byte("\nSubject: [...]\n")) || bytes.Contains(stored, []byte("Subject: hello")) {
			t.Fatalf("alice's first message to her colleague reached his mailbox not encrypted, its Subject hidden:\n%s", stored)
		}
		if got := open(t, p, stored, ids.bob); !got.Decrypted || !bytes.Contains(got.Message, []byte("this is Alice")) {
			t.Fatalf("bob's key does not open what reached his mailbox: decrypted %v, %v", got.Decrypted, got.DecryptErr)
		}
		got := read(bob, "hello "+marker)
		if !bytes.Contains(got, []byte("this is Alice")) || !bytes.Contains(got, []byte("smime=pass")) ||
			!bytes.Contains(got, []byte("Subject: hello "+marker+"\r\n")) {
			t.Fatalf("bob read alice's message not decrypted and verified, with its Subject:\n%s", got)
		}
	})

	t.Run("outside correspondent", func(t *testing.T) {
		if _, err := cc.Lookup(ctx, carol.Address); err == nil {
			t.Fatal("carol's certificate is in the cache before anyone read her mail")
		}
		send(alice, carol, "first "+marker, "Hello Carol, we have not met.")
		stored := l.WaitMessage(t, carol.Address, msgID("first "+marker))
		if !bytes.Contains(stored, []byte("application/pkcs7-signature")) || bytes.Contains(stored, []byte("application/pkcs7-mime")) {
			t.Fatalf("alice's first message to carol (certificate unknown) reached her mailbox not as signed only:\n%s", stored)
		}

		signed, err := smime.Sign([]byte(e2eMessage(carol, alice, "Re: first "+marker, "Nice to meet you, Alice.")),
			&smime.Identity{Cert: ids.carol.Cert, Key: ids.carol.Key, Chain: ids.carol.Chain}, nil)
		if err != nil {
			t.Fatal(err)
		}
		l.Deliver(t, carol.Address, []string{alice.Address}, signed)
		got := read(alice, "Re: first "+marker)
		if !bytes.Contains(got, []byte("smime=pass")) {
			t.Fatalf("alice read carol's signed answer without a passing signature:\n%s", got)
		}
		if _, err := cc.Lookup(ctx, carol.Address); err != nil {
			t.Fatalf("carol's certificate was not harvested when alice read her answer: %v", err)
		}

		send(alice, carol, "second "+marker, "Glad you wrote back, Carol.")
		stored = l.WaitMessage(t, carol.Address, msgID("second "+marker))
		if !bytes.Contains(stored, []byte("application/pkcs7-mime")) || bytes.Contains(stored, []byte("Glad you wrote back")) {
			t.Fatalf("alice's message to carol after harvesting her certificate reached her mailbox not encrypted:\n%s", stored)
		}
		if o := open(t, p, stored, ids.carol); !o.Decrypted || !bytes.Contains(o.Message, []byte("Glad you wrote back")) {
			t.Fatalf("carol's key does not open what reached her mailbox: decrypted %v, %v", o.Decrypted, o.DecryptErr)
		}
	})
}

// e2eMessage is a plain message from one lab user to another.
func e2eMessage(from, to lab.User, subject, body string) string {
	return "From: " + from.Address + "\r\nTo: " + to.Address + "\r\nSubject: " + subject + "\r\nMessage-ID: " + msgID(subject) +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\n" + body + "\r\n"
}

// msgID is the Message-ID of the message with this subject.
func msgID(subject string) string {
	return "<" + strings.ReplaceAll(subject, " ", ".") + "@example.test>"
}
