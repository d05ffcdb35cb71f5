package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/cms"
)

// maxLayers bounds how many S/MIME layers Open peels.
const maxLayers = 8

// KeyPair is one of the reader's decryption keys: a crypto.Decrypter for RSA,
// an ecdh.KeyExchanger or *ecdsa.PrivateKey for EC.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.PrivateKey
}

// OpenOptions tune Open; nil means no keys, the default verification and
// DefaultLimits.
type OpenOptions struct {
	Keys   []KeyPair
	Verify VerifyOptions
	Limits *Limits
}

// Opened is what Open found and what the reader should see.
type Opened struct {
	// Message is the message to serve: the original header block with its
	// Content-* (and MIME-Version) fields replaced by those of the innermost
	// entity to show, then that entity's body. Under header protection the
	// protected fields take the place of the outer ones of the same names
	// (outer fields of other names stay), and the Legacy Display Element is
	// left out of an encrypted payload that is shown unwrapped (one inside a
	// multipart/signed kept for the client stays: taking it out would break
	// the signature). It is the input itself when nothing changed.
	Message []byte

	Encrypted  bool  // an encrypted layer was met
	Decrypted  bool  // every encrypted layer met was opened
	DecryptErr error // why an encrypted layer stayed closed; wraps cms.ErrNoRecipient when no key fits
	Recipients []cms.Recipient
	Cipher     cms.Cipher // of the outermost encrypted layer

	// Signatures holds every signature layer met, outermost first.
	Signatures []*Signature

	// HeaderProtection is the innermost entity's hp Content-Type parameter
	// ("cipher" or "clear", RFC 9788), "v1" for the older
	// protected-headers="v1", or empty when it carries none (or an hp value
	// RFC 9788 does not define). The top level of a message is never the
	// innermost entity: its own hp says nothing.
	HeaderProtection string
	// ProtectedHeaders are the header fields that the innermost entity
	// carries when HeaderProtection is set, other than Content-*,
	// MIME-Version, HP-Outer and the fields that only the systems a message
	// passes through write (Received, Authentication-Results, ...).
	ProtectedHeaders textproto.Header

	// Limit is the first of the Limits the message (or a layer inside it)
	// exceeded; nil when none. Open stops looking where the limit is met and
	// serves what it has, as it is: a header block over the limit leaves
	// the message unopened, a multipart/signed with too many parts is
	// reported as not verified.
	Limit *LimitError
}

// Open peels the S/MIME layers of msg from the outside: it decrypts enveloped
// layers with the first key that fits, verifies signatures, unwraps opaque
// signed-data so that any client can show it, and keeps multipart/signed as
// it is (clients without S/MIME show its first part). It returns an error
// only when msg cannot be read as an RFC 5322 message at all; every S/MIME
// failure, and a message past opts.Limits, is reported in Opened, and the
// message is then served as it is.
func Open(msg []byte, opts *OpenOptions) (*Opened, error) {
	if opts == nil {
		opts = &OpenOptions{}
	}
	lim := opts.Limits.orDefault()
	o := &Opened{Message: msg}
	top, err := parseEntity(msg, lim.MaxHeaderBytes)
	if le, ok := errors.AsType[*LimitError](err); ok {
		o.Limit = le
		return o, nil
	} else if err != nil {
		return nil, err
	}
	w := &opener{
		opts: opts,
		lim:  lim,
		v:    verifier{opts: &opts.Verify, from: fromAddresses(top.header), now: time.Now()},
		o:    o,
	}
	outer := w.layer(msg, top)
	served := w.peel(outer)
	pr := w.headerProtection(top, served)
	shown := served.e
	if pr != nil && pr.stripped != nil {
		shown = pr.stripped
	}
	if shown != top || pr != nil && len(pr.fields) > 0 {
		o.Message = serve(top, shown, pr)
	}
	return o, nil
}

// Verify checks every signature layer of msg, without decrypting.
func Verify(msg []byte, opts *VerifyOptions) ([]*Signature, error) {
	o := &OpenOptions{}
	if opts != nil {
		o.Verify = *opts
	}
	opened, err := Open(msg, o)
	if err != nil {
		return nil, err
	}
	return opened.Signatures, nil
}

type opener struct {
	opts *OpenOptions
	lim  Limits
	v    verifier
	o    *Opened
	// vouched: an enclosing signature verified and chained, so the From
	// address is that signer's, not the inner ones'.
	vouched bool
}

// layer is an entity being opened: e, read from buf, where the walker found
// it as part.
type layer struct {
	buf  []byte
	part *Part
	e    *entity
}

// layer walks buf, whose entity is e, and notes the first limit it meets.
func (w *opener) layer(buf []byte, e *entity) layer {
	t := Walk(buf, &w.lim)
	if w.o.Limit == nil {
		w.o.Limit = t.Limit
	}
	return layer{buf: buf, part: t.Root, e: e}
}

