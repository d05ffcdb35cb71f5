package mailaddr_test

import (
	"bufio"
	"os"
	"testing"

	"smimeproxy/internal/mailaddr"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"already normal", "carol@example.org", "carol@example.org"},
		{"upper case", "CAROL@EXAMPLE.ORG", "carol@example.org"},
		{"trailing dot", "carol@example.org.", "carol@example.org"},
		{"trailing dots", "carol@example.org..", "carol@example.org"},
		{"spaces", "  carol@example.org \t", "carol@example.org"},
		{"internationalized domain", "anna@Bücher.example", "anna@xn--bcher-kva.example"},
		{"A-label in upper case", "anna@XN--BCHER-KVA.EXAMPLE.", "anna@xn--bcher-kva.example"},
		{"full-width letters and dot", "carol@ｅｘａｍｐｌｅ。ｏｒｇ", "carol@example.org"},
		{"full-width trailing dot", "carol@example.org．", "carol@example.org"},
		{"soft hyphen", "carol@ex\u00adample.org", "carol@example.org"},
		{"eszett kept (non-transitional)", "hans@faß.de", "hans@xn--fa-hia.de"},
		{"underscore", "x@Mail_Host.example", "x@mail_host.example"},
		{"non-ASCII local part", "JÖRG@example.org", "jörg@example.org"},
		{"@ in the local part", "a@b@Example.org", "a@b@example.org"},
		{"login name", " Bob ", "bob"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		if got := mailaddr.Normalize(tc.in); got != tc.want {
			t.Errorf("Normalize(%s: %q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestDomain(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example.ORG.", "example.org"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"[127.0.0.1]", "[127.0.0.1]"},
		{"-bad-.Example", "-bad-.example"},
	}
	for _, tc := range tests {
		if got := mailaddr.Domain(tc.in); got != tc.want {
			t.Errorf("Domain(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := mailaddr.DomainOf("carol@Example.org."); got != "example.org" {
		t.Errorf("DomainOf = %q, want example.org", got)
	}
	if got := mailaddr.DomainOf("carol"); got != "" {
		t.Errorf("DomainOf(no @) = %q, want empty", got)
	}
}

// FuzzNormalize: the normal form is a fixed point, so that a name stored
// normalized and looked up normalized again still matches.
func FuzzNormalize(f *testing.F) {
	seeds, err := os.Open("testdata/addresses.txt")
	if err != nil {
		f.Fatal(err)
	}
	defer seeds.Close()
	sc := bufio.NewScanner(seeds)
	for sc.Scan() {
		f.Add(sc.Text())
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := mailaddr.Normalize(s)
		if again := mailaddr.Normalize(n); again != n {
			t.Errorf("Normalize(%q) = %q, but Normalize of that = %q", s, n, again)
		}
	})
}
