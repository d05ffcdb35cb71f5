package policy_test

import (
	"encoding/asn1"
	"slices"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/policy"
)

func TestDecide(t *testing.T) {
	partner := policy.Default()
	partner.Domains = map[string]policy.Rules{
		"partner.example": {Encrypt: policy.EncryptRequired},
		"lists.example":   {Sign: policy.SignNever, Encrypt: policy.EncryptNever},
	}
	partner.Users = map[string]policy.Rules{"quiet": {Sign: policy.SignNever}}
	partner.Senders = map[string]policy.Rules{"noreply@example.com": {Sign: policy.SignNever}}

	unsigned := policy.Default()
	unsigned.ForeignFrom = policy.ForeignFromUnsigned

	noOverrides := policy.Default()
	noOverrides.Overrides = false

	alice := func(rcpts ...string) *policy.Message {
		return &policy.Message{User: "alice@example.com", From: "alice@example.com",
			Addresses: []string{"alice@example.com", "sales@example.com"}, Rcpts: rcpts}
	}
	with := func(m *policy.Message, f func(*policy.Message)) *policy.Message { f(m); return m }
	noCert := func(rcpts ...string) func(*policy.Message) {
		return func(m *policy.Message) {
			m.NoCert = map[string]string{}
			for _, r := range rcpts {
				m.NoCert[r] = "no certificate"
			}
		}
	}

	tests := []struct {
		name        string
		p           *policy.Policy
		m           *policy.Message
		action      policy.Action
		sign, enc   bool
		refusedFor  []string
		refusalText string
	}{
		{"default: sign and encrypt when every cert is known", policy.Default(), alice("bob@example.org"), policy.Send, true, true, nil, ""},
		{"default: sign only when a cert is missing", policy.Default(), with(alice("bob@example.org", "carol@example.org"), noCert("carol@example.org")), policy.Send, true, false, nil, ""},
		{"already S/MIME passes untouched", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.Protected = true }), policy.Pass, false, false, nil, ""},
		{"second address of the user may sign", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.From = "Sales@Example.com" }), policy.Send, true, true, nil, ""},
		{"foreign From is refused by default", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.From = "ceo@example.com" }), policy.Refuse, false, false, nil, "not one of yours"},
		{"foreign From goes unsigned when configured", unsigned, with(alice("bob@example.org"), func(m *policy.Message) { m.From = "ceo@example.com" }), policy.Send, false, true, nil, ""},
		{"required domain refuses naming the recipient", partner, with(alice("x@partner.example", "bob@example.org"), noCert("x@partner.example")), policy.Refuse, false, false, []string{"x@partner.example"}, "x@partner.example (no certificate)"},
		{"required domain refuses naming every recipient without a cert", partner, with(alice("x@partner.example", "bob@example.org"), noCert("bob@example.org")), policy.Refuse, false, false, []string{"bob@example.org"}, "bob@example.org"},
		{"required domain encrypts when all certs are known", partner, alice("x@partner.example"), policy.Send, true, true, nil, ""},
		{"never domain: no encryption, no signature", partner, alice("list@lists.example"), policy.Pass, false, false, nil, ""},
		{"mixed never and always domains: sign wins", partner, alice("list@lists.example", "bob@example.org"), policy.Send, true, false, nil, ""},
		{"required and never at once is a conflict", partner, alice("list@lists.example", "x@partner.example"), policy.Refuse, false, false, []string{"list@lists.example"}, "send them separate messages"},
		{"user rule turns signing off", partner, with(alice("bob@example.org"), func(m *policy.Message) { m.User = "quiet" }), policy.Send, false, true, nil, ""},
		{"sender rule turns signing off", partner, with(alice("bob@example.org"), func(m *policy.Message) {
			m.From = "noreply@example.com"
			m.Addresses = append(m.Addresses, "noreply@example.com")
		}), policy.Send, false, true, nil, ""},
		{"[encrypt] makes encryption required", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) {
			noCert("bob@example.org")(m)
			m.Override.Encrypt = policy.On
		}), policy.Refuse, false, false, []string{"bob@example.org"}, "encryption is required"},
		{"[encrypt] beats a never domain", partner, with(alice("list@lists.example"), func(m *policy.Message) { m.Override.Encrypt = policy.On }), policy.Send, false, true, nil, ""},
		{"[nosign] drops the signature", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.Override.Sign = policy.Off }), policy.Send, false, true, nil, ""},
		{"[sign] beats a never rule", partner, with(alice("list@lists.example"), func(m *policy.Message) { m.Override.Sign = policy.On }), policy.Send, true, false, nil, ""},
		{"[plain] sends as is", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.Override = policy.Override{Sign: policy.Off, Encrypt: policy.Off} }), policy.Pass, false, false, nil, ""},
		{"[plain] cannot beat a required domain", partner, with(alice("x@partner.example"), func(m *policy.Message) { m.Override = policy.Override{Sign: policy.Off, Encrypt: policy.Off} }), policy.Refuse, false, false, []string{"x@partner.example"}, "policy requires encryption"},
		{"overrides ignored when turned off", noOverrides, with(alice("bob@example.org"), func(m *policy.Message) { m.Override.Sign = policy.Off }), policy.Send, true, true, nil, ""},
		{"an unverified login cannot sign", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) { m.Unverified = true }),
			policy.Refuse, false, false, nil, "token (OAuth) login"},
		{"an unverified login sends unsigned when foreign From goes unsigned", unsigned, with(alice("bob@example.org"), func(m *policy.Message) { m.Unverified = true }),
			policy.Send, false, true, nil, ""},
		{"an unverified login with [nosign] is not refused", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) {
			m.Unverified = true
			m.Override.Sign = policy.Off
		}), policy.Send, false, true, nil, ""},
		{"[nosign] with a foreign From is not refused", policy.Default(), with(alice("bob@example.org"), func(m *policy.Message) {
			m.From = "ceo@example.com"
			m.Override.Sign = policy.Off
		}), policy.Send, false, true, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.p.Decide(tc.m)
			if d.Action != tc.action || d.Sign != tc.sign || d.Encrypt != tc.enc {
				t.Fatalf("Decide(%s) = %v sign=%v encrypt=%v (%s), want %v sign=%v encrypt=%v",
					tc.name, d.Action, d.Sign, d.Encrypt, d.Reason, tc.action, tc.sign, tc.enc)
			}
			if tc.action != policy.Refuse {
				if d.Refusal != nil {
					t.Errorf("Decide(%s).Refusal = %v, want nil", tc.name, d.Refusal)
				}
				return
			}
			if d.Refusal == nil {
				t.Fatalf("Decide(%s).Refusal = nil, want one", tc.name)
			}
			if !slices.Equal(d.Refusal.Rcpts, tc.refusedFor) {
				t.Errorf("Decide(%s).Refusal.Rcpts = %v, want %v", tc.name, d.Refusal.Rcpts, tc.refusedFor)
			}
			if !strings.Contains(d.Refusal.Text, tc.refusalText) {
				t.Errorf("Decide(%s).Refusal.Text = %q, want it to contain %q", tc.name, d.Refusal.Text, tc.refusalText)
			}
		})
	}
}

