package smtp

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

// TestUpstreamChunking: a message goes upstream as one BDAT chunk when the
// upstream offers CHUNKING and the chunk stores what DATA would, else as
// DATA; the upstream stores the same bytes either way, its refusal reaches
// the client verbatim either way, and the session goes on after both.
func TestUpstreamChunking(t *testing.T) {
	msgs := []struct {
		name       string
		clientBDAT bool   // the client sends BDAT, else DATA
		msg        string // after the header that says not to sign
		stored     string // what the upstream must store
		chunked    bool   // goes upstream as BDAT when CHUNKING is offered
	}{
		{"leading dots", false, "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\n.\r\nend\r\n", "", true},
		{"leading dots, client BDAT", true, "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\n.\r\nend\r\n", "", true},
		{"bare LF", false, "Subject: lf\r\n\r\na bare\nLF\r\n", "Subject: lf\r\n\r\na bare\r\nLF\r\n", false},
		{"CR CR LF", false, "Subject: cr\r\n\r\na\r\r\nb\r\n", "Subject: cr\r\n\r\na\r\r\r\nb\r\n", false},
		{"no final CRLF", true, "Subject: end\r\n\r\n.no end of line", "Subject: end\r\n\r\n.no end of line\r\n", false},
		{"a large one", false, "Subject: large\r\n\r\n" + strings.Repeat(".a line of a large message\r\n", 10000), "", true},
	}
	const from = "From: alice@example.com\r\n"
	refusal := []string{"554-Rejected:", "554 5.0.0 5.7.0 looks like spam"}
	for _, chunking := range []bool{true, false} {
		t.Run(fmt.Sprintf("chunking=%v", chunking), func(t *testing.T) {
			e := newEnv(t, envOptions{upstream: upstreamOptions{noChunking: !chunking}, recorder: func(r *recorder) {
				r.onData = func(_ *gosmtp.Conn, _ []string, data []byte) error {
					if bytes.Contains(data, []byte("refuse me")) {
						return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Rejected:\nlooks like spam"}
					}
					return nil
				}
			}})
			c := e.login()
			for i, m := range msgs {
				msg := "X-SMIME-Policy: nosign\r\n" + from + m.msg
				c.cmd("MAIL FROM:<alice@example.com>", "250 *")
				c.cmd("RCPT TO:<bob@example.org>", "250 *")
				if m.clientBDAT {
					c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
					c.expect(fmt.Sprintf("250 2.0.0 Ok: queued as Q%04d", i+1))
				} else {
					c.cmd("DATA", "354 *")
					if got, want := c.data(msg), fmt.Sprintf("250 2.0.0 Ok: queued as Q%04d", i+1); got != want {
						t.Fatalf("%s: reply %q, want %q", m.name, got, want)
					}
				}
			}
			c.cmd("MAIL FROM:<alice@example.com>", "250 *")
			c.cmd("RCPT TO:<bob@example.org>", "250 *")
			c.cmd("DATA", "354 *")
			c.write(dotStuffed(message("bob@example.org", "spam", "refuse me\r\n", "X-SMIME-Policy: nosign")))
			if got := c.read(); !slices.Equal(got, refusal) {
				t.Errorf("refused: the client got %q, want %q", got, refusal)
			}
			c.cmd("RSET", "250 *")
			if got := c.send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "after", "Hi\r\n", "X-SMIME-Policy: nosign")); got != fmt.Sprintf("250 2.0.0 Ok: queued as Q%04d", len(msgs)+1) {
				t.Errorf("after the refusal: %q", got)
			}
			c.cmd("QUIT", "221 *")
			e.up.waitLogouts(1)

			txns := e.up.transactions()
			if len(txns) != len(msgs)+1 {
				t.Fatalf("the upstream stored %d messages, want %d", len(txns), len(msgs)+1)
			}
			for i, m := range msgs {
				want := from + m.stored
				if m.stored == "" {
					want = from + m.msg
				}
				if got := string(txns[i].data); got != want {
					t.Errorf("%s: stored %.200q, want %.200q", m.name, got, want)
				}
				if txns[i].bdat != (chunking && m.chunked) {
					t.Errorf("%s: went upstream as BDAT: %v, want %v", m.name, txns[i].bdat, chunking && m.chunked)
				}
			}
			if !txns[len(msgs)].bdat == chunking {
				t.Errorf("the message after the refusal went as BDAT: %v, want %v", txns[len(msgs)].bdat, chunking)
			}
		})
	}
}

func TestCRLFLines(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"", false}, {"\r\n", true}, {"a\r\n", true}, {"a\r\n\r\n.b\r\n", true}, {"a", false}, {"a\n", false},
		{"\n", false}, {"a\r\r\n", false}, {"a\rb\r\n", false}, {"a\r\nb", false}, {"a\r\n\r", false}, {"\na\r\n", false},
	} {
		if got := crlfLines([]byte(tc.msg)); got != tc.want {
			t.Errorf("crlfLines(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// FuzzCRLFLines: what crlfLines lets go as a BDAT chunk is what the
// upstream stores of it as DATA, written by go-smtp's dot writer.
func FuzzCRLFLines(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n..\r\n", "a\r\r\n", "a\n.\r\n", "\r\n\r\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !crlfLines(msg) {
			return
		}
		if got := unstuffed(dotWritten(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("crlfLines(%q), but DATA stores %q", msg, got)
		}
	})
}

// unstuffed is what a server stores of DATA's content: the final dot
// gone, and a dot taken from each line that begins with one.
func unstuffed(data []byte) []byte {
	data = bytes.TrimSuffix(data, []byte(".\r\n"))
	var out []byte
	for line := range bytes.Lines(data) {
		if line[0] == '.' && (len(out) == 0 || bytes.HasSuffix(out, []byte("\r\n"))) {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

// TestWriteChunk: the command, then the message as it is, large or small.
func TestWriteChunk(t *testing.T) {
	for _, msg := range []string{"a\r\n", ".\r\n", strings.Repeat(".x\r\n", stuffChunk)} {
		var b bytes.Buffer
		if err := writeChunk(&b, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg); b.String() != want {
			t.Errorf("writeChunk wrote %.40q..., want %.40q...", b.String(), want)
		}
	}
}
