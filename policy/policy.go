// Package policy decides, for one outgoing message, whether to sign it,
// encrypt it, pass it untouched or refuse it. It does no I/O: the caller
// gathers the facts (who is logged in, the From address, which recipients
// have a usable certificate) and acts on the Decision.
package policy

import (
	"fmt"
	"slices"
	"strings"

	"smimeproxy/config"
	"smimeproxy/internal/mailaddr"
)

// Sign says whether to sign.
type Sign string

const (
	SignAlways Sign = "always"
	SignNever  Sign = "never"
)

// Encrypt says whether to encrypt.
type Encrypt string

const (
	// EncryptOpportunistic encrypts when every recipient has a usable
	// certificate, and only signs otherwise.
	EncryptOpportunistic Encrypt = "opportunistic"
	// EncryptRequired refuses the message unless every recipient has one.
	EncryptRequired Encrypt = "required"
	// EncryptNever never encrypts, for recipients who cannot read S/MIME.
	EncryptNever Encrypt = "never"
)

// ForeignFrom says what to do with a message whose From address is not one
// of the logged-in user's addresses.
type ForeignFrom string

const (
	ForeignFromRefuse   ForeignFrom = "refuse"
	ForeignFromUnsigned ForeignFrom = "unsigned"
)

// ProtectHeaders says when to protect the header fields (RFC 9788): put a
// copy inside the signature and the encryption, and hide the Subject of
// encrypted mail outside.
type ProtectHeaders string

const (
	// ProtectEncrypted protects the header of encrypted mail only, so that
	// signed-only mail goes as it always did.
	ProtectEncrypted ProtectHeaders = "encrypted"
	// ProtectAlways protects signed-only mail too, inside its signature.
	ProtectAlways ProtectHeaders = "always"
	// ProtectNever never protects it, for recipients whose client shows
	// encrypted mail with "[...]" as its Subject.
	ProtectNever ProtectHeaders = "never"
)

// Rules is one level of policy. Empty fields inherit from the level below.
type Rules struct {
	Sign           Sign
	Encrypt        Encrypt
	ProtectHeaders ProtectHeaders
}

// Policy is the whole set of rules. The most specific level that sets a field
// wins: recipient domain, then sender address, then user, then Default.
type Policy struct {
	Default     Rules
	ForeignFrom ForeignFrom
	// Overrides honours the per-message tags and header (see ParseOverride).
	Overrides bool
	// EncryptToSelf adds the sender's own certificate to encrypted messages.
	EncryptToSelf bool
	// Cipher is "auto" or a cipher name; see ContentCipher.
	Cipher string
	// Opaque signs as application/pkcs7-mime signed-data instead of
	// detached multipart/signed.
	Opaque bool
	// The rule maps are keyed by names in normal form (package mailaddr),
	// as FromConfig makes them; Decide normalizes the names it looks up.
	Users   map[string]Rules // by login name, mailaddr.Normalize
	Senders map[string]Rules // by From address, mailaddr.Normalize
	Domains map[string]Rules // by recipient domain, mailaddr.Domain

	addresses map[string][]string // more addresses per login name
}

// Default returns the policy of a fresh installation: the configuration's
// defaults (always sign, encrypt when possible, refuse a From address that is
// not the user's, honour per-message overrides, encrypt to oneself too).
func Default() *Policy {
	return FromConfig(config.Default().Policy)
}

// Message is what the caller knows about one message (one upstream
// transaction).
type Message struct {
	User string // the login name
	From string // the address in the From header
	// Addresses are those the user may send as: the login name and any
	// configured for them.
	Addresses []string
	// Unverified says the login names no identity the proxy can check (an
	// OAuth token login, whose stated name the upstream may not compare
	// with the token): no key of the user's may be used, so the message
	// cannot be signed.
	Unverified bool
	Rcpts      []string // envelope recipients
	// Protected is true when the message is already S/MIME or PGP/MIME.
	Protected bool
	Override  Override
	// NoCert names each recipient without a usable encryption certificate,
	// with the reason, as the certificate cache gave it.
	NoCert map[string]string
}