func TestParseOverride(t *testing.T) {
	tests := []struct {
		name, subject, header string
		want                  policy.Override
		wantSubject           string
	}{
		{"no tags leaves the subject byte for byte", "Re:  Lunch [v2]", "", policy.Override{}, "Re:  Lunch [v2]"},
		{"leading tag", "[encrypt] Contract", "", policy.Override{Encrypt: policy.On}, "Contract"},
		{"trailing tag, any case", "Contract [ENCRYPT]", "", policy.Override{Encrypt: policy.On}, "Contract"},
		{"tag inside a reply", "Re: [sign] Minutes", "", policy.Override{Sign: policy.On}, "Re: Minutes"},
		{"two tags compose", "[encrypt][nosign] Salary", "", policy.Override{Sign: policy.Off, Encrypt: policy.On}, "Salary"},
		{"plain", "[plain] Newsletter", "", policy.Override{Sign: policy.Off, Encrypt: policy.Off}, "Newsletter"},
		{"unknown brackets stay", "[PATCH] [encrypt] fix", "", policy.Override{Encrypt: policy.On}, "[PATCH] fix"},
		{"header only", "Hello", "encrypt, nosign", policy.Override{Sign: policy.Off, Encrypt: policy.On}, "Hello"},
		{"header and tag", "[sign] Hello", "Encrypt", policy.Override{Sign: policy.On, Encrypt: policy.On}, "Hello"},
		{"unclosed bracket", "[encrypt Hello", "", policy.Override{}, "[encrypt Hello"},
		{"tag only", "[encrypt]", "", policy.Override{Encrypt: policy.On}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, subj := policy.ParseOverride(tc.subject, tc.header)
			if got != tc.want || subj != tc.wantSubject {
				t.Errorf("ParseOverride(%q, %q) = %+v, %q; want %+v, %q", tc.subject, tc.header, got, subj, tc.want, tc.wantSubject)
			}
		})
	}
}

