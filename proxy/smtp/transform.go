package smtp

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/certcache"
	"smimeproxy/cms"
	"smimeproxy/internal/mailaddr"
	"smimeproxy/policy"
	"smimeproxy/proxy"
	"smimeproxy/smime"
)

// Bcc recipients (in the envelope but not in To or Cc) are never revealed.
// A signed message has no Bcc field (the proxy removes any the client left),
// so one transaction carries it to everyone. An encrypted one names each
// recipient in its recipient infos, so each Bcc recipient gets a copy of
// their own, encrypted to them and the sender, in a transaction of its own
// on the same upstream connection: first the copy for the To and Cc
// recipients (the main copy), then one per Bcc recipient.
//
// When several transactions are needed:
//   - the main copy goes first; if the upstream refuses it, nothing was sent
//     and the client gets that refusal (so it keeps the message);
//   - once the main copy is accepted, the client gets its 250 even if a Bcc
//     copy fails later, so that it does not send everyone the message again.
//     Each failure is logged and counted (result "partial"), and the sender
//     gets a notice naming the Bcc recipients who did not get it, with the
//     upstream's reply, sent as a plain message from and to the envelope
//     sender on the same upstream session. If the upstream connection broke,
//     no notice can be sent (the proxy keeps no password to log in again):
//     the log says so.
//
// Each Bcc copy is encrypted just before it is sent, and dropped after, so
// that only one encrypted copy is ever held; one that cannot be encrypted
// fails like one the upstream refused.

// Values of the action label and log key.
const (
	actionSign        = "sign"
	actionEncrypt     = "encrypt"
	actionSignEncrypt = "sign_encrypt"
	actionPass        = "pass"
	actionRefuse      = "refuse"
)

// plan is what to send upstream for one message.
type plan struct {
	action  string
	cipher  string // of the main copy, when encrypted
	msgID   string
	copies  []msgCopy            // the main copy first
	content []byte               // what the Bcc copies encrypt
	signed  *smime.SignedMessage // content, when the proxy signed it
	held    int64                // reserved in the memory budget for the transform
}

// msgCopy is one upstream transaction.
type msgCopy struct {
	rcpts  []rcpt
	msg    []byte // nil for a Bcc copy until it is encrypted
	reuse  bool   // in the transaction the client opened, whose MAIL and RCPTs are upstream already
	cipher string
	certs  []*x509.Certificate // to encrypt to; nil: msg goes as it is
	alg    cms.Cipher
	// protect: Encrypt protects the header (RFC 9788) of unsigned content.
	protect bool
}

// failedCopy is a Bcc copy the upstream did not take.
type failedCopy struct {
	rcpts []rcpt
	err   error
}

// deliver plans, sends and logs one message, and gives back the held bytes
// of the budget that raw came with; it returns the client's reply. It keeps
// no reference to raw, so that the transform may drop it.
func (s *session) deliver(raw []byte, held int64, start time.Time) error {
	txn := s.txn
	size := len(raw)
	planned := time.Now()
	p, err := s.plan(raw, held, txn)
	defer s.gen.budget.Release(p.held)
	if p.action == actionSign || p.action == actionEncrypt || p.action == actionSignEncrypt {
		s.gen.metrics.TransformSeconds.WithLabelValues(p.action).Observe(time.Since(planned).Seconds())
	}
	var (
		ok     *gosmtp.SMTPError
		failed []failedCopy
	)
	if err == nil {
		ok, failed, err = s.send(p, txn)
	}
	result := "ok"
	if err == nil && len(failed) > 0 {
		result = "partial"
		s.bccFailed(p, txn, failed)
	}
	reply := ok
	if err != nil {
		reply = s.reply(err)
		result = messageResult(err, reply)
	}
	s.gen.metrics.Messages.WithLabelValues(p.action, result).Inc()
	attrs := []any{"msg_id", p.msgID, "from", txn.from, "action", p.action, "rcpts", len(txn.rcpts),
		"cipher", p.cipher, "bytes", size, "dur_ms", time.Since(start).Milliseconds(), "reply", replyText(reply)}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.log.Info("message", attrs...)
	return reply
}