// peel walks the layers from top and returns the one to serve.
func (w *opener) peel(top layer) layer {
	served, cur := top, top
	for range maxLayers {
		switch Classify(cur.e.header) {
		case Signed, PGPSigned:
			inner, ok := w.detached(cur)
			if !ok || !Classify(inner.e.header).SMIME() {
				return served
			}
			// The signed content is itself S/MIME: what it holds is shown
			// instead, so this layer can no longer be kept.
			cur = inner
		case SignedOpaque, Encrypted, CertsOnly:
			inner, ok := w.pkcs7(cur)
			if !ok {
				return served
			}
			served, cur = inner, inner
		default:
			return served
		}
	}
	return served
}

// signedParts returns the two body parts of the multipart/signed l, or
// false when the walker found fewer.
func signedParts(l layer) (*Part, *Part, bool) {
	if l.part.Kind != Multipart || len(l.part.Children) < 2 {
		return nil, nil, false
	}
	return l.part.Children[0], l.part.Children[1], true
}

// detached verifies a multipart/signed layer (RFC 1847, RFC 8551 3.5.3) and
// returns its first part; PGP signatures are not checked, only stepped over.
func (w *opener) detached(l layer) (layer, bool) {
	kind := Classify(l.e.header)
	first, sig, ok := signedParts(l)
	if !ok {
		if kind == Signed {
			reason := "malformed multipart/signed"
			if w.o.Limit != nil {
				reason = "not verified: " + w.o.Limit.Reason()
			}
			w.o.Signatures = append(w.o.Signatures, &Signature{Status: StatusError, Reason: reason})
		}
		return layer{}, false
	}
	signed := l.buf[first.Start:first.rfcEnd]
	if kind == Signed {
		w.verifyDetached(signed, l.buf[sig.Start:sig.rfcEnd])
	}
	inner, err := parseEntity(signed, w.lim.MaxHeaderBytes)
	if err != nil {
		return layer{}, false
	}
	return layer{buf: l.buf, part: first, e: inner}, true
}

func (w *opener) verifyDetached(signed, sigPart []byte) {
	fail := func(st Status, reason string) {
		w.o.Signatures = append(w.o.Signatures, &Signature{Status: st, Reason: reason})
	}
	pe, err := parseEntity(sigPart, w.lim.MaxHeaderBytes)
	if err != nil {
		fail(StatusError, "malformed signature part")
		return
	}
	if t, _ := mediaType(pe.header); t != "application/pkcs7-signature" && t != "application/x-pkcs7-signature" {
		fail(StatusError, "signature part is "+t)
		return
	}
	der, err := decodeBody(pe)
	if err != nil {
		fail(StatusError, "malformed signature part")
		return
	}
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		fail(cryptoStatus(err))
		return
	}
	// The signature covers the canonical form (RFC 8551 3.1.1), whatever line
	// breaks the message was stored with.
	content := toCRLF(signed)
	mismatch := sd.Content != nil && !bytes.Equal(sd.Content, content)
	w.signers(sd, content, mismatch)
}

// signers checks every signer of one layer and records the results.
func (w *opener) signers(sd *cms.SignedData, content []byte, mismatch bool) {
	if len(sd.Signers) == 0 {
		w.o.Signatures = append(w.o.Signatures, &Signature{Status: StatusError, Reason: "no signer", Certificates: sd.Certificates})
		return
	}
	vouches := false
	for _, s := range sd.Signers {
		var sig *Signature
		if mismatch {
			// A detached signature that carries other content must never
			// pass for the content shown beside it.
			sig = &Signature{Status: StatusInvalid, Reason: "signature carries content other than the signed part",
				Certificates: sd.Certificates, Capabilities: s.Capabilities, SigningTime: s.SigningTime, Hash: s.Hash,
				Signer: sd.FindCertificate(s, w.v.opts.Certificates)}
		} else {
			sig = w.v.check(sd, s, content, !w.vouched)
		}
		vouches = vouches || sig.Status == StatusValid || sig.Status == StatusWeak
		w.o.Signatures = append(w.o.Signatures, sig)
	}
	w.vouched = w.vouched || vouches
}

// pkcs7 opens an application/pkcs7-mime layer by what its content is, not by
// what its label says, and returns the entity inside.
func (w *opener) pkcs7(l layer) (layer, bool) {
	kind := Classify(l.e.header)
	_, params := mediaType(l.e.header)
	declared := params["smime-type"] != "" // sniffed ones may be anything
	der, err := decodeBody(l.e)
	if err != nil {
		if kind == Encrypted && declared {
			w.o.Encrypted = true
			w.o.DecryptErr = fmt.Errorf("smime: decrypt: %w", err)
		}
		return layer{}, false
	}
	t, err := cms.Identify(der)
	if err != nil {
		t = cms.TypeOther
	}
	switch t {
	case cms.TypeSignedData:
		sd, err := cms.ParseSignedData(der)
		if err != nil {
			if kind == SignedOpaque {
				st, reason := cryptoStatus(err)
				w.o.Signatures = append(w.o.Signatures, &Signature{Status: st, Reason: reason})
			}
			return layer{}, false
		}
		if len(sd.Signers) == 0 || sd.Content == nil {
			return layer{}, false // certs-only, or a detached signature on its own
		}
		w.signers(sd, nil, false)
		return w.layer(sd.Content, parseContent(sd.Content, w.lim.MaxHeaderBytes)), true
	case cms.TypeEnvelopedData, cms.TypeAuthEnvelopedData:
		return w.decrypt(der)
	default:
		if kind == Encrypted && declared {
			w.o.Encrypted = true
			w.o.DecryptErr = errors.New("smime: decrypt: content is not an enveloped CMS message")
		}
		return layer{}, false
	}
}

