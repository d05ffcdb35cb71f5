package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"

	"smimeproxy/internal/testutil"

	gosmtp "github.com/emersion/go-smtp"
)

// dotWritten is what net/textproto's dot writer, which go-smtp's client
// uses, writes for msg, end of data included.
func dotWritten(msg []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	w := textproto.NewWriter(bw).DotWriter()
	_, _ = w.Write(msg)
	_ = w.Close()
	return b.Bytes()
}

// bodyWritten is what writeBody writes, in the order it reaches the
// connection, when the client's writer is net/textproto's on the same
// connection, as go-smtp's is; Close ends the data as go-smtp does.
func bodyWritten(t testing.TB, msg []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	w := textproto.NewWriter(bw).DotWriter()
	if err := writeBody(&b, w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestWriteBody(t *testing.T) {
	long := strings.Repeat(".a line that begins with a dot\r\n", 5000) // several chunks
	for _, msg := range []string{
		"", "x", ".", "\r\n", "\n", "\r", "a\r\n.\r\n", ".\r\n.", "..\r\n..\r\n", "a\nb\n.c\n", "a\r\r\n.b\r.c\r\n",
		"no end of line", "Subject: x\r\n\r\nbody\r\n", long, long + ".last", "\r" + long[1:], strings.Repeat("\n", stuffChunk+3),
	} {
		if got, want := bodyWritten(t, []byte(msg)), dotWritten([]byte(msg)); !bytes.Equal(got, want) {
			t.Errorf("writeBody(%.40q...) wrote %.80q..., want %.80q...", msg, got, want)
		}
	}
}

// FuzzWriteBody: the proxy's dot-stuffing writes what go-smtp would have
// written for any message, byte for byte.
func FuzzWriteBody(f *testing.F) {
	for _, s := range []string{"", ".", "a\r\n.b\r\n", "\r\r\n.\n.", "x\n..\r\r.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if got, want := bodyWritten(t, msg), dotWritten(msg); !bytes.Equal(got, want) {
			t.Fatalf("writeBody(%q) wrote %q, want %q", msg, got, want)
		}
	})
}

// TestStartTLS: the plaintext part of STARTTLS, against scripted servers.
func TestStartTLS(t *testing.T) {
	p := testPKI(t)
	conf := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"}
	tests := []struct {
		name      string
		script    func(c net.Conn, r *textproto.Reader)
		stage     string
		wantErr   error
		handshake bool
	}{
		{"offered", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "220-upstream.test\r\n220 ESMTP\r\n")
			if l, _ := r.ReadLine(); l != "EHLO proxy.test" {
				t.Errorf("first command %q, want EHLO proxy.test", l)
			}
			io.WriteString(c, "250-upstream.test\r\n250-SIZE 100\r\n250 starttls\r\n")
			if l, _ := r.ReadLine(); l != "STARTTLS" {
				t.Errorf("second command %q, want STARTTLS", l)
			}
			io.WriteString(c, "220 go ahead\r\n")
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{p.server}})
			if err := tc.Handshake(); err != nil {
				t.Errorf("server handshake: %v", err)
			}
		}, "", nil, true},
		{"not offered", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "220 upstream.test\r\n")
			r.ReadLine()
			io.WriteString(c, "250-upstream.test\r\n250-X-STARTTLS\r\n250 SIZE\r\n")
		}, stageTLS, errSMTPNoStartTLS, false},
		{"no EHLO", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "220 upstream.test\r\n")
			r.ReadLine()
			io.WriteString(c, "502 what\r\n")
		}, stageTLS, errSMTPNoStartTLS, false},
		{"refused at greeting", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "554 go away\r\n")
		}, stageConnect, nil, false},
		{"STARTTLS refused", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "220 upstream.test\r\n")
			r.ReadLine()
			io.WriteString(c, "250-upstream.test\r\n250 STARTTLS\r\n")
			r.ReadLine()
			io.WriteString(c, "454 TLS not available\r\n")
		}, stageConnect, nil, false},
		{"data injected before TLS", func(c net.Conn, r *textproto.Reader) {
			io.WriteString(c, "220 upstream.test\r\n")
			r.ReadLine()
			io.WriteString(c, "250-upstream.test\r\n250 STARTTLS\r\n")
			r.ReadLine()
			io.WriteString(c, "220 go ahead\r\n250 injected\r\n")
		}, stageTLS, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			addr := testutil.Serve(t, func(c net.Conn) {
				defer close(done)
				defer c.Close()
				tc.script(c, textproto.NewReader(bufio.NewReader(c)))
			})
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			tlsConn, stage, err := startTLS(context.Background(), conn, conf, "proxy.test")
			switch {
			case tc.handshake && (err != nil || !tlsConn.ConnectionState().HandshakeComplete):
				t.Errorf("startTLS = %v, want a completed handshake", err)
			case !tc.handshake && err == nil:
				t.Errorf("startTLS succeeded, want a failure at stage %q", tc.stage)
			case !tc.handshake && stage != tc.stage:
				t.Errorf("startTLS failed at stage %q (%v), want %q", stage, err, tc.stage)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("startTLS = %v, want %v", err, tc.wantErr)
			}
			conn.Close()
			<-done
		})
	}
}