// messageResult is the result label for a message that was not accepted.
func messageResult(err error, reply *gosmtp.SMTPError) string {
	var (
		se  *gosmtp.SMTPError
		ref *policy.Refusal
		me  *messageError
	)
	switch {
	case errors.As(err, &ref):
		return "ok" // refused by policy, as configured
	case errors.As(err, &se):
		return "rejected"
	case errors.As(err, &me):
		return "error"
	case reply.Code/100 == 4 && reply.EnhancedCode != gosmtp.EnhancedCode{4, 3, 0}:
		return "tempfail"
	}
	return "error"
}

// replyText is a reply as the client reads it, for logs and notices.
func replyText(r *gosmtp.SMTPError) string {
	if r.EnhancedCode == gosmtp.EnhancedCodeNotSet || r.EnhancedCode == gosmtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", r.Code, r.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}

// plan reads the facts policy needs, asks it, and makes the copies to send.
// It always returns a plan, for the log, even with an error.
func (s *session) plan(raw []byte, held int64, txn *transaction) (*plan, error) {
	g := s.gen
	p := &plan{action: actionRefuse, held: held}
	size := int64(len(raw))
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		reason := "its header cannot be read"
		if _, err := smime.EditHeader(raw, keepField); err != nil {
			reason = malformedReason(err) // says what is wrong with it
		}
		return p, &messageError{reason: reason, err: err}
	}
	p.msgID = logValue(h.Get("Message-Id"))
	rcpts := make([]string, len(txn.rcpts))
	for i, r := range txn.rcpts {
		rcpts[i] = mailaddr.Normalize(r.addr)
	}
	if smime.Classify(h) != smime.Plain {
		// Already S/MIME or PGP/MIME: policy passes it (policy.Message.Protected),
		// byte for byte as it came.
		p.action = actionPass
		p.copies = []msgCopy{{rcpts: txn.rcpts, msg: raw, reuse: true}}
		return p, s.reserve(p, size) // gives back what reading reserved for a transform
	}
	from, err := fromAddress(h)
	if err != nil {
		return p, &messageError{reason: "its From header does not hold one address", err: err}
	}
	ov, edited, err := editHeader(raw, h, g.policy.Overrides)
	if err != nil {
		return p, err
	}
	entries := map[string]*certcache.Entry{}
	noCert := map[string]string{}
	for _, r := range rcpts {
		e, err := s.recipientCert(r)
		if err != nil && !errors.Is(err, certcache.ErrNoCert) {
			return p, fmt.Errorf("certificate lookup for a recipient: %w", err)
		} else if err != nil {
			noCert[r] = certReason(err)
			continue
		}
		entries[r] = e
	}
	user, addrs := "", []string(nil)
	if s.verified {
		user, addrs = s.login, g.policy.Addresses(s.login)
	}
	d := g.policy.Decide(&policy.Message{User: user, From: from, Addresses: addrs, Unverified: s.login != "" && !s.verified,
		Rcpts: rcpts, Override: ov, NoCert: noCert})
	if d.Action == policy.Refuse {
		return p, d.Refusal
	}

	if d.Action == policy.Pass {
		p.action = actionPass
		p.copies = []msgCopy{{rcpts: txn.rcpts, msg: edited, reuse: true}}
		return p, s.reserve(p, size)
	}
	p.action = actionSign
	if d.Encrypt {
		p.action = actionEncrypt
		if d.Sign {
			p.action = actionSignEncrypt
		}
	}
	if err := s.reserve(p, size+transformCost(d.Sign, d.Encrypt, g.policy.Opaque, edited)); err != nil {
		return p, err
	}
	now := g.opts.Time()
	content := edited
	var signed *smime.SignedMessage
	if d.Sign {
		sg, err := g.opts.Keys.Signer(from, now)
		if err != nil {
			return p, &keyError{addr: from, purpose: "signing", err: err}
		}
		id := &smime.Identity{Cert: sg.Cert, Key: sg.Key, Chain: sg.Chain, EncryptionCert: sg.EncryptionCert}
		if signed, err = smime.SignMessage(edited, id, &smime.SignOptions{Opaque: g.policy.Opaque, Time: now, HeaderProtection: signProtection(d)}); err != nil {
			return p, transformError(err)
		}
		content = signed.Bytes()
	}
	if !d.Encrypt {
		p.copies = []msgCopy{{rcpts: txn.rcpts, msg: content, reuse: true}}
		return p, nil
	}
	var self *x509.Certificate
	if selfAddr := selfAddress(from, addrs); g.policy.EncryptToSelf && selfAddr != "" {
		if self, err = g.opts.Keys.EncryptionCert(selfAddr, now); err != nil {
			return p, &keyError{addr: selfAddr, purpose: "encrypting to yourself", err: err}
		}
	}
	for _, grp := range bccGroups(txn.rcpts, headerRecipients(h)) {
		grp.certs = make([]*x509.Certificate, 0, len(grp.rcpts)+1)
		caps := make([][]cms.Capability, 0, len(grp.rcpts))
		for _, r := range grp.rcpts {
			e := entries[mailaddr.Normalize(r.addr)]
			grp.certs = append(grp.certs, e.Cert)
			caps = append(caps, e.Capabilities)
		}
		if self != nil {
			grp.certs = append(grp.certs, self)
		}
		grp.alg = g.policy.ContentCipher(caps)
		grp.cipher = grp.alg.String()
		grp.protect = d.ProtectHeaders && !d.Sign // signed content is protected inside its signature
		p.copies = append(p.copies, grp)
	}
	p.cipher = p.copies[0].cipher
	p.content, p.signed = content, signed
	if err := p.copies[0].seal(p); err != nil {
		return p, transformError(err)
	}
	if len(p.copies) == 1 {
		p.content, p.signed = nil, nil
	}
	return p, nil
}

