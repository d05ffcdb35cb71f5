package imap_test

import (
	"context"
	"crypto/x509"
	"regexp"
	"strings"
	"testing"

	"smimeproxy/certcache"
	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/keystore"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/proxy/imap"
	"smimeproxy/smime"
)

// TestVerdict: each state a person must notice puts its word before the
// Subject in every item the client fetches (ENVELOPE, the header field,
// BODY[]), with sizes that agree; a good signature and a message of the
// user's own client stay as they are; the banner adds a text part first.
func TestVerdict(t *testing.T) {
	p := testPKI(t)
	stranger := testpki.NewCA(t, "Untrusted CA").Issue(t, "alice@example.test", nil)
	mallory := p.ca.Issue(t, "mallory@example.test", nil)
	tampered := strings.Replace(signed(t, p.alice, plainMsg("tampered", "pay 10 euros")), "pay 10 euros", "pay 1000 euros", 1)
	fromMallory := strings.Replace(signed(t, p.alice, plainMsg("mismatch", "hi")), "From: Alice <alice@example.test>", "From: Mallory <mallory@example.test>", 1)
	for _, tc := range []struct {
		name   string
		reader string
		msg    string
		word   string // "" for none
	}{
		{"valid", "bob", signed(t, p.alice, plainMsg("valid", "fine")), ""},
		{"invalid", "bob", tampered, "[Invalid signature] "},
		{"untrusted", "bob", signed(t, stranger, plainMsg("untrusted", "who?")), "[Unverified signer] "},
		{"mismatch", "bob", fromMallory, "[Signer is not the sender] "},
		{"undecryptable", "alice", encrypted(t, strings.Replace(plainMsg("undecryptable", "for bob"), "Alice <alice@example.test>", "carol@example.org", 1), p.bob), "[Not decrypted] "},
		{"own, undecryptable", "alice", encrypted(t, plainMsg("own undecryptable", "to bob only"), p.bob), ""},
		{"own client's", "alice", signed(t, stranger, plainMsg("own", "from my phone")), ""},
		{"valid from a known signer", "alice", signed(t, mallory, strings.Replace(plainMsg("mallory", "x"), "Alice <alice@example.test>", "mallory@example.test", 1)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, banner := range []bool{false, true} {
				e := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) { c.IMAP.Verdict.Banner = banner }})
				e.keys.add("alice@example.test", keystore.KeyPair{KeyID: "alice", Cert: p.alice.Cert, Key: p.alice.Key})
				e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "bob", Cert: p.bob.Cert, Key: p.bob.Key})
				box := e.mailbox(t, tc.reader, tc.msg)
				c := e.dialProxy(t, e.lab.User(t, tc.reader))
				c.cmd("a EXAMINE "+box, "")
				got := c.cmd("b FETCH 1 (RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[] BODYSTRUCTURE)", "")
				all := joined(got)
				body := literalOf(t, got, "BODY[]")
				field := literalOf(t, got, "BODY[HEADER.FIELDS (SUBJECT)]")
				if numberOf(t, got, "RFC822.SIZE") != len(body) {
					t.Errorf("banner %v: RFC822.SIZE disagrees with BODY[]", banner)
				}
				envelope := regexp.MustCompile(`ENVELOPE \("[^"]*" "([^"]*)"`).FindStringSubmatch(all)
				if envelope == nil {
					t.Fatalf("no ENVELOPE subject in %.300q", all)
				}
				for what, s := range map[string]string{"ENVELOPE": envelope[1], "Subject field": field, "BODY[]": body} {
					if tc.word == "" && strings.Contains(s, "[") {
						t.Errorf("banner %v: %s has a word: %.200q", banner, what, s)
					}
					if tc.word != "" && !strings.Contains(s, tc.word) {
						t.Errorf("banner %v: %s lacks %q: %.200q", banner, what, tc.word, s)
					}
				}
				structure := regexp.MustCompile(`BODYSTRUCTURE \(\("text" "plain".*"mixed" \("boundary" "verdict-`).MatchString(all)
				if want := banner && tc.word != ""; structure != want {
					t.Errorf("banner %v: the first part is a text banner: %v, want %v: %.300q", banner, structure, want, all)
				}
				if banner && tc.word != "" {
					part := literalOf(t, c.cmd("c FETCH 1 (BODY.PEEK[1])", ""), "BODY[1]")
					if !strings.HasPrefix(part, strings.Trim(tc.word, "[] ")) {
						t.Errorf("the banner says %q", part)
					}
				}
			}
		})
	}
}

// revoking is a certificate cache whose revocation check finds one signer
// revoked, as certstatus.Checker would from OCSP or a CRL.
type revoking struct {
	*certcache.Cache
	revoked *x509.Certificate
}

func (r revoking) CheckSignatures(_ context.Context, sigs []*smime.Signature) []bool {
	harvest := make([]bool, len(sigs))
	for i, s := range sigs {
		if s.Signer != nil && s.Signer.Equal(r.revoked) {
			s.Status, s.Reason = smime.StatusRevoked, "the certificate was revoked on 2026-12-01 (keyCompromise)"
			continue
		}
		harvest[i] = s.Status == smime.StatusValid
	}
	return harvest
}

// TestRevokedSigner: a signature by a revoked certificate is reported as
// such through the IMAP proxy (smime=fail with the reason, the verdict's
// word), and its certificate is not harvested.
func TestRevokedSigner(t *testing.T) {
	p := testPKI(t)
	e := newEnv(t, envOptions{roots: []*x509.Certificate{p.ca.Root()}})
	e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "bob", Cert: p.bob.Cert, Key: p.bob.Key})
	cfg := *e.cfg
	px, err := imap.New(proxy.Options{Config: &cfg, Policy: policy.FromConfig(cfg.Policy), Keys: e.keys,
		Certs: revoking{e.certs, p.alice.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Shutdown(context.Background()) })
	box := e.mailbox(t, "bob", signed(t, p.alice, plainMsg("revoked", "from a stolen key")))
	c := dial(t, px.Addrs()[0].String(), nil)
	c.login(e.lab.User(t, "bob"))
	c.cmd("a EXAMINE "+box, "")
	got := c.cmd("b FETCH 1 (ENVELOPE BODY.PEEK[])", "")
	mustMatch(t, "revoked", got, `(?s)smime=fail\s+reason="revoked: the certificate was revoked`)
	mustMatch(t, "verdict", got, `ENVELOPE \("[^"]*" "\[Invalid signature\] revoked"`)
	if _, err := e.certs.Lookup(t.Context(), "alice@example.test"); err == nil {
		t.Error("a revoked signer's certificate was harvested")
	}
}
