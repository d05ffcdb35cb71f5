package lab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smimeproxy/internal/lab"
	"smimeproxy/internal/testutil"
)

// timeout bounds each run of a real client and each connection a test opens.
const timeout = time.Minute

// runTool runs a real client against the lab and returns what it printed.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	path := testutil.NeedTool(t, name)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// searchSubject returns the UIDs in INBOX whose Subject holds token.
func searchSubject(t *testing.T, c *imapclient.Client, token string) []imap.UID {
	t.Helper()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{
		Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: token}},
	}, nil).Wait()
	if err != nil {
		t.Fatalf("UID SEARCH: %v", err)
	}
	return data.AllUIDs()
}

func fetchBody(t *testing.T, c *imapclient.Client, uid imap.UID) []byte {
	t.Helper()
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH %d BODY.PEEK[] = %d messages, %v; want 1", uid, len(msgs), err)
	}
	return msgs[0].FindBodySection(section)
}

// TestSubmitReachesInbox is the lab's smoke test: swaks submits as alice, and
// the message reaches bob and carol exactly once, read back over IMAP with
// STARTTLS and implicit TLS, by go-imap and by curl.
func TestSubmitReachesInbox(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	alice, bob, carol := l.User(t, "alice"), l.User(t, "bob"), l.User(t, "carol")
	token := "lab smoke " + rand.Text()

	out := runTool(t, "swaks", "--server", l.Submission,
		"--tls", "--tls-verify", "--tls-ca-path", l.CA,
		"--auth", "PLAIN", "--auth-user", alice.Address, "--auth-password", alice.Password,
		"--from", alice.Address, "--to", bob.Address+","+carol.Address,
		"--header", "Subject: "+token, "--body", "body of "+token)
	if !strings.Contains(out, "250 2.0.0 Ok: queued as") {
		t.Fatalf("swaks: Postfix did not queue the message:\n%s", out)
	}

	for _, u := range []lab.User{bob, carol} {
		msg := l.WaitMessage(t, u.Address, token)
		if !bytes.Contains(msg, []byte("body of "+token)) {
			t.Errorf("Maildir of %s holds:\n%s\nwant the body", u.Address, msg)
		}
	}

	c := l.DialIMAP(t, bob)
	uids := searchSubject(t, c, token)
	if len(uids) != 1 {
		t.Fatalf("bob's INBOX has UIDs %v with the subject, want exactly one", uids)
	}
	if body := fetchBody(t, c, uids[0]); !bytes.Contains(body, []byte("body of "+token)) {
		t.Errorf("go-imap over STARTTLS fetched:\n%s\nwant the body", body)
	}
	out = runTool(t, "curl", "--silent", "--show-error", "--ssl-reqd", "--cacert", l.CA,
		"--user", bob.Address+":"+bob.Password,
		fmt.Sprintf("imap://%s/INBOX;UID=%d", l.IMAP, uids[0]))
	if !strings.Contains(out, "body of "+token) {
		t.Errorf("curl over STARTTLS fetched:\n%s\nwant the body", out)
	}

	tc, err := imapclient.DialTLS(l.IMAPS, &imapclient.Options{TLSConfig: l.TLSConfig(t)})
	if err != nil {
		t.Fatalf("IMAPS %s: %v", l.IMAPS, err)
	}
	defer tc.Close()
	if err := tc.Login(carol.Address, carol.Password).Wait(); err != nil {
		t.Fatalf("IMAPS LOGIN as carol: %v", err)
	}
	uids = searchSubject(t, tc, token)
	if len(uids) != 1 {
		t.Fatalf("carol's INBOX has UIDs %v with the subject, want exactly one", uids)
	}
	out = runTool(t, "curl", "--silent", "--show-error", "--cacert", l.CA,
		"--user", carol.Address+":"+carol.Password,
		fmt.Sprintf("imaps://%s/INBOX;UID=%d", l.IMAPS, uids[0]))
	if !strings.Contains(out, "body of "+token) {
		t.Errorf("curl over implicit TLS fetched:\n%s\nwant the body", out)
	}
}