// recipientCert finds the certificate to encrypt to r: a user of this
// proxy's own has theirs in the keystore from the start, so mail between
// colleagues is encrypted from the first message; anyone else's comes from
// the certificate cache (harvested, imported, or from a directory). An own
// certificate that was revoked is passed over for what the cache holds, and
// named in the error when that is nothing.
func (s *session) recipientCert(r string) (*certcache.Entry, error) {
	g := s.gen
	cert, err := g.opts.Keys.EncryptionCert(r, g.opts.Time())
	if err != nil {
		return g.opts.Certs.Lookup(s.ctx, r)
	}
	var refused error
	if rc, ok := g.opts.Certs.(proxy.RecipientChecker); ok {
		refused = rc.CheckRecipient(s.ctx, r, cert)
	}
	if refused == nil {
		// The proxy reads whatever it encrypts for its own users.
		return &certcache.Entry{Cert: cert, Fingerprint: certcache.Fingerprint(cert), Capabilities: cms.DefaultCapabilities()}, nil
	}
	e, err := g.opts.Certs.Lookup(s.ctx, r)
	var cached, own *certcache.NoValidCertError
	switch {
	case !errors.Is(err, certcache.ErrNoCert):
		return e, err
	case errors.As(err, &cached) && errors.As(refused, &own):
		cached.Rejected = append(cached.Rejected, own.Rejected...)
		return nil, cached
	}
	return nil, refused
}

// seal encrypts p's content into c.msg, for c's certificates; content the
// proxy signed is canonical already, and is not read again.
func (c *msgCopy) seal(p *plan) error {
	opts := &smime.EncryptOptions{Cipher: c.alg, ProtectHeaders: c.protect}
	var msg []byte
	var err error
	if p.signed != nil {
		msg, err = p.signed.Encrypt(c.certs, opts)
	} else {
		msg, err = smime.Encrypt(p.content, c.certs, opts)
	}
	if err != nil {
		return err
	}
	c.msg = msg
	return nil
}

// signProtection is how Sign protects the header (RFC 9788) as policy
// decided: inside the encryption that follows, or inside the signature
// alone.
func signProtection(d policy.Decision) smime.HeaderProtection {
	switch {
	case !d.ProtectHeaders:
		return smime.NoHeaderProtection
	case d.Encrypt:
		return smime.ProtectCipher
	}
	return smime.ProtectClear
}

