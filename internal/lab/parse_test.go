package lab

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	out := `LAB_DIR=/tmp/lab
LAB_SUBMISSION=127.0.0.1:10587
LAB_IMAP=127.0.0.1:10143
LAB_IMAPS=127.0.0.1:10993
LAB_LMTP=127.0.0.1:10024
LAB_CA=/tmp/lab/tls/ca.pem
LAB_CERT=/tmp/lab/tls/server.pem
LAB_KEY=/tmp/lab/tls/server.key
LAB_MAILDIR_ROOT=/tmp/lab/mail
LAB_FUTURE=ignored
LAB_USER=alice@example.test:pw:with:colons
LAB_USER=carol@example.org:secret
`
	got, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := &Lab{
		Dir: "/tmp/lab", Submission: "127.0.0.1:10587", IMAP: "127.0.0.1:10143",
		IMAPS: "127.0.0.1:10993", LMTP: "127.0.0.1:10024", CA: "/tmp/lab/tls/ca.pem",
		Cert: "/tmp/lab/tls/server.pem", Key: "/tmp/lab/tls/server.key", MaildirRoot: "/tmp/lab/mail",
		Users: []User{{"alice@example.test", "pw:with:colons"}, {"carol@example.org", "secret"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parse = %+v, want %+v", got, want)
	}
	if got, want := got.Maildir("Bob@Example.TEST"), "/tmp/lab/mail/example.test/bob"; got != want {
		t.Errorf("Maildir(Bob@Example.TEST) = %s, want %s", got, want)
	}

	_, err = parse(strings.NewReader("LAB_DIR=/tmp/lab\n"))
	for _, key := range []string{"LAB_SUBMISSION", "LAB_CA", "LAB_USER"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("parse without %s: error %v, want it named", key, err)
		}
	}
}
