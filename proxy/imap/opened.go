package imap

import (
	"bufio"
	"bytes"
	"errors"
	"net/mail"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/cms"
	"smimeproxy/internal/mailaddr"
	"smimeproxy/keystore"
	"smimeproxy/proxy"
	"smimeproxy/proxy/imap/imapmsg"
	"smimeproxy/smime"
)

// msgKind says what the relay does with a message's content.
type msgKind uint8

const (
	// kindPlain is passed on as the upstream sends it.
	kindPlain msgKind = iota
	// kindSMIME is opened: decrypted, verified, unwrapped, and served with
	// the proxy's Authentication-Results field.
	kindSMIME
	// kindForged is plain but carries an Authentication-Results field that
	// names this proxy, which no one else may write: it is served without.
	kindForged
)

// classifyFields are the header fields the kind is read from.
const classifyFields = "CONTENT-TYPE CONTENT-DISPOSITION AUTHENTICATION-RESULTS"

// classifyHeader says what a message is from the classifying fields, as
// the upstream returned them. Anything unreadable is plain, and so passed on
// untouched, unless it claims to be this proxy's verdict.
func classifyHeader(b []byte, authserv string) msgKind {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	if err == nil {
		switch smime.Classify(h) {
		case smime.Encrypted, smime.Signed, smime.SignedOpaque:
			return kindSMIME
		}
	}
	if len(dropOwnResults(b, authserv)) != len(b) {
		return kindForged
	}
	return kindPlain
}

// opened is a message as the client is served it: the bytes, and their
// description, made once.
type opened struct {
	raw []byte

	once sync.Once
	desc *imapmsg.Message
}

func (o *opened) size() int64 { return int64(len(o.raw)) }

// describe parses the served message once, for every item asked of it.
func (o *opened) describe() *imapmsg.Message {
	o.once.Do(func() { o.desc = imapmsg.Parse(o.raw, nil) })
	return o.desc
}

// Why no key was tried, in the words of the verdict field.
const (
	whyLocked     = "the keystore is locked"
	whyUnverified = "the login's user name is unchecked (a token login; see imap.trust_token_names)"
)

// decryptionKeys are the keys of the addresses the logged-in user may read
// for, and no one else's. why is set when no key can be used now: the
// keystore is locked, or the user is not known for sure.
func (r *relay) decryptionKeys() (keys []userKey, why string) {
	o := r.s.opts
	if !r.verified {
		return nil, whyUnverified
	}
	if o.Keys.Locked() {
		return nil, whyLocked
	}
	var broken []string
	for _, addr := range o.Policy.Addresses(r.user) {
		kps, err := o.Keys.DecryptionKeys(addr)
		switch {
		case errors.Is(err, keystore.ErrLocked):
			return nil, whyLocked
		case errors.Is(err, keystore.ErrBrokenKey):
			r.log.Error("IMAP cannot use a key of the user's", "addr", addr, "err", err)
			broken = append(broken, addr)
			continue
		case err != nil:
			continue // no identity for this address
		}
		for _, kp := range kps {
			keys = append(keys, userKey{addr: addr, key: smime.KeyPair{Cert: kp.Cert, Key: kp.Key}})
		}
	}
	if len(keys) == 0 && len(broken) > 0 {
		return nil, "the key of " + strings.Join(broken, ", ") + " cannot be opened (the proxy's log says why)"
	}
	return keys, ""
}

// opener opens the messages of one command: the user's keys and the trust
// pools are read once for all of them.
type opener struct {
	r      *relay
	keys   []userKey
	pairs  []smime.KeyPair
	noKeys string // why no key can be used now, if so
	verify smime.VerifyOptions
	auth   string
}

func (r *relay) newOpener() *opener {
	keys, why := r.decryptionKeys()
	o := &opener{
		r: r, keys: keys, noKeys: why, auth: authservID(r.s.opts.Config.ServerName),
		verify: smime.VerifyOptions{
			Roots:         r.s.opts.Certs.Roots(),
			Intermediates: r.s.opts.Certs.Intermediates(),
			AllowSHA1:     r.s.opts.Config.Trust.AllowSHA1,
		},
	}
	for _, k := range keys {
		o.pairs = append(o.pairs, k.key)
	}
	return o
}