func (w *opener) decrypt(der []byte) (layer, bool) {
	first := !w.o.Encrypted
	w.o.Encrypted = true
	env, err := cms.ParseEnvelope(der)
	if err != nil {
		w.o.Decrypted = false
		w.o.DecryptErr = fmt.Errorf("smime: decrypt: %w", err)
		return layer{}, false
	}
	if first {
		w.o.Recipients, w.o.Cipher = env.Recipients, env.Cipher
	}
	var firstErr error
	for _, kp := range w.opts.Keys {
		content, err := env.Decrypt(kp.Cert, kp.Key)
		if err == nil {
			w.o.Decrypted = true
			w.o.DecryptErr = nil
			return w.layer(content, parseContent(content, w.lim.MaxHeaderBytes)), true
		}
		if firstErr == nil && !errors.Is(err, cms.ErrNoRecipient) {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = cms.ErrNoRecipient
	}
	w.o.Decrypted = false
	w.o.DecryptErr = fmt.Errorf("smime: decrypt: %w", firstErr)
	return layer{}, false
}

// serve builds the served message: top's header block, byte for byte, with
// its content fields replaced by inner's and the fields pr promotes in place
// of those of their names, then inner's body, in top's line break
// convention (as it is when inner is top itself).
func serve(top, inner *entity, pr *promotion) []byte {
	crlf := usesCRLF(top.fields)
	conv := func(b []byte) []byte {
		if crlf {
			return toCRLF(b)
		}
		return toLF(b)
	}
	eol := "\n"
	if crlf {
		eol = "\r\n"
	}
	var innerFields [][]byte
	innerMIMEVer := false
	for _, f := range inner.fields {
		if isContentField(f.name) || f.name == "Mime-Version" {
			raw := conv(f.raw)
			if !bytes.HasSuffix(raw, []byte("\n")) {
				raw = append(raw[:len(raw):len(raw)], eol...)
			}
			innerFields = append(innerFields, raw)
			innerMIMEVer = innerMIMEVer || f.name == "Mime-Version"
		}
	}
	var promoted [][]byte
	if pr != nil {
		for _, f := range pr.fields {
			raw := conv(f.raw)
			if !bytes.HasSuffix(raw, []byte("\n")) {
				raw = append(raw[:len(raw):len(raw)], eol...)
			}
			promoted = append(promoted, raw)
		}
	}
	var b bytes.Buffer
	b.Grow(len(inner.body) + 4096)
	inserted, mimeVer, promotedIn := false, innerMIMEVer, false
	for _, f := range top.fields {
		if pr != nil && pr.replace[f.name] {
			if !promotedIn {
				for _, r := range promoted {
					b.Write(r)
				}
				promotedIn = true
			}
			continue
		}
		replaced := isContentField(f.name) || f.name == "Mime-Version" && innerMIMEVer
		if !replaced {
			b.Write(f.raw)
			if !bytes.HasSuffix(f.raw, []byte("\n")) {
				b.WriteString(eol)
			}
			mimeVer = mimeVer || f.name == "Mime-Version"
			continue
		}
		if !inserted {
			for _, r := range innerFields {
				b.Write(r)
			}
			inserted = true
		}
	}
	if !promotedIn {
		for _, r := range promoted {
			b.Write(r)
		}
	}
	if !mimeVer {
		b.WriteString("MIME-Version: 1.0" + eol)
	}
	if !inserted {
		for _, r := range innerFields {
			b.Write(r)
		}
	}
	b.WriteString(eol)
	body := inner.body // a multipart/signed kept as it came: not a byte of it changes
	if inner != top {
		body = conv(inner.body)
	}
	b.Write(body)
	// Content that ends in a lone CR (NSS signs such HTML) would end the
	// message inside a line break, which IMAP servers count one byte short.
	if crlf && bytes.HasSuffix(body, []byte("\r")) {
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// fromAddresses returns the addresses in h's From field, lower case.
func fromAddresses(h textproto.Header) []string {
	v := h.Get("From")
	if v == "" {
		return nil
	}
	var out []string
	if list, err := mail.ParseAddressList(v); err == nil {
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
		return out
	}
	// Unparseable (often an undecodable display name): take the angle-addr.
	if i, j := strings.LastIndexByte(v, '<'), strings.LastIndexByte(v, '>'); i >= 0 && j > i {
		return []string{strings.ToLower(strings.TrimSpace(v[i+1 : j]))}
	}
	if a := strings.TrimSpace(v); strings.Contains(a, "@") && !strings.ContainsAny(a, " \t,") {
		return []string{strings.ToLower(a)}
	}
	return nil
}