// keepField keeps every field, for a pass of EditHeader that only checks.
func keepField(_ string, raw []byte) []byte { return raw }

// selfAddress is the sender's own address to encrypt to: the From address
// when it is theirs, else (a foreign From sent unsigned) their first one.
// A sender who did not log in (require_auth: false) has none.
func selfAddress(from string, addrs []string) string {
	switch {
	case slices.Contains(addrs, from):
		return from
	case len(addrs) > 0:
		return addrs[0]
	}
	return ""
}

// editHeader reads the per-message overrides (when honoured) and removes
// what is not for the recipients: the override tags and header, and any
// Bcc field the client left for the server to remove. The Subject is
// rewritten only when a tag was taken out of it; every other byte stays.
func editHeader(raw []byte, h textproto.Header, overrides bool) (policy.Override, []byte, error) {
	var ov policy.Override
	subject, newSubject, decoded := "", "", false
	if overrides {
		subject, decoded = decodeSubject(h.Get("Subject"))
		ov, newSubject = policy.ParseOverride(subject, strings.Join(h.Values(policy.OverrideHeader), ","))
	}
	rewrite, rewritten := newSubject != subject, false
	if rewrite && !decoded && !sameWordMarkers(subject, newSubject) {
		// An undecodable subject goes as it came, so taking a tag out
		// must not join text into an encoded word: then the tag stays.
		rewrite = false
	}
	edited, err := smime.EditHeader(raw, func(name string, field []byte) []byte {
		switch {
		case name == "Bcc", overrides && strings.EqualFold(name, policy.OverrideHeader):
			return nil
		case name == "Subject" && rewrite && rewritten: // a second Subject field goes
			return nil
		case name == "Subject" && rewrite:
			rewritten = true
			return subjectField(newSubject, decoded)
		}
		return field
	})
	if err != nil {
		return ov, nil, &messageError{reason: malformedReason(err), err: err}
	}
	return ov, edited, nil
}

// bccGroups splits the envelope for encryption: one transaction for all
// when every recipient is in To or Cc (the one the client opened), else one
// for those who are and one for each who is not.
func bccGroups(rcpts []rcpt, visible map[string]bool) []msgCopy {
	var shown, hidden []rcpt
	for _, r := range rcpts {
		if visible[mailaddr.Normalize(r.addr)] {
			shown = append(shown, r)
		} else {
			hidden = append(hidden, r)
		}
	}
	if len(hidden) == 0 {
		return []msgCopy{{rcpts: rcpts, reuse: true}}
	}
	var groups []msgCopy
	if len(shown) > 0 {
		groups = append(groups, msgCopy{rcpts: shown})
	}
	for _, r := range hidden {
		groups = append(groups, msgCopy{rcpts: []rcpt{r}})
	}
	return groups
}

// send runs the plan's transactions, the main copy first. An error means
// the main copy was not accepted, and so nothing was sent. Each copy is
// dropped once sent, and each Bcc copy encrypted only then.
func (s *session) send(p *plan, txn *transaction) (*gosmtp.SMTPError, []failedCopy, error) {
	ok, err := s.transaction(p.copies[0], txn)
	p.copies[0].msg = nil
	if err != nil {
		return nil, nil, err
	}
	var failed []failedCopy
	for i := range p.copies[1:] {
		c := &p.copies[i+1]
		err := c.seal(p)
		if err == nil {
			_, err = s.transaction(*c, txn)
			c.msg = nil
		} else {
			err = transformError(err)
		}
		if err != nil {
			failed = append(failed, failedCopy{rcpts: c.rcpts, err: err})
		}
	}
	return ok, failed, nil
}