// BenchmarkWriteBody: a 1 MB message written as DATA's content by go-smtp's
// dot writer and by writeBody, to a connection that discards it.
func BenchmarkWriteBody(b *testing.B) {
	msg := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog, again and again and again.\r\n", (1<<20)/74))
	b.Run("textproto", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			w := textproto.NewWriter(bufio.NewWriter(io.Discard)).DotWriter()
			_, _ = w.Write(msg)
			_ = w.Close()
		}
	})
	b.Run("writeBody", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			w := textproto.NewWriter(bufio.NewWriter(io.Discard)).DotWriter()
			if err := writeBody(io.Discard, w, msg); err != nil {
				b.Fatal(err)
			}
			_ = w.Close()
		}
	})
}

// TestReplyCodes: the upstream's final 250 and its refusals keep their
// enhanced codes apart from the text, as go-smtp's client keeps them, so
// that go-smtp's server writes them to the client as the upstream did.
func TestReplyCodes(t *testing.T) {
	for _, tc := range []struct {
		text string
		want gosmtp.SMTPError
	}{
		{"2.0.0 Ok: queued as X", gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as X"}},
		{"2.0.0 Ok\n2.0.0 queued", gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "Ok\nqueued"}},
		{"Ok: queued as X", gosmtp.SMTPError{Code: 250, Message: "Ok: queued as X"}},
		{"5.0.0 odd", gosmtp.SMTPError{Code: 250, Message: "5.0.0 odd"}},
		{"2.0.1000 odd", gosmtp.SMTPError{Code: 250, Message: "2.0.1000 odd"}},
		{"2.0 odd", gosmtp.SMTPError{Code: 250, Message: "2.0 odd"}},
	} {
		if got := parseOK(tc.text); *got != tc.want {
			t.Errorf("parseOK(%q) = %+v, want %+v", tc.text, *got, tc.want)
		}
	}
	for _, tc := range []struct {
		te   textproto.Error
		want gosmtp.SMTPError
	}{
		{textproto.Error{Code: 554, Msg: "5.7.1 no\n5.7.1 way"}, gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "no\nway"}},
		{textproto.Error{Code: 451, Msg: "try later"}, gosmtp.SMTPError{Code: 451, Message: "try later"}},
		{textproto.Error{Code: 552, Msg: "5.x.4 odd"}, gosmtp.SMTPError{Code: 552, Message: "5.x.4 odd"}},
	} {
		if got := smtpError(&tc.te); *got != tc.want {
			t.Errorf("smtpError(%+v) = %+v, want %+v", tc.te, *got, tc.want)
		}
	}
}
