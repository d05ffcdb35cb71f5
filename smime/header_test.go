package smime_test

import (
	"errors"
	"strings"
	"testing"

	"smimeproxy/smime"
)

func TestEditHeader(t *testing.T) {
	drop := func(names ...string) func(string, []byte) []byte {
		return func(name string, raw []byte) []byte {
			for _, n := range names {
				if name == n {
					return nil
				}
			}
			return raw
		}
	}
	tests := []struct {
		name, in, want string
		edit           func(string, []byte) []byte
	}{
		{"nothing to do keeps every byte", "From: a\r\nSubject: x\r\n  folded\r\n\r\nbody\n", "From: a\r\nSubject: x\r\n  folded\r\n\r\nbody\n", drop()},
		{"drops a folded field", "From: a\r\nBcc: b,\r\n c\r\nTo: d\r\n\r\nbody", "From: a\r\nTo: d\r\n\r\nbody", drop("Bcc")},
		{"drops every instance, any case", "x-smime-policy: encrypt\nFrom: a\nX-SMIME-Policy: sign\n\nbody", "From: a\n\nbody", drop("X-Smime-Policy")},
		{"replaces a field", "Subject: [encrypt] hi\r\nFrom: a\r\n\r\n", "Subject: hi\r\nFrom: a\r\n\r\n", func(name string, raw []byte) []byte {
			if name == "Subject" {
				return []byte("Subject: hi\r\n")
			}
			return raw
		}},
		{"header without a body", "From: a\r\nBcc: b\r\n", "From: a\r\n", drop("Bcc")},
	}
	for _, tc := range tests {
		got, err := smime.EditHeader([]byte(tc.in), tc.edit)
		if err != nil || string(got) != tc.want {
			t.Errorf("EditHeader(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Unchanged, the message is not copied: a large one would cost its size again.
	msg := []byte("From: a\r\nSubject: x\r\n\r\n" + strings.Repeat("body\r\n", 1000))
	if got, err := smime.EditHeader(msg, drop("Bcc")); err != nil || &got[0] != &msg[0] || len(got) != len(msg) {
		t.Errorf("EditHeader with nothing to change returned a copy (%v), want msg itself", err)
	}
	if _, err := smime.EditHeader([]byte("no colon here\r\n\r\n"), drop()); !errors.Is(err, smime.ErrMalformed) {
		t.Errorf("EditHeader(no colon) error = %v, want ErrMalformed", err)
	}
}