// open makes what the client is served for one message, and caches it
// unless the keystore was locked (the next FETCH may then decrypt it).
func (o *opener) open(key cacheKey, raw []byte, kind msgKind) *opened {
	if kind == kindForged {
		m := &opened{raw: dropOwnResults(raw, o.auth)}
		o.r.log.Info("IMAP message served without a forged verdict field", "uid", key.uid, "action", "pass", "bytes", len(raw))
		o.r.s.p.cache.put(key, m)
		return m
	}
	start := time.Now()
	s, err := smime.Open(raw, &smime.OpenOptions{Keys: o.pairs, Verify: o.verify})
	var served []byte
	action, result := "verify", "error"
	metrics := o.r.s.opts.Metrics
	if err != nil {
		// Not even an RFC 5322 message: served as it is, saying so.
		v := (&smime.Opened{}).AuthenticationResults(o.auth) + " " + comment("not a readable message")
		served = serveOpened(foldField(authResultsField, v), raw, o.auth)
		metrics.Opened.WithLabelValues(action, result).Inc()
	} else {
		// A signer whose certificate was revoked fails, and is not
		// harvested, before anything is said of the signatures.
		var harvest []bool
		if c, ok := o.r.s.opts.Certs.(proxy.SignatureChecker); ok && len(s.Signatures) > 0 {
			harvest = c.CheckSignatures(o.r.s.ctx, s.Signatures)
		}
		field := foldField(authResultsField, authResults(o.auth, s, o.keys, o.noKeys))
		msg := s.Message
		if inner, ok := unwrapCopy(s); ok {
			msg = inner
		}
		served = serveOpened(field, msg, o.auth)
		action, result = o.record(s, harvest)
		served = o.verdict(served, s)
	}
	m := &opened{raw: served}
	if o.noKeys != whyLocked {
		o.r.s.p.cache.put(key, m)
	}
	attrs := []any{"uid", key.uid, "action", action, "result", result, "bytes", len(raw),
		"dur_ms", time.Since(start).Milliseconds()}
	if s != nil && s.Encrypted && len(s.Recipients) > 0 {
		attrs = append(attrs, "cipher", s.Cipher.String())
	}
	if s != nil && len(s.Signatures) > 0 {
		statuses := make([]string, len(s.Signatures))
		for i, sig := range s.Signatures {
			statuses[i] = sig.Status.String()
		}
		attrs = append(attrs, "signatures", strings.Join(statuses, ","))
	}
	o.r.log.Info("S/MIME message opened", attrs...)
	return m
}

// verdict puts the word for what Open found before the Subject of the
// served message, and the banner at its top when configured; a message the
// user's own client signed or encrypted is left as it is.
func (o *opener) verdict(served []byte, s *smime.Opened) []byte {
	v := o.r.s.opts.Config.IMAP.Verdict
	st := stateOf(s)
	word := verdictWord(v, st)
	if word == "" {
		return served
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(served)))
	if err == nil && ownMessage(st, fromAddresses(h), o.r.s.opts.Policy.Addresses(o.r.user)) {
		return served
	}
	return withVerdict(served, word, verdictReason(word, s), v.Banner)
}

// fromAddresses are the addresses of a header's From field, normalised.
func fromAddresses(h textproto.Header) []string {
	list, err := mail.ParseAddressList(h.Get("From"))
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range list {
		out = append(out, mailaddr.Normalize(a.Address))
	}
	return out
}

// record counts what Open found and harvests the certificates of signers
// whose signature verified and whose chain validated (and, when harvest is
// given, that it allows: not revoked). It returns the action and result for
// the log line.
func (o *opener) record(s *smime.Opened, harvest []bool) (action, result string) {
	metrics := o.r.s.opts.Metrics
	action, result = "verify", "none"
	if s.Encrypted {
		action, result = "decrypt", decryptResult(s, o.noKeys)
		metrics.Opened.WithLabelValues("decrypt", result).Inc()
	}
	for i, sig := range s.Signatures {
		res := verifyResult(sig.Status)
		metrics.Opened.WithLabelValues("verify", res).Inc()
		if !s.Encrypted && i == 0 {
			result = res
		}
		if sig.Status != smime.StatusValid || sig.Signer == nil || harvest != nil && (i >= len(harvest) || !harvest[i]) {
			continue
		}
		if err := o.r.s.opts.Certs.Harvest(sig.Signer, sig.EncryptionCert, sig.SigningTime, sig.Capabilities); err != nil {
			o.r.log.Warn("harvesting a signer's certificate failed", "err", err)
			continue
		}
		metrics.Harvested.Inc()
	}
	return action, result
}

func decryptResult(o *smime.Opened, noKeys string) string {
	var unsup *cms.UnsupportedError
	switch {
	case o.Decrypted:
		return "ok"
	case noKeys == whyLocked:
		return "locked"
	case noKeys == whyUnverified:
		return "unverified_login"
	case errors.Is(o.DecryptErr, cms.ErrNoRecipient):
		return "no_key"
	case errors.Is(o.DecryptErr, cms.ErrDecrypt):
		return "failed"
	case errors.As(o.DecryptErr, &unsup):
		return "unsupported"
	}
	return "malformed"
}

func verifyResult(st smime.Status) string {
	if st == smime.StatusValid {
		return "ok"
	}
	return strings.ReplaceAll(st.String(), "-", "_")
}

// authservID names this proxy in the fields it adds: the configured
// server_name, else the host name.
func authservID(serverName string) string {
	if serverName != "" {
		return serverName
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}