// transaction sends one copy: in the client's open transaction, or in one
// of its own (MAIL with the client's parameters, RCPT for its recipients).
func (s *session) transaction(c msgCopy, txn *transaction) (*gosmtp.SMTPError, error) {
	if s.up.broken {
		return nil, errSMTPUpstreamLost
	}
	if !c.reuse {
		if s.up.open {
			if err := s.up.reset(); err != nil {
				return nil, err
			}
		}
		var opts gosmtp.MailOptions
		if txn.opts != nil {
			opts = *txn.opts
		}
		opts.Size = int64(len(c.msg))
		if err := s.up.mail(txn.from, &opts); err != nil {
			return nil, err
		}
		for _, r := range c.rcpts {
			if err := s.up.rcpt(r.addr, r.opts); err != nil {
				return nil, err
			}
		}
	}
	return s.up.data(c.msg)
}

// bccFailed logs Bcc copies the upstream did not take and tells the sender.
func (s *session) bccFailed(p *plan, txn *transaction, failed []failedCopy) {
	var lines []string
	for _, f := range failed {
		r, _ := reply(f.err)
		for _, rc := range f.rcpts {
			lines = append(lines, fmt.Sprintf("  %s: %s", rc.addr, replyText(r)))
			s.log.Warn("a Bcc copy was not delivered", "msg_id", p.msgID, "rcpt", rc.addr, "err", f.err.Error())
		}
	}
	if txn.from == "" {
		s.log.Warn("no notice of the undelivered Bcc copies: the envelope sender is empty", "msg_id", p.msgID)
		return
	}
	notice := notice(s.gen.name, txn.from, p.msgID, lines, s.gen.opts.Time())
	own := &transaction{from: txn.from, opts: &gosmtp.MailOptions{UTF8: txn.opts != nil && txn.opts.UTF8}}
	if _, err := s.transaction(msgCopy{rcpts: []rcpt{{addr: txn.from}}, msg: notice}, own); err != nil {
		s.log.Warn("the notice of the undelivered Bcc copies was not sent", "msg_id", p.msgID, "err", err.Error())
	}
}

// notice is the plain message that tells a sender which Bcc recipients
// did not get their message.
func notice(host, sender, msgID string, lines []string, now time.Time) []byte {
	var id [8]byte
	_, _ = rand.Read(id[:])
	var body bytes.Buffer
	qp := quotedprintable.NewWriter(&body)
	fmt.Fprintf(qp, "Your message %s was sent to its other recipients, but the mail server\r\n", msgID)
	fmt.Fprintf(qp, "did not take the separately encrypted copies for these Bcc recipients,\r\n")
	fmt.Fprintf(qp, "who have not received it:\r\n\r\n%s\r\n\r\n", strings.Join(lines, "\r\n"))
	fmt.Fprintf(qp, "Send it to them again if they should have it.\r\n\r\n-- \r\nsmimeproxy on %s\r\n", host)
	qp.Close()
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\n", sender, sender)
	fmt.Fprintf(&b, "Subject: Not delivered to some Bcc recipients\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(id[:]), host)
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	b.Write(body.Bytes())
	return b.Bytes()
}

// fromAddress is the one address of the From field, normalized.
func fromAddress(h textproto.Header) (string, error) {
	values := h.Values("From")
	if len(values) != 1 {
		return "", fmt.Errorf("%d From fields", len(values))
	}
	list, err := mail.ParseAddressList(values[0])
	if err != nil {
		return "", err
	}
	if len(list) != 1 {
		return "", fmt.Errorf("%d addresses in From", len(list))
	}
	return mailaddr.Normalize(list[0].Address), nil
}

// headerRecipients are the addresses in To and Cc, normalized. A field that cannot be
// read counts as naming nobody, so that its recipients are treated as Bcc
// and revealed to no one.
func headerRecipients(h textproto.Header) map[string]bool {
	seen := map[string]bool{}
	for _, key := range []string{"To", "Cc"} {
		for _, v := range h.Values(key) {
			list, err := mail.ParseAddressList(v)
			if err != nil {
				continue
			}
			for _, a := range list {
				seen[mailaddr.Normalize(a.Address)] = true
			}
		}
	}
	return seen
}

// certReason says why a recipient has no usable certificate, in the words
// of the certificate cache: "no certificate", or each stored one's reason.
func certReason(err error) string {
	var nv *certcache.NoValidCertError
	if !errors.As(err, &nv) || len(nv.Rejected) == 0 {
		return "no certificate"
	}
	reasons := make([]string, 0, len(nv.Rejected))
	for _, r := range nv.Rejected {
		if !slices.Contains(reasons, string(r.Reason)) {
			reasons = append(reasons, string(r.Reason))
		}
	}
	return "certificate " + strings.Join(reasons, ", ")
}

// transformError classifies a failure of smime.Sign or smime.Encrypt: a
// message it cannot read, or that exceeds its limits, is the client's to
// fix; anything else is ours.
func transformError(err error) error {
	if errors.Is(err, smime.ErrMalformed) || errors.Is(err, smime.ErrLimit) {
		return &messageError{reason: malformedReason(err), err: err}
	}
	return fmt.Errorf("transform: %w", err)
}

// malformedReason is what smime says is wrong, without its package prefix.
func malformedReason(err error) string {
	if le, ok := errors.AsType[*smime.LimitError](err); ok {
		return le.Reason()
	}
	reason := strings.TrimPrefix(err.Error(), smime.ErrMalformed.Error())
	reason = strings.TrimPrefix(reason, ": ")
	if reason == "" {
		return "it is not valid MIME"
	}
	return reason
}

// decodeSubject decodes RFC 2047 encoded words. A subject it cannot decode
// (an unknown charset) comes back as it is, with ok false.
func decodeSubject(v string) (s string, ok bool) {
	d, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		return v, false
	}
	return d, true
}

