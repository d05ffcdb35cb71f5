package demo_test

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smimeproxy/certcache"
	"smimeproxy/internal/demo"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

// TestUpstreamDelivers sends alice -> bob with a real SMTP client and reads
// it back over IMAP.
func TestUpstreamDelivers(t *testing.T) {
	up, err := demo.StartUpstream(map[string]string{"alice@demo.test": "apw", "bob@demo.test": "bpw"}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()

	c, err := smtp.Dial(up.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@demo.test", "wrong")); err == nil {
		t.Error("AUTH with a wrong password succeeded")
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@demo.test", "apw")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail("alice@demo.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("stranger@example.com", nil); err == nil || !strings.Contains(err.Error(), "550") {
		t.Errorf("RCPT to someone elsewhere = %v, want 550", err)
	}
	if err := c.Rcpt("bob@demo.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@demo.test\r\nTo: bob@demo.test\r\nSubject: hello\r\n\r\nHi Bob\r\n"
	io.WriteString(w, msg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	ic, err := imapclient.DialInsecure(up.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("bob@demo.test", "bpw").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := ic.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v, %d messages", err, len(msgs))
	}
	if got := string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})); got != msg {
		t.Errorf("bob fetched %q, want %q", got, msg)
	}
}

func TestPKIInstall(t *testing.T) {
	p, err := demo.NewPKI([]string{"alice@demo.test", "bob@demo.test"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ks, err := keystore.Create(dir+"/keystore", []byte("demo passphrase"), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.Open(dir+"/certcache", &certcache.Options{NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Install(ks, cc); err != nil {
		t.Fatal(err)
	}
	if got := ks.Emails(); !slices.Equal(got, []string{"alice@demo.test", "bob@demo.test"}) {
		t.Errorf("keystore holds %v, want both users", got)
	}
	for _, addr := range []string{"alice@demo.test", "bob@demo.test"} {
		if _, err := ks.Signer(addr, p.CA.NotBefore.AddDate(0, 1, 0)); err != nil {
			t.Errorf("Signer(%s): %v", addr, err)
		}
		if _, err := cc.Lookup(context.Background(), addr); err != nil {
			t.Errorf("certificate cache Lookup(%s): %v", addr, err)
		}
	}
}
