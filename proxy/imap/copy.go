package imap

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/certcache"
	"smimeproxy/internal/mailaddr"
	"smimeproxy/policy"
	"smimeproxy/smime"
)

// A copy the user keeps (Sent, Drafts) is stored as a message whose content
// is the message the client stored, whole, as a message/rfc822 entity marked
// x-smimeproxy=copy: signed (opaque) when policy signs what is sent, and
// encrypted to the user. Its header fields (From, To, Subject, Date) stay
// outside, as on any encrypted mail, so that the server can still list it.
// Reading it back through the proxy unwraps the copy, so the client gets the
// bytes it stored, under the proxy's verdict field.

// copyParam marks the content of a protected copy.
const copyParam = "x-smimeproxy"

// copyError is an APPEND the relay refuses, with the reason for the client.
type copyError struct {
	answer string // after NO
	err    error
}

func (e *copyError) Error() string { return "imap: protecting a copy: " + e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// protectCopy protects one message stored in the user's Sent or Drafts
// mailbox. A copy of what was sent is signed and encrypted as the SMTP
// policy decides for the same message, encrypted to the user alone; a draft
// is encrypted to the user. When that fails, the message is stored as the
// client sent it only if policy allows it in plain text; otherwise the
// APPEND is refused.
func (r *relay) protectCopy(msg []byte, which copyKind) ([]byte, error) {
	o := r.s.opts
	h, herr := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if herr == nil {
		// The MIME walker the SMTP proxy reads messages with is stricter.
		_, herr = smime.EditHeader(msg, func(_ string, raw []byte) []byte { return raw })
	}
	if herr == nil && smime.Classify(h) != smime.Plain {
		return msg, nil // the client's own S/MIME (or PGP): as it is
	}
	addrs := o.Policy.Addresses(r.user)
	from := ""
	if herr == nil {
		if list, err := mail.ParseAddressList(h.Get("From")); err == nil && len(list) == 1 {
			from = mailaddr.Normalize(list[0].Address)
		}
	}
	if from == "" && len(addrs) > 0 {
		from = addrs[0]
	}
	rcpts := recipients(h)
	noCert := map[string]string{}
	for _, rc := range rcpts {
		if _, err := o.Certs.Lookup(r.s.ctx, rc); err != nil {
			if !errors.Is(err, certcache.ErrNoCert) {
				var nv *certcache.NoValidCertError
				if !errors.As(err, &nv) {
					return nil, &copyError{answer: "[UNAVAILABLE] The proxy cannot look certificates up now; try again later", err: err}
				}
			}
			noCert[rc] = "no certificate"
		}
	}
	d := o.Policy.Decide(&policy.Message{User: r.user, From: from, Addresses: addrs, Unverified: !r.verified,
		Rcpts: rcpts, NoCert: noCert})
	plainOK := d.Action != policy.Refuse && !d.Encrypt
	sign := which == copySent && d.Action == policy.Send && d.Sign
	fail := func(answer string, err error) ([]byte, error) {
		if plainOK {
			r.log.Warn("IMAP copy stored as the client sent it", "mailbox", which.String(), "err", err)
			return msg, nil
		}
		return nil, &copyError{answer: answer, err: err}
	}
	if herr != nil {
		return fail("[CANNOT] The message cannot be read as mail; it was not stored", herr)
	}
	if which == copySent && d.Action == policy.Pass {
		return msg, nil
	}
	now := o.Time()
	content := wrapCopy(msg)
	if sign {
		sg, err := o.Keys.Signer(from, now)
		if err != nil {
			return fail("[UNAVAILABLE] Your key cannot sign the copy now; try again later", err)
		}
		id := &smime.Identity{Cert: sg.Cert, Key: sg.Key, Chain: sg.Chain, EncryptionCert: sg.EncryptionCert}
		if content, err = smime.Sign(content, id, &smime.SignOptions{Opaque: true, Time: now}); err != nil {
			return fail("[CANNOT] The copy cannot be signed: "+reasonOf(err), err)
		}
	}
	self := from
	if !contains(addrs, from) && len(addrs) > 0 {
		self = addrs[0]
	}
	cert, err := o.Keys.EncryptionCert(self, now)
	if err != nil {
		return fail("[UNAVAILABLE] There is no certificate of yours to encrypt the copy to", err)
	}
	out, err := smime.Encrypt(content, []*x509.Certificate{cert}, nil)
	if err != nil {
		return fail("[CANNOT] The copy cannot be encrypted: "+reasonOf(err), err)
	}
	r.log.Info("IMAP copy protected", "mailbox", which.String(), "action", copyAction(sign), "bytes", len(msg))
	return out, nil
}

func copyAction(sign bool) string {
	if sign {
		return "sign_encrypt"
	}
	return "encrypt"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// reasonOf says what is wrong with a message in a few words, for the client.
func reasonOf(err error) string {
	if errors.Is(err, smime.ErrMalformed) {
		return "it is not readable MIME"
	}
	return "it exceeds what the proxy reads"
}

// recipients are the addresses of a header's To, Cc and Bcc fields,
// normalised.
func recipients(h textproto.Header) []string {
	var out []string
	for _, k := range []string{"To", "Cc", "Bcc"} {
		list, err := mail.ParseAddressList(h.Get(k))
		if err != nil {
			continue
		}
		for _, a := range list {
			out = append(out, mailaddr.Normalize(a.Address))
		}
	}
	return out
}

// wrapCopy makes the content to protect: msg's fields but its content ones,
// then msg whole as a message/rfc822 entity marked as a copy.
func wrapCopy(msg []byte) []byte {
	fields, _ := splitHeader(msg)
	var b bytes.Buffer
	b.Grow(len(msg) + 1024)
	for _, f := range fields {
		name, _, _ := bytes.Cut(f, []byte(":"))
		n := strings.ToLower(strings.TrimSpace(string(name)))
		if strings.HasPrefix(n, "content-") || n == "mime-version" {
			continue
		}
		b.Write(f)
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: message/rfc822; " + copyParam + "=copy\r\n\r\n")
	b.Write(msg)
	return b.Bytes()
}

// unwrapCopy returns the message a protected copy holds, when s is one: a
// message/rfc822 marked as a copy that was decrypted or whose signature
// verified. Anyone can make such a message, but they chose its outer
// fields and content anyway; the verdict field stays the proxy's.
func unwrapCopy(s *smime.Opened) ([]byte, bool) {
	if !s.Decrypted && !validSignature(s) {
		return nil, false
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(s.Message)))
	if err != nil {
		return nil, false
	}
	t, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || t != "message/rfc822" || params[copyParam] != "copy" {
		return nil, false
	}
	_, body := splitHeader(s.Message)
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, newlineSkipper{bytes.NewReader(body)}))
		return b, err == nil
	case "quoted-printable":
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		return b, err == nil
	}
	return body, true
}

func validSignature(s *smime.Opened) bool {
	for _, sig := range s.Signatures {
		if sig.Status == smime.StatusValid {
			return true
		}
	}
	return false
}

// newlineSkipper drops line breaks from base64 text.
type newlineSkipper struct{ r io.Reader }

func (n newlineSkipper) Read(p []byte) (int, error) {
	c, err := n.r.Read(p)
	out := p[:0]
	for _, b := range p[:c] {
		if b != '\r' && b != '\n' {
			out = append(out, b)
		}
	}
	return len(out), err
}