// TestSubmissionRefuses checks what Postfix refuses, with the replies the
// proxy will have to pass through unchanged.
func TestSubmissionRefuses(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	alice := l.User(t, "alice")
	tests := []struct {
		name     string
		password string // empty: no AUTH
		from, to string
		wantCode int
		wantEnh  smtp.EnhancedCode
	}{
		{"recipient off the machine", alice.Password, alice.Address, "someone@gmail.com", 550, smtp.EnhancedCode{5, 7, 1}},
		{"unknown lab user", alice.Password, alice.Address, "nobody@example.test", 550, smtp.EnhancedCode{5, 1, 1}},
		{"sender not the login's", alice.Password, "bob@example.test", "carol@example.org", 553, smtp.EnhancedCode{5, 7, 1}},
		{"no AUTH", "", alice.Address, "bob@example.test", 554, smtp.EnhancedCode{5, 7, 1}},
		{"wrong password", "wrong", alice.Address, "bob@example.test", 535, smtp.EnhancedCode{5, 7, 8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := smtp.DialStartTLS(l.Submission, l.TLSConfig(t))
			if err != nil {
				t.Fatalf("STARTTLS to %s: %v", l.Submission, err)
			}
			defer c.Close()
			err = func() error {
				if tc.password != "" {
					if err := c.Auth(sasl.NewPlainClient("", alice.Address, tc.password)); err != nil {
						return err
					}
				}
				if err := c.Mail(tc.from, nil); err != nil {
					return err
				}
				return c.Rcpt(tc.to, nil)
			}()
			smtpErr, ok := errors.AsType[*smtp.SMTPError](err)
			if !ok || smtpErr.Code != tc.wantCode || smtpErr.EnhancedCode != tc.wantEnh {
				t.Errorf("%s: got %v, want %d %v", tc.name, err, tc.wantCode, tc.wantEnh)
			}
		})
	}
}

// TestAuthNeedsSTARTTLS checks that Postfix neither offers nor accepts AUTH,
// nor takes mail, before STARTTLS.
func TestAuthNeedsSTARTTLS(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	conn, err := net.DialTimeout("tcp", l.Submission, timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	c := textproto.NewConn(conn)
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	cmd := func(line string, want int) string {
		t.Helper()
		if err := c.PrintfLine("%s", line); err != nil {
			t.Fatal(err)
		}
		code, msg, err := c.ReadResponse(want)
		if err != nil {
			t.Errorf("%s: got %d %s, want %d", strings.Fields(line)[0], code, msg, want)
		}
		return msg
	}
	if ehlo := cmd("EHLO client.example.test", 250); strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO before STARTTLS offers AUTH:\n%s", ehlo)
	}
	cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4", 530)
	cmd("MAIL FROM:<alice@example.test>", 530)
}

// TestIMAPLogin checks Dovecot's logins: over either kind of TLS, in plain
// text from loopback, and not with a wrong password.
func TestIMAPLogin(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	bob := l.User(t, "bob")
	opts := &imapclient.Options{TLSConfig: l.TLSConfig(t)}
	tests := []struct {
		name     string
		dial     func(string, *imapclient.Options) (*imapclient.Client, error)
		addr     string
		password string
		wantCode imap.ResponseCode // empty: the login succeeds
	}{
		{"STARTTLS", imapclient.DialStartTLS, l.IMAP, bob.Password, ""},
		{"implicit TLS", imapclient.DialTLS, l.IMAPS, bob.Password, ""},
		{"plain text on loopback", imapclient.DialInsecure, l.IMAP, bob.Password, ""},
		{"wrong password", imapclient.DialStartTLS, l.IMAP, "wrong", imap.ResponseCodeAuthenticationFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := tc.dial(tc.addr, opts)
			if err != nil {
				t.Fatalf("dial %s: %v", tc.addr, err)
			}
			defer c.Close()
			err = c.Login(bob.Address, tc.password).Wait()
			var code imap.ResponseCode
			if imapErr, ok := errors.AsType[*imap.Error](err); ok {
				code = imapErr.Code
			} else if err != nil {
				t.Fatalf("LOGIN: %v", err)
			}
			if code != tc.wantCode {
				t.Errorf("%s: LOGIN = %v, want code %q", tc.name, err, tc.wantCode)
			}
		})
	}
}

// TestAppendAndDeliver checks the two ways tests put fixtures into a mailbox.
func TestAppendAndDeliver(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	bob, carol := l.User(t, "bob"), l.User(t, "carol")
	token := rand.Text()
	msg := []byte("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: fixture " + token +
		"\r\nMessage-ID: <" + token + "@example.test>\r\n\r\nfixture body\r\n")

	uid := l.Append(t, bob, "INBOX", msg)
	c := l.DialIMAP(t, bob)
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if got := fetchBody(t, c, uid); !bytes.Equal(got, msg) {
		t.Errorf("BODY[] of the appended UID %d =\n%q\nwant\n%q", uid, got, msg)
	}

	l.Deliver(t, "alice@example.test", []string{carol.Address}, msg)
	got := l.WaitMessage(t, carol.Address, token)
	if !bytes.Contains(got, []byte("Delivered-To: "+carol.Address)) || !bytes.Contains(got, []byte("fixture body")) {
		t.Errorf("LMTP delivery stored:\n%s\nwant Delivered-To and the message", got)
	}
}

// TestTLSNames checks the names a client may verify the servers' certificate
// against.
func TestTLSNames(t *testing.T) {
	t.Parallel()
	l := lab.Start(t)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		cfg := l.TLSConfig(t)
		cfg.ServerName = name
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", l.IMAPS, cfg)
		if err != nil {
			t.Errorf("IMAPS with server name %s: %v", name, err)
			continue
		}
		conn.Close()
	}
}