// Action is what to do with the message.
type Action int

const (
	// Send transforms the message as Sign and Encrypt say, and sends it.
	Send Action = iota
	// Pass sends the message untouched.
	Pass
	// Refuse rejects the message with Refusal.
	Refuse
)

func (a Action) String() string {
	switch a {
	case Send:
		return "send"
	case Pass:
		return "pass"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the outcome of Decide.
type Decision struct {
	Action  Action
	Sign    bool
	Encrypt bool
	// ProtectHeaders protects the header fields (RFC 9788): inside the
	// encryption when Encrypt, else inside the signature.
	ProtectHeaders bool
	// Refusal says why the message is refused; nil unless Action is Refuse.
	Refusal *Refusal
	// Reason is a short explanation for the log.
	Reason string
}

// Refusal is a permanent rejection of a message by policy.
type Refusal struct {
	// Rcpts lists the recipients the refusal is about, if any.
	Rcpts []string
	Text  string
}

func (r *Refusal) Error() string { return "policy: " + r.Text }

// Decide applies p to m. Every name in m is compared in normal form
// (mailaddr.Normalize), however the client spelled it: a rule for
// example.org holds for Carol@Example.ORG. too.
func (p *Policy) Decide(m *Message) Decision {
	if m.Protected {
		return Decision{Action: Pass, Reason: "already protected"}
	}
	var ov Override
	if p.Overrides {
		ov = m.Override
	}
	m = normalized(m)

	from := m.From
	own := !m.Unverified && slices.Contains(m.Addresses, from)
	base := p.messageRules(m.User, from)

	sign := p.sign(base, m.Rcpts)
	if ov.Sign != Unset {
		sign = ov.Sign == On
	}
	if sign && m.Unverified && p.ForeignFrom != ForeignFromUnsigned {
		return refuse(nil, "signing needs a login the proxy can check, and a token (OAuth) login is not one; log in with your password, or send with [nosign]")
	}
	if sign && !own {
		if p.ForeignFrom != ForeignFromUnsigned {
			return refuse(nil, fmt.Sprintf("the From address <%s> is not one of yours; send from %s", m.From, strings.Join(m.Addresses, ", ")))
		}
		sign = false
	}

	enc, err := p.encrypt(base, m, ov)
	if err != nil {
		return Decision{Action: Refuse, Refusal: err, Reason: err.Text}
	}
	d := Decision{Action: Send, Sign: sign, Encrypt: enc, ProtectHeaders: p.protectHeaders(base, m.Rcpts, enc)}
	switch {
	case enc && sign:
		d.Reason = "sign and encrypt"
	case enc:
		d.Reason = "encrypt"
	case sign:
		d.Reason = "sign"
	default:
		d.Action = Pass
		d.Reason = "policy says neither sign nor encrypt"
	}
	if !enc && len(m.NoCert) > 0 && d.Action != Pass {
		d.Reason += fmt.Sprintf("; not encrypted, %d recipient(s) without a usable certificate", len(m.NoCert))
	}
	return d
}

// messageRules resolves the levels that apply to the whole message.
func (p *Policy) messageRules(user, from string) Rules {
	r := p.Default
	r = merge(r, p.Users[user])
	r = merge(r, p.Senders[from])
	return r
}

// sign: a recipient domain can turn signing on or off; when recipients'
// domains disagree, signing wins, since a signature harms no reader.
func (p *Policy) sign(base Rules, rcpts []string) bool {
	if len(rcpts) == 0 {
		return base.Sign == SignAlways
	}
	for _, rc := range rcpts {
		if merge(base, p.Domains[mailaddr.DomainOf(rc)]).Sign == SignAlways {
			return true
		}
	}
	return false
}

// encrypt: required for any recipient makes the whole message required; never
// for any recipient (who cannot read S/MIME) rules encryption out. Both at
// once is a conflict the sender must resolve by splitting the message.
func (p *Policy) encrypt(base Rules, m *Message, ov Override) (bool, *Refusal) {
	var required, never []string
	for _, rc := range m.Rcpts {
		switch merge(base, p.Domains[mailaddr.DomainOf(rc)]).Encrypt {
		case EncryptRequired:
			required = append(required, rc)
		case EncryptNever:
			never = append(never, rc)
		}
	}
	switch ov.Encrypt {
	case On:
		required, never = m.Rcpts, nil
	case Off:
		if len(required) > 0 {
			return false, &Refusal{Rcpts: required, Text: "policy requires encryption for " + strings.Join(required, ", ") + "; remove the [plain] tag or those recipients"}
		}
		return false, nil
	}
	if len(required) > 0 && len(never) > 0 {
		return false, &Refusal{Rcpts: never, Text: fmt.Sprintf("policy requires encryption for %s but forbids it for %s; send them separate messages",
			strings.Join(required, ", "), strings.Join(never, ", "))}
	}
	if len(never) > 0 {
		return false, nil
	}
	if len(m.NoCert) == 0 {
		return len(m.Rcpts) > 0, nil
	}
	if len(required) == 0 {
		return false, nil
	}
	var missing, rcpts []string
	for _, rc := range m.Rcpts {
		if why, ok := m.NoCert[rc]; ok {
			missing = append(missing, fmt.Sprintf("%s (%s)", rc, why))
			rcpts = append(rcpts, rc)
		}
	}
	return false, &Refusal{Rcpts: rcpts, Text: "encryption is required but there is no usable certificate for " + strings.Join(missing, ", ")}
}

// protectHeaders: every recipient reads the same message, so the rule of
// the recipient whose client copes least wins (never, then encrypted, then
// always); the message level decides when there are no recipients.
func (p *Policy) protectHeaders(base Rules, rcpts []string, enc bool) bool {
	level := base.ProtectHeaders
	for i, rc := range rcpts {
		l := merge(base, p.Domains[mailaddr.DomainOf(rc)]).ProtectHeaders
		if i == 0 || protectRank(l) < protectRank(level) {
			level = l
		}
	}
	if enc {
		return level != ProtectNever
	}
	return level == ProtectAlways
}

// protectRank orders the levels by how much they protect; unset is the
// default, encrypted.
func protectRank(l ProtectHeaders) int {
	switch l {
	case ProtectNever:
		return 0
	case ProtectAlways:
		return 2
	}
	return 1
}

func refuse(rcpts []string, text string) Decision {
	return Decision{Action: Refuse, Refusal: &Refusal{Rcpts: rcpts, Text: text}, Reason: text}
}

func merge(base, over Rules) Rules {
	if over.Sign != "" {
		base.Sign = over.Sign
	}
	if over.Encrypt != "" {
		base.Encrypt = over.Encrypt
	}
	if over.ProtectHeaders != "" {
		base.ProtectHeaders = over.ProtectHeaders
	}
	return base
}

// normalized returns a copy of m with every name in normal form.
func normalized(m *Message) *Message {
	n := *m
	n.User = mailaddr.Normalize(m.User)
	n.From = mailaddr.Normalize(m.From)
	n.Addresses = make([]string, len(m.Addresses))
	for i, a := range m.Addresses {
		n.Addresses[i] = mailaddr.Normalize(a)
	}
	n.Rcpts = make([]string, len(m.Rcpts))
	for i, r := range m.Rcpts {
		n.Rcpts[i] = mailaddr.Normalize(r)
	}
	if m.NoCert != nil {
		n.NoCert = make(map[string]string, len(m.NoCert))
		for r, why := range m.NoCert {
			n.NoCert[mailaddr.Normalize(r)] = why
		}
	}
	return &n
}