// sameWordMarkers reports whether a and b hold as many encoded-word
// openings and closings, so that b makes no encoded word a did not have.
func sameWordMarkers(a, b string) bool {
	return strings.Count(a, "=?") == strings.Count(b, "=?") && strings.Count(a, "?=") == strings.Count(b, "?=")
}

// subjectField writes a Subject field for s, folded at spaces to keep lines
// short. A decoded subject goes as it is when it is printable ASCII that
// cannot be mistaken for an encoded word, else as UTF-8 encoded words; one
// that could not be decoded goes as it came, encoded words and all. Either
// way a CR or LF in s cannot start a field of its own.
func subjectField(s string, decoded bool) []byte {
	words := strings.Fields(s)
	if decoded && needsEncoding(s) || strings.ContainsAny(s, "\r\n\x00") {
		words = encodedWords(s)
	}
	b := []byte("Subject:")
	line := len(b)
	for _, w := range words {
		if line > len("Subject:") && line+1+len(w) > 78 {
			b = append(b, "\r\n"...)
			line = 0
		}
		b = append(b, ' ')
		b = append(b, w...)
		line += 1 + len(w)
	}
	return append(b, "\r\n"...)
}

// encodedWords writes s as UTF-8 "Q" encoded words (RFC 2047) of at most 75
// characters each, split between characters. Unlike mime.QEncoding it
// encodes printable ASCII too, which may hold "=?" that a reader would
// otherwise take for the start of an encoded word.
func encodedWords(s string) []string {
	const prefix, suffix, hex = "=?utf-8?q?", "?=", "0123456789ABCDEF"
	var words []string
	w := []byte(prefix)
	for len(s) > 0 {
		_, n := utf8.DecodeRuneInString(s)
		var enc []byte
		for _, c := range []byte(s[:n]) {
			switch {
			case c == ' ':
				enc = append(enc, '_')
			case c > ' ' && c <= '~' && c != '=' && c != '?' && c != '_':
				enc = append(enc, c)
			default:
				enc = append(enc, '=', hex[c>>4], hex[c&15])
			}
		}
		if len(w)+len(enc)+len(suffix) > 75 && len(w) > len(prefix) {
			words = append(words, string(w)+suffix)
			w = []byte(prefix)
		}
		w = append(w, enc...)
		s = s[n:]
	}
	return append(words, string(w)+suffix)
}

func needsEncoding(s string) bool {
	return strings.Contains(s, "=?") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e })
}

// logValue keeps a header value short and on one line for the log.
func logValue(v string) string {
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, v)
	if len(v) > 200 {
		v = v[:200]
	}
	return v
}