func FuzzParseOverride(f *testing.F) {
	for _, s := range []string{"[encrypt] x", "a [b] [sign]", "[[plain]]", "]["} {
		f.Add(s, "encrypt")
	}
	f.Fuzz(func(t *testing.T, subject, header string) {
		_, out := policy.ParseOverride(subject, header)
		if len(out) > len(subject) {
			t.Fatalf("ParseOverride(%q) grew the subject to %q", subject, out)
		}
	})
}

func TestFromConfig(t *testing.T) {
	c := config.Default().Policy
	c.Users = map[string]config.UserRules{
		"Alice@Example.com": {Addresses: []string{"Sales@Example.com"}, Rules: config.Rules{Sign: "never"}},
		"bob":               {Addresses: []string{"bob@example.org"}},
	}
	c.Domains = map[string]config.Rules{"Partner.Example": {Encrypt: "required"}}
	c.SignFormat = "opaque"
	p := policy.FromConfig(c)
	if !p.Opaque || policy.Default().Opaque {
		t.Errorf("Opaque = %v from sign_format opaque, %v by default; want true, false", p.Opaque, policy.Default().Opaque)
	}

	if got, want := p.Addresses("alice@example.com"), []string{"alice@example.com", "sales@example.com"}; !slices.Equal(got, want) {
		t.Errorf("Addresses(alice@example.com) = %v, want %v", got, want)
	}
	if got, want := p.Addresses("BOB"), []string{"bob@example.org"}; !slices.Equal(got, want) {
		t.Errorf("Addresses(BOB) = %v, want %v (a login that is not an address is not one)", got, want)
	}
	if got := p.Addresses("mallory@example.com"); !slices.Equal(got, []string{"mallory@example.com"}) {
		t.Errorf("Addresses(mallory) = %v, want only the login", got)
	}
	d := p.Decide(&policy.Message{User: "alice@example.com", From: "alice@example.com", Addresses: p.Addresses("alice@example.com"),
		Rcpts: []string{"x@partner.example"}, NoCert: map[string]string{"x@partner.example": "expired"}})
	if d.Action != policy.Refuse {
		t.Errorf("Decide with a required domain from the configuration = %v (%s), want refuse", d.Action, d.Reason)
	}
}

