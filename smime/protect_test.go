package smime_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/smime"
)

// protectWays are the ways Sign and Encrypt protect a header, as the SMTP
// proxy uses them.
var protectWays = []struct {
	name    string
	encrypt bool
	make    func(t *testing.T, p *pki, msg []byte) []byte
}{
	{"encrypted", true, func(t *testing.T, p *pki, msg []byte) []byte {
		return mustEncrypt(t, msg, p.bob, &smime.EncryptOptions{ProtectHeaders: true})
	}},
	{"signed detached, encrypted", true, func(t *testing.T, p *pki, msg []byte) []byte {
		return mustEncrypt(t, mustSign(t, msg, p.alice, &smime.SignOptions{HeaderProtection: smime.ProtectCipher}), p.bob, nil)
	}},
	{"signed opaque, encrypted", true, func(t *testing.T, p *pki, msg []byte) []byte {
		return mustEncrypt(t, mustSign(t, msg, p.alice, &smime.SignOptions{Opaque: true, HeaderProtection: smime.ProtectCipher}), p.bob, nil)
	}},
	{"signed detached", false, func(t *testing.T, p *pki, msg []byte) []byte {
		return mustSign(t, msg, p.alice, &smime.SignOptions{HeaderProtection: smime.ProtectClear})
	}},
	{"signed opaque", false, func(t *testing.T, p *pki, msg []byte) []byte {
		return mustSign(t, msg, p.alice, &smime.SignOptions{Opaque: true, HeaderProtection: smime.ProtectClear})
	}},
}

