package policy

import (
	"strings"

	"smimeproxy/cms"
	"smimeproxy/config"
	"smimeproxy/internal/mailaddr"
)

// FromConfig builds the policy the configuration describes. The values were
// checked by config.Validate.
func FromConfig(c config.Policy) *Policy {
	p := &Policy{
		Default:       Rules{Sign: Sign(c.Sign), Encrypt: Encrypt(c.Encrypt), ProtectHeaders: ProtectHeaders(c.ProtectHeaders)},
		ForeignFrom:   ForeignFrom(c.ForeignFrom),
		Overrides:     c.Overrides,
		EncryptToSelf: c.EncryptToSelf,
		Cipher:        c.Cipher,
		Opaque:        c.SignFormat == "opaque",
		Users:         map[string]Rules{},
		Senders:       map[string]Rules{},
		Domains:       map[string]Rules{},
		addresses:     map[string][]string{},
	}
	for name, u := range c.Users {
		name = mailaddr.Normalize(name)
		p.Users[name] = rules(u.Rules)
		for _, a := range u.Addresses {
			p.addresses[name] = append(p.addresses[name], mailaddr.Normalize(a))
		}
	}
	for addr, r := range c.Senders {
		p.Senders[mailaddr.Normalize(addr)] = rules(r)
	}
	for dom, r := range c.Domains {
		p.Domains[mailaddr.Domain(dom)] = rules(r)
	}
	return p
}

func rules(r config.Rules) Rules {
	return Rules{Sign: Sign(r.Sign), Encrypt: Encrypt(r.Encrypt), ProtectHeaders: ProtectHeaders(r.ProtectHeaders)}
}

// Addresses returns the addresses a login may send as and read mail for: the
// login name itself when it is an address, and those configured for it, all
// normalized (mailaddr.Normalize).
func (p *Policy) Addresses(login string) []string {
	login = mailaddr.Normalize(login)
	var out []string
	if strings.Contains(login, "@") {
		out = append(out, login)
	}
	for _, a := range p.addresses[login] {
		if a != login {
			out = append(out, a)
		}
	}
	return out
}

// ContentCipher picks the cipher for one message from what each recipient
// advertised in SMIMECapabilities (nil when never seen). With "auto",
// AES-256-GCM only when every recipient listed AES-GCM, since clients such as
// Outlook cannot read it; AES-256-CBC otherwise, which every client reads.
func (p *Policy) ContentCipher(recipients [][]cms.Capability) cms.Cipher {
	if p.Cipher != "" && p.Cipher != "auto" {
		for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES128CBC, cms.AES256GCM, cms.AES128GCM} {
			if c.String() == p.Cipher {
				return c
			}
		}
	}
	if len(recipients) == 0 {
		return cms.AES256CBC
	}
	for _, caps := range recipients {
		if !advertisesGCM(caps) {
			return cms.AES256CBC
		}
	}
	return cms.AES256GCM
}

func advertisesGCM(caps []cms.Capability) bool {
	for _, c := range caps {
		if ci, ok := c.Cipher(); ok && ci.AEAD() {
			return true
		}
	}
	return false
}