func TestContentCipher(t *testing.T) {
	gcm := cms.Capability{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}}
	cbc := cms.Capability{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}}
	auto := policy.Default()
	fixed := policy.Default()
	fixed.Cipher = "aes-128-gcm"
	tests := []struct {
		name string
		p    *policy.Policy
		caps [][]cms.Capability
		want cms.Cipher
	}{
		{"every recipient reads GCM", auto, [][]cms.Capability{{gcm, cbc}, {gcm}}, cms.AES256GCM},
		{"one recipient does not", auto, [][]cms.Capability{{gcm, cbc}, {cbc}}, cms.AES256CBC},
		{"one recipient never told us", auto, [][]cms.Capability{{gcm}, nil}, cms.AES256CBC},
		{"no recipients", auto, nil, cms.AES256CBC},
		{"configured cipher wins", fixed, [][]cms.Capability{{cbc}}, cms.AES128GCM},
	}
	for _, tc := range tests {
		if got := tc.p.ContentCipher(tc.caps); got != tc.want {
			t.Errorf("ContentCipher(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestNormalizedNames: every rule holds however the client spelled the
// name: case, a trailing dot, an internationalized domain in either form.
func TestNormalizedNames(t *testing.T) {
	c := config.Default().Policy
	c.Domains = map[string]config.Rules{"Example.ORG.": {Encrypt: "required"}, "bücher.example": {Encrypt: "required"}}
	c.Senders = map[string]config.Rules{"NoReply@Example.com.": {Sign: "never"}}
	c.Users = map[string]config.UserRules{"Quiet@Example.com": {Addresses: []string{"Team@EXAMPLE.com."}, Rules: config.Rules{Encrypt: "never"}}}
	p := policy.FromConfig(c)

	required := []string{"carol@example.org.", "CAROL@EXAMPLE.ORG", "carol@Example.Org..", "anna@BÜCHER.example", "anna@xn--bcher-kva.example."}
	for _, rcpt := range required {
		m := &policy.Message{User: "alice@example.com", From: "alice@example.com", Addresses: p.Addresses("alice@example.com"),
			Rcpts: []string{rcpt}, NoCert: map[string]string{rcpt: "no certificate"}}
		if d := p.Decide(m); d.Action != policy.Refuse {
			t.Errorf("Decide(to %q, no certificate, domain required) = %v (%s), want refuse", rcpt, d.Action, d.Reason)
		}
		m.NoCert = nil
		if d := p.Decide(m); d.Action != policy.Send || !d.Encrypt {
			t.Errorf("Decide(to %q, certificate known, domain required) = %v encrypt=%v, want send encrypted", rcpt, d.Action, d.Encrypt)
		}
	}

	d := p.Decide(&policy.Message{User: "alice@example.com", From: "noreply@example.com", Addresses: []string{"NOREPLY@example.com."}, Rcpts: []string{"bob@example.net"}})
	if d.Action != policy.Send || d.Sign {
		t.Errorf("Decide(sender rule for NoReply@Example.com.) = %v sign=%v, want send unsigned", d.Action, d.Sign)
	}
	if got, want := p.Addresses("QUIET@example.COM."), []string{"quiet@example.com", "team@example.com"}; !slices.Equal(got, want) {
		t.Errorf("Addresses(QUIET@example.COM.) = %v, want %v", got, want)
	}
	d = p.Decide(&policy.Message{User: "quiet@EXAMPLE.com", From: "team@example.com.", Addresses: p.Addresses("quiet@EXAMPLE.com"), Rcpts: []string{"bob@example.net"}})
	if d.Action != policy.Send || !d.Sign || d.Encrypt {
		t.Errorf("Decide(user rule, second address) = %v sign=%v encrypt=%v (%s), want signed, not encrypted", d.Action, d.Sign, d.Encrypt, d.Reason)
	}
}

// TestProtectHeaders: on for encrypted mail by default, on for signed-only
// mail only when asked, and off for the message as soon as one
// recipient's rule says never; from the configuration, per default, user,
// sender and recipient domain.
func TestProtectHeaders(t *testing.T) {
	c := config.Default().Policy
	c.Domains = map[string]config.Rules{
		"old.example":     {ProtectHeaders: "never"},
		"modern.example":  {ProtectHeaders: "always"},
		"partner.example": {Encrypt: "required"},
	}
	c.Users = map[string]config.UserRules{"careful@example.com": {Rules: config.Rules{ProtectHeaders: "always"}}}
	c.Senders = map[string]config.Rules{"news@example.com": {ProtectHeaders: "never"}}
	p := policy.FromConfig(c)
	msg := func(user, from string, noCert bool, rcpts ...string) *policy.Message {
		m := &policy.Message{User: user, From: from, Addresses: []string{user, from}, Rcpts: rcpts}
		if noCert {
			m.NoCert = map[string]string{}
			for _, r := range rcpts {
				m.NoCert[r] = "no certificate"
			}
		}
		return m
	}
	const alice = "alice@example.com"
	tests := []struct {
		name      string
		m         *policy.Message
		sign, enc bool
		protect   bool
	}{
		{"encrypted: on by default", msg(alice, alice, false, "bob@example.org"), true, true, true},
		{"signed only: off by default", msg(alice, alice, true, "bob@example.org"), true, false, false},
		{"signed only, always for the domain", msg(alice, alice, true, "x@modern.example"), true, false, true},
		{"signed only, always for one recipient only", msg(alice, alice, true, "x@modern.example", "bob@example.org"), true, false, false},
		{"encrypted, never for the domain", msg(alice, alice, false, "x@old.example"), true, true, false},
		{"encrypted, never for one of the recipients", msg(alice, alice, false, "x@old.example", "bob@example.org", "y@modern.example"), true, true, false},
		{"user always: signed only too", msg("careful@example.com", "careful@example.com", true, "bob@example.org"), true, false, true},
		{"user always, domain never", msg("careful@example.com", "careful@example.com", false, "x@old.example"), true, true, false},
		{"sender never", msg(alice, "news@example.com", false, "bob@example.org"), true, true, false},
		{"encrypted to a required domain", msg(alice, alice, false, "x@partner.example"), true, true, true},
	}
	for _, tc := range tests {
		d := p.Decide(tc.m)
		if d.Action != policy.Send || d.Sign != tc.sign || d.Encrypt != tc.enc || d.ProtectHeaders != tc.protect {
			t.Errorf("Decide(%s) = %v sign=%v encrypt=%v protect=%v (%s), want send sign=%v encrypt=%v protect=%v",
				tc.name, d.Action, d.Sign, d.Encrypt, d.ProtectHeaders, d.Reason, tc.sign, tc.enc, tc.protect)
		}
	}
	off := config.Default().Policy
	off.ProtectHeaders = "never"
	if d := policy.FromConfig(off).Decide(msg(alice, alice, false, "bob@example.org")); !d.Encrypt || d.ProtectHeaders {
		t.Errorf("protect_headers: never by default: encrypt=%v protect=%v, want encrypted without", d.Encrypt, d.ProtectHeaders)
	}
}