func mustSign(t *testing.T, msg []byte, id *testpki.Identity, opts *smime.SignOptions) []byte {
	t.Helper()
	out, err := smime.Sign(msg, identity(id), opts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustEncrypt(t *testing.T, msg []byte, to *testpki.Identity, opts *smime.EncryptOptions) []byte {
	t.Helper()
	out, err := smime.Encrypt(msg, []*x509.Certificate{to.Cert}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestProtectedRoundTrip: what Sign and Encrypt protect, Open serves with
// the real header. Encrypted, the Subject is "[...]" outside and nowhere in
// clear; the reader gets it back, and (once unwrapped) the same body as
// without header protection, the Legacy Display Element left out. Signed
// only, nothing outside changes.
func TestProtectedRoundTrip(t *testing.T) {
	p := newPKI(t)
	opts := &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}, Verify: p.verifyOpts()}
	for _, file := range []string{"plain.eml", "8bit.eml", "attachment.eml", "nested.eml", "no-mime.eml"} {
		msg := testMessage(t, file)
		hdr, _ := split(t, msg)
		subject := headerValue(hdr, "Subject")
		for _, way := range protectWays {
			t.Run(file+"/"+way.name, func(t *testing.T) {
				out := way.make(t, p, msg)
				outHdr, outBody := split(t, out)
				switch {
				case way.encrypt && headerValue(outHdr, "Subject") != "[...]":
					t.Errorf("outer Subject %q, want [...]", headerValue(outHdr, "Subject"))
				case way.encrypt && bytes.Contains(out, []byte("Subject: "+subject)):
					t.Errorf("the Subject %q is in the clear:\n%s", subject, out)
				case !way.encrypt && headerValue(outHdr, "Subject") != subject:
					t.Errorf("outer Subject %q, want %q as it was", headerValue(outHdr, "Subject"), subject)
				case way.name == "signed detached" && !bytes.Contains(outBody, []byte("hp=\"clear\"")):
					t.Errorf("no hp=\"clear\" inside:\n%s", out)
				}
				o, err := smime.Open(out, opts)
				if err != nil {
					t.Fatal(err)
				}
				want := "clear"
				if way.encrypt {
					want = "cipher"
				}
				if o.HeaderProtection != want || o.ProtectedHeaders.Get("Subject") != subject {
					t.Errorf("HeaderProtection %q, protected Subject %q", o.HeaderProtection, o.ProtectedHeaders.Get("Subject"))
				}
				for i, s := range o.Signatures {
					if s.Status != smime.StatusValid {
						t.Errorf("signature %d: %v (%s)", i, s.Status, s.Reason)
					}
				}
				served, servedBody := split(t, o.Message)
				if got := headerValue(served, "Subject"); got != subject {
					t.Errorf("served Subject %q, want %q", got, subject)
				}
				if strings.Count(strings.ToLower(string(served)), "\nsubject:") != 1 {
					t.Errorf("served header has not one Subject:\n%s", served)
				}
				if bytes.Contains(served, []byte("HP-Outer")) {
					t.Errorf("HP-Outer served at the top:\n%s", served)
				}
				if way.name == "signed detached, encrypted" || way.name == "signed detached" {
					// The multipart/signed is the client's to check: not a byte of it changed.
					if sigs, _ := smime.Verify(o.Message, ptr(p.verifyOpts())); len(sigs) != 1 || sigs[0].Status != smime.StatusValid {
						t.Errorf("the served multipart/signed does not verify: %v", sigs)
					}
					return
				}
				plain := way.make
				switch way.name {
				case "encrypted":
					plain = func(t *testing.T, p *pki, msg []byte) []byte { return mustEncrypt(t, msg, p.bob, nil) }
				case "signed opaque, encrypted":
					plain = func(t *testing.T, p *pki, msg []byte) []byte {
						return mustEncrypt(t, mustSign(t, msg, p.alice, &smime.SignOptions{Opaque: true}), p.bob, nil)
					}
				case "signed opaque":
					plain = func(t *testing.T, p *pki, msg []byte) []byte {
						return mustSign(t, msg, p.alice, &smime.SignOptions{Opaque: true})
					}
				}
				ref, err := smime.Open(plain(t, p, msg), opts)
				if err != nil {
					t.Fatal(err)
				}
				if _, refBody := split(t, ref.Message); !bytes.Equal(servedBody, refBody) {
					t.Errorf("served body\n%s\nwant, as without header protection,\n%s", servedBody, refBody)
				}
			})
		}
	}
}

// payload returns what an encrypted message from Encrypt holds, for bob.
func payload(t *testing.T, p *pki, msg []byte) []byte {
	t.Helper()
	env, err := cms.ParseEnvelope(mimeBody(t, msg))
	if err != nil {
		t.Fatal(err)
	}
	content, err := env.Decrypt(p.bob.Cert, p.bob.Key)
	if err != nil {
		t.Fatal(err)
	}
	return content
}

// TestLegacyDisplayWritten: the Legacy Display Element shows what the outer
// header hides, in the charset the part can carry, and the outer header
// keeps what the baseline policy keeps.
func TestLegacyDisplayWritten(t *testing.T) {
	p := newPKI(t)
	head := "From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <ld@example.com>\r\nIn-Reply-To: <x@example.com>\r\nReferences: <x@example.com>\r\n"
	tests := []struct {
		name, msg string
		inner     []string // in the payload
		outer     []string // in the outer header
		notOuter  []string // not in the outer header
	}{
		{"utf-8 subject, us-ascii part",
			head + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello.\r\n",
			[]string{"charset=utf-8", "hp-legacy-display=1", "\r\n\r\nSubject: Gr=C3=BC=C3=9Fe\r\n\r\nHello.\r\n"},
			[]string{"Subject: [...]\r\n", "In-Reply-To: <x@example.com>\r\n", "References: <x@example.com>\r\n"}, nil},
		{"utf-8 subject, latin-1 part: the field as written",
			head + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nHello.\r\n",
			[]string{"charset=iso-8859-1; hp=\"cipher\";\r\n hp-legacy-display=\"1\"\r\n", "\r\n\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nHello.\r\n"}, nil, nil},
		{"html: after the body tag, in character references",
			head + "Subject: Gr\xc3\xbc\xc3\x9fe <&>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body class=\"x\"><p>Hi</p></body></html>\r\n",
			[]string{`<body class="x"><div class="header-protection-legacy-display"><pre>Subject: Gr&#252;&#223;e &lt;&amp;&gt;</pre></div>` + "\r\n<p>Hi</p>"}, nil, nil},
		{"keywords and comments removed outside, shown inside",
			head + "Subject: s\r\nKeywords: secret\r\nComments: also secret\r\n\r\nHello.\r\n",
			[]string{"Keywords: secret\r\nComments: also secret\r\n", "\r\n\r\nSubject: s\r\nKeywords: secret\r\nComments: also secret\r\n\r\nHello.\r\n"},
			[]string{"From: Alice <alice@example.com>\r\n"}, []string{"Keywords", "Comments", "secret"}},
		{"no subject: nothing hidden, no element",
			head + "\r\nHello.\r\n",
			[]string{"hp=\"cipher\"\r\n", "HP-Outer: From: Alice <alice@example.com>\r\n", "\r\n\r\nHello.\r\n"}, nil, []string{"Subject"}},
		{"an attachment alone is no main body part",
			head + "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nHello.\r\n",
			[]string{"\r\n\r\nHello.\r\n"}, []string{"Subject: [...]"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := mustEncrypt(t, []byte(tc.msg), p.bob, &smime.EncryptOptions{ProtectHeaders: true})
			outHdr, _ := split(t, out)
			in := payload(t, p, out)
			for _, s := range tc.inner {
				if !bytes.Contains(in, []byte(s)) {
					t.Errorf("payload lacks %q:\n%s", s, in)
				}
			}
			for _, s := range tc.outer {
				if !bytes.Contains(outHdr, []byte(s)) {
					t.Errorf("outer header lacks %q:\n%s", s, outHdr)
				}
			}
			for _, s := range tc.notOuter {
				if bytes.Contains(outHdr, []byte(s)) {
					t.Errorf("outer header has %q:\n%s", s, outHdr)
				}
			}
			if strings.Contains(tc.name, "attachment") && bytes.Contains(in, []byte("legacy")) {
				t.Errorf("an attachment got a Legacy Display Element:\n%s", in)
			}
			// And the reader gets the message back as written.
			o, err := smime.Open(out, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}})
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(o.Message, []byte("legacy-display")) {
				t.Errorf("served with a Legacy Display Element:\n%s", o.Message)
			}
			wantHdr, _ := split(t, []byte(tc.msg))
			for _, name := range []string{"Subject", "Keywords", "Comments", "From", "References"} {
				if got, want := headerValue(o.Message, name), headerValue(wantHdr, name); got != want {
					t.Errorf("served %s %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestProtectRefusesProtectedContent: a header is protected inside the
// innermost layer, so content that is already S/MIME cannot take it.
func TestProtectRefusesProtectedContent(t *testing.T) {
	p := newPKI(t)
	signed := mustSign(t, message("alice@example.com", "x\r\n"), p.alice, nil)
	_, err := smime.Encrypt(signed, []*x509.Certificate{p.bob.Cert}, &smime.EncryptOptions{ProtectHeaders: true})
	if err == nil || strings.Count(err.Error(), "smime:") != 1 || errors.Is(err, smime.ErrMalformed) {
		t.Errorf("Encrypt(signed, ProtectHeaders) = %v, want the package's own error, not ErrMalformed", err)
	}
	if _, err := smime.Sign(signed, identity(p.alice), &smime.SignOptions{HeaderProtection: smime.ProtectClear}); err == nil {
		t.Error("Sign protected the header of signed content")
	}
}

// TestProtectedFromChecked: the From a reader sees is the protected one, so
// that is the one the signer's certificate must name.
func TestProtectedFromChecked(t *testing.T) {
	p := newPKI(t)
	mallory := p.ca.Issue(t, "mallory@example.com", nil)
	msg := message("alice@example.com", "I am alice, honest.\r\n")
	// Mallory signs a payload that says alice, under her own From outside.
	signed := mustSign(t, msg, mallory, &smime.SignOptions{HeaderProtection: smime.ProtectClear})
	forged := bytes.Replace(signed, []byte("From: alice@example.com\r\nTo"), []byte("From: mallory@example.com\r\nTo"), 1)
	if bytes.Equal(forged, signed) {
		t.Fatal("the outer From was not replaced")
	}
	o, err := smime.Open(forged, &smime.OpenOptions{Verify: p.verifyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	if got := headerValue(o.Message, "From"); got != "alice@example.com" {
		t.Errorf("served From %q, want the protected one", got)
	}
	wantStatus(t, "mallory as alice", o.Signatures, smime.StatusAddressMismatch)
	// The other way round: the outer From is not the signer's, the protected one is.
	signed = mustSign(t, msg, p.alice, &smime.SignOptions{HeaderProtection: smime.ProtectClear})
	moved := bytes.Replace(signed, []byte("From: alice@example.com\r\nTo"), []byte("From: someone@example.com\r\nTo"), 1)
	o, err = smime.Open(moved, &smime.OpenOptions{Verify: p.verifyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "alice under another From outside", o.Signatures, smime.StatusValid)
}

// TestProtectedFieldsNotPromoted: fields only the systems on the way write,
// and HP-Outer, are never taken from a payload; an outer field the payload
// lacks stays.
func TestProtectedFieldsNotPromoted(t *testing.T) {
	p := newPKI(t)
	inner := "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n" +
		"From: alice@example.com\r\nSubject: Real\r\n" +
		"Authentication-Results: mx.example.org; dkim=pass; smime=pass\r\n" +
		"Received: from forged.example\r\nHP-Outer: Subject: [...]\r\n\r\nText.\r\n"
	der, err := cms.Encrypt([]byte(inner), []*x509.Certificate{p.bob.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := wrapPKCS7(der, "enveloped-data")
	msg = append([]byte("Received: from mx.example.org\r\nList-Id: <list.example.org>\r\n"), msg...)
	o, err := smime.Open(msg, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}})
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := split(t, o.Message)
	for _, s := range []string{"forged.example", "Authentication-Results", "HP-Outer"} {
		if bytes.Contains(hdr, []byte(s)) {
			t.Errorf("served header has %q:\n%s", s, hdr)
		}
	}
	for _, s := range []string{"Received: from mx.example.org\r\n", "List-Id: <list.example.org>\r\n", "Subject: Real\r\n", "To: bob@example.com\r\n"} {
		if !bytes.Contains(hdr, []byte(s)) {
			t.Errorf("served header lacks %q:\n%s", s, hdr)
		}
	}
	if o.ProtectedHeaders.Has("Authentication-Results") || o.ProtectedHeaders.Has("Received") {
		t.Errorf("ProtectedHeaders hold transport fields: %v", o.ProtectedHeaders)
	}
}

// TestLegacyDisplayOnlyInEncrypted: outside a decrypted payload the
// hp-legacy-display parameter is ignored, or anyone could hide the start
// of a message.
func TestLegacyDisplayOnlyInEncrypted(t *testing.T) {
	p := newPKI(t)
	content := "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; hp-legacy-display=\"1\"\r\n" +
		"From: alice@example.com\r\nSubject: Real\r\n\r\nPay Mallory.\r\n\r\nThe rest.\r\n"
	for _, opaque := range []bool{false, true} {
		msg := []byte("From: alice@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n" + content)
		signed := mustSign(t, msg, p.alice, &smime.SignOptions{Opaque: opaque})
		o, err := smime.Open(signed, &smime.OpenOptions{Verify: p.verifyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(o.Message, []byte("Pay Mallory.")) {
			t.Errorf("opaque=%v: signed-only text lost:\n%s", opaque, o.Message)
		}
	}
	o, err := smime.Open([]byte("From: alice@example.com\r\nMIME-Version: 1.0\r\n"+content), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(o.Message, []byte("Pay Mallory.")) || o.HeaderProtection != "" {
		t.Errorf("plain message changed (%q):\n%s", o.HeaderProtection, o.Message)
	}
}

// TestLegacyDisplayRead: the element is taken out of every main body part
// that says it has one, however the part is encoded; parts without the
// parameter, or whose element is not one, keep their text.
func TestLegacyDisplayRead(t *testing.T) {
	p := newPKI(t)
	const hdr = "From: alice@example.com\r\nSubject: Real\r\n"
	tests := []struct {
		name, payload string
		want, lost    []string
	}{
		{"base64 text",
			"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"; hp-legacy-display=\"1\"\r\nContent-Transfer-Encoding: base64\r\n" + hdr + "\r\n" +
				"U3ViamVjdDogUmVhbA0KDQpIZWxsbywgQm9iLg0K\r\n",
			[]string{"Content-Type: text/plain; charset=utf-8; hp=cipher\r\n", "SGVsbG8sIEJvYi4NCg==\r\n"}, []string{"legacy-display"}},
		{"alternative, quoted-printable",
			"Content-Type: multipart/alternative; boundary=b; hp=\"cipher\"\r\n" + hdr + "\r\n" +
				"--b\r\nContent-Type: text/plain; hp-legacy-display=\"1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSubject: Re=\r\nal\r\n\r\nHello=2C Bob.\r\n" +
				"--b\r\nContent-Type: text/html; hp-legacy-display=1\r\n\r\n<html><body><div class=\"x header-protection-legacy-display\"><pre>Subject: Real</pre></div>\r\n<p>Hello</p></body></html>\r\n" +
				"--b--\r\n",
			[]string{"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello, Bob.\r\n--b\r\n",
				"Content-Type: text/html\r\n\r\n<html><body><p>Hello</p></body></html>\r\n--b--"},
			[]string{"legacy-display", "Re=\r\nal"}},
		{"no blank line: not an element",
			"Content-Type: text/plain; hp=\"cipher\"; hp-legacy-display=\"1\"\r\n" + hdr + "\r\nSubject: Real",
			[]string{"hp-legacy-display", "\r\n\r\nSubject: Real"}, nil},
		{"not field lines: not an element",
			"Content-Type: text/plain; hp=\"cipher\"; hp-legacy-display=\"1\"\r\n" + hdr + "\r\nDear Bob,\r\n\r\nText.\r\n",
			[]string{"\r\n\r\nDear Bob,\r\n\r\nText.\r\n"}, nil},
		{"an attachment is no main body part",
			"Content-Type: multipart/mixed; boundary=b; hp=\"cipher\"\r\n" + hdr + "\r\n" +
				"--b\r\nContent-Type: text/plain\r\n\r\nBody.\r\n" +
				"--b\r\nContent-Type: text/plain; hp-legacy-display=\"1\"\r\nContent-Disposition: attachment\r\n\r\nSubject: Kept\r\n\r\nAttached.\r\n--b--\r\n",
			[]string{"Subject: Kept\r\n\r\nAttached."}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der, err := cms.Encrypt([]byte(tc.payload), []*x509.Certificate{p.bob.Cert}, nil)
			if err != nil {
				t.Fatal(err)
			}
			o, err := smime.Open(wrapPKCS7(der, "enveloped-data"), &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.want {
				if !bytes.Contains(o.Message, []byte(s)) {
					t.Errorf("served message lacks %q:\n%s", s, o.Message)
				}
			}
			for _, s := range tc.lost {
				if bytes.Contains(o.Message, []byte(s)) {
					t.Errorf("served message has %q:\n%s", s, o.Message)
				}
			}
			if got := headerValue(o.Message, "Subject"); got != "Real" {
				t.Errorf("served Subject %q", got)
			}
		})
	}
}

// lampsSamples are the notmuch copies of the LAMPS header protection
// samples (draft-dkg-lamps-samples), as ../shared/interop/MANIFEST.md lists
// them: each is served with its protected Subject, and the legacy display
// part of those that have one is left out.
var lampsSamples = []struct {
	file, subject, mode, text string
	sigs                      int
	legacy                    bool
}{
	{"smime-onepart-signed.eml", "The FooCorp contract", "v1", "Bob, we need to cancel this contract.", 1, false},
	{"smime-multipart-signed.eml", "The FooCorp contract", "v1", "Bob, we need to cancel this contract.", 1, false},
	{"smime-sign+enc.eml", "BarCorp contract signed, let's go!", "v1", "Hi Bob!", 1, false},
	{"smime-sign+enc+legacy-disp.eml", "BarCorp contract signed, let's go!", "v1", "Hi Bob!", 1, true},
	{"smime-enc+legacy-disp.eml", "BarCorp contract signed, let's go!", "v1", "Hi Bob!", 0, true},
	// Not marked as protected: the fields inside are only content.
	{"pkcs7-smime-onepart-signed.eml", "The FooCorp contract", "", "Bob, we need to cancel this contract.", 1, false},
}

func TestLAMPSSamples(t *testing.T) {
	dir := testutil.InteropDir(t)
	opts := lampsOpenOptions(t, dir)
	for _, s := range lampsSamples {
		t.Run(s.file, func(t *testing.T) {
			msg, err := os.ReadFile(filepath.Join(dir, "notmuch", s.file))
			if err != nil {
				t.Fatal(err)
			}
			o, err := smime.Open(msg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if o.HeaderProtection != s.mode {
				t.Errorf("HeaderProtection %q, want %q", o.HeaderProtection, s.mode)
			}
			statuses := make([]smime.Status, s.sigs)
			wantStatus(t, s.file, o.Signatures, statuses...)
			hdr, body := split(t, o.Message)
			if got := headerValue(hdr, "Subject"); got != s.subject {
				t.Errorf("served Subject %q, want %q", got, s.subject)
			}
			if n := strings.Count(strings.ToLower(string(hdr)), "\nsubject:"); n != 1 {
				t.Errorf("%d Subject fields served:\n%s", n, hdr)
			}
			if !bytes.Contains(hdr, []byte("Received: from localhost")) {
				t.Errorf("the outer Received field was lost:\n%s", hdr)
			}
			_, text := servedContent(t, o.Message)
			if !strings.HasPrefix(strings.TrimSpace(text), s.text) {
				t.Errorf("served text begins %q, want %q", firstN(text, 60), s.text)
			}
			if s.legacy && (bytes.Contains(body, []byte("protected-headers=\"v1\"\r\nContent-Disposition: inline")) || strings.Count(string(body), "Subject: BarCorp") != 0) {
				t.Errorf("the legacy display part is still served:\n%s", body)
			}
		})
	}
}

// lampsOpenOptions open the notmuch samples as Bob, trusting their CA, at a
// time when Alice's certificate is valid.
func lampsOpenOptions(t *testing.T, dir string) *smime.OpenOptions {
	t.Helper()
	roots := x509.NewCertPool()
	for _, c := range readCerts(t, filepath.Join(dir, "notmuch/ca.crt")) {
		roots.AddCert(c)
	}
	pem := filepath.Join(dir, "notmuch/derived-pem")
	return &smime.OpenOptions{
		Keys:   []smime.KeyPair{{Cert: readCerts(t, filepath.Join(pem, "bob.cert.pem"))[0], Key: readKey(t, filepath.Join(pem, "bob.key.pem"))}},
		Verify: smime.VerifyOptions{Roots: roots},
	}
}
