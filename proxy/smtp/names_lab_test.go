package smtp

import (
	"bytes"
	"strings"
	"testing"

	"smimeproxy/config"
)

// TestLabNormalizedRecipients: with encryption required for example.org,
// carol@example.org spelled with a trailing dot or in upper case (which the
// lab's Postfix delivers to carol@example.org) is refused without her
// certificate and encrypted with it: never sent in the clear.
func TestLabNormalizedRecipients(t *testing.T) {
	p := testPKI(t)
	ids := labIdentities(t, p)
	required := func(c *config.Config) {
		c.Policy.Domains = map[string]config.Rules{"example.org": {Encrypt: "required"}}
	}
	without := newSMTPLabEnvConfig(t, required)
	with := newSMTPLabEnvConfig(t, required, ids.carol.Cert)
	for _, rcpt := range []string{"carol@example.org.", "CAROL@EXAMPLE.ORG"} {
		t.Run(rcpt, func(t *testing.T) {
			refused := marker(t) + "-refused"
			c := dialTest(t, without.proxy.Addrs()[1].String())
			c.cmd("EHLO client.test", "250 *")
			c.cmd("AUTH PLAIN "+plain(without.alice.Address, without.alice.Password), "235 *")
			c.cmd("MAIL FROM:<alice@example.test>", "250 *")
			c.cmd("RCPT TO:<"+rcpt+">", "250 *")
			c.cmd("DATA", "354 *")
			want := "554 5.7.1 Refused by policy: encryption is required but there is no usable certificate for carol@example.org (no certificate)"
			if got := c.data(labMessage(refused, "carol@example.org", "Hi Carol, in confidence.\r\n")); got != want {
				t.Fatalf("DATA reply without carol's certificate %q, want %q", got, want)
			}
			c.cmd("QUIT", "221 *")

			sealed := marker(t) + "-sealed"
			with.submit(t, []string{rcpt}, labMessage(sealed, "carol@example.org", "Hi Carol, in confidence.\r\n"))
			got := with.lab.WaitMessage(t, "carol@example.org", sealed)
			if ct := contentType(got); !strings.Contains(ct, "enveloped-data") || bytes.Contains(got, []byte("in confidence")) {
				t.Fatalf("arrived as %q, want enveloped-data and no plaintext", ct)
			}
			if content := openSSLVerify(t, openSSLDecrypt(t, got, ids.carol), p.caFile); !bytes.Contains(content, []byte("in confidence")) {
				t.Errorf("carol decrypted %q, want the body", content)
			}
			// The refused message went before the sealed one, on the same
			// Postfix: had it gone out, it would be there by now.
			if count(t, without.lab.Maildir("carol@example.org"), refused) != 0 {
				t.Error("the refused message reached carol's mailbox")
			}
		})
	}
}
