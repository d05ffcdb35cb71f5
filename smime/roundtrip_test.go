package smime_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/testpki"
	"smimeproxy/smime"
)

func TestSignVerify(t *testing.T) {
	p := newPKI(t)
	signers := map[string]*testpki.Identity{"rsa": p.alice, "p256": p.carol}
	for _, key := range []string{"rsa", "p256"} {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			for _, opaque := range []bool{false, true} {
				for _, file := range []string{"plain.eml", "8bit.eml", "attachment.eml", "nested.eml", "no-mime.eml"} {
					name := fmt.Sprintf("%s/%v/opaque=%v/%s", key, h, opaque, file)
					t.Run(name, func(t *testing.T) {
						id := signers[key]
						msg := testMessage(t, file)
						from := id.Cert.EmailAddresses[0]
						msg = bytes.Replace(msg, []byte("alice@example.com"), []byte(from), 1)
						signed, err := smime.Sign(msg, identity(id), &smime.SignOptions{Hash: h, Opaque: opaque})
						if err != nil {
							t.Fatalf("Sign: %v", err)
						}
						o, err := smime.Open(signed, &smime.OpenOptions{Verify: p.verifyOpts()})
						if err != nil {
							t.Fatalf("Open: %v", err)
						}
						wantStatus(t, "Open", o.Signatures, smime.StatusValid)
						s := o.Signatures[0]
						if !s.Signer.Equal(id.Cert) || s.Hash != h || !containsCert(s.Certificates, id.Cert) {
							t.Errorf("signature: signer %v, hash %v, %d certificates", s.Signer.Subject, s.Hash, len(s.Certificates))
						}
						if time.Since(s.SigningTime) > time.Minute {
							t.Errorf("signing time %v", s.SigningTime)
						}
						if o.Encrypted || o.Decrypted {
							t.Error("a signed message reported as encrypted")
						}
						if !opaque && !bytes.Equal(o.Message, signed) {
							t.Error("a detached signed message was not served as it is")
						}
						if opaque {
							hdr, _ := split(t, o.Message)
							if ct, _ := mediaType(t, hdr); strings.Contains(ct, "pkcs7") {
								t.Errorf("opaque signed message served as %s", ct)
							}
						}
					})
				}
			}
		}
	}
}

// TestSignedStructure checks the multipart/signed layout of RFC 8551 3.5.3.
func TestSignedStructure(t *testing.T) {
	p := newPKI(t)
	msg := testMessage(t, "plain.eml")
	for h, micalg := range map[crypto.Hash]string{crypto.SHA256: "sha-256", crypto.SHA384: "sha-384", crypto.SHA512: "sha-512"} {
		signed, err := smime.Sign(msg, identity(p.alice), &smime.SignOptions{Hash: h})
		if err != nil {
			t.Fatal(err)
		}
		hdr, body := split(t, signed)
		ct, params := mediaType(t, hdr)
		if ct != "multipart/signed" || params["protocol"] != "application/pkcs7-signature" || params["micalg"] != micalg {
			t.Errorf("Sign(%v): Content-Type %s %v", h, ct, params)
		}
		if headerValue(hdr, "MIME-Version") != "1.0" {
			t.Errorf("Sign(%v): MIME-Version %q", h, headerValue(hdr, "MIME-Version"))
		}
		// Preamble, signed part, signature part, close delimiter.
		parts := strings.Split(string(body), "\r\n--"+params["boundary"])
		if len(parts) != 4 || parts[3] != "--\r\n" {
			t.Fatalf("Sign(%v): %d parts, tail %q", h, len(parts), parts[len(parts)-1])
		}
		sigHdr, sigBody := split(t, []byte(parts[2]))
		for field, want := range map[string]string{
			"Content-Type":              "application/pkcs7-signature; name=smime.p7s",
			"Content-Transfer-Encoding": "base64",
			"Content-Disposition":       "attachment; filename=smime.p7s",
		} {
			if got := headerValue(sigHdr, field); got != want {
				t.Errorf("Sign(%v): signature part %s = %q, want %q", h, field, got, want)
			}
		}
		for _, l := range strings.Split(strings.TrimSpace(string(sigBody)), "\r\n") {
			if len(l) > 76 {
				t.Errorf("Sign(%v): base64 line of %d", h, len(l))
			}
		}
		// The signed part is the content entity, and nothing trails its last line.
		want := "\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" +
			"Hello Bob,\r\n\r\nthis is a plain ASCII message.\r\n-- \r\nAlice\r\n"
		if parts[1] != want {
			t.Errorf("Sign(%v): signed part %q, want %q", h, parts[1], want)
		}
	}
}

// TestSignHeaders checks which fields stay outside and that they keep their
// bytes and order (DKIM-Signature, Received, Message-ID...).
func TestSignHeaders(t *testing.T) {
	p := newPKI(t)
	msg := testMessage(t, "plain.eml")
	srcHdr, _ := split(t, msg)
	var outside []string
	for _, l := range strings.SplitAfter(string(srcHdr), "\n") {
		if l == "\n" || l == "" || strings.HasPrefix(l, "Content-") {
			continue
		}
		outside = append(outside, strings.TrimSuffix(l, "\n")+"\r\n")
	}
	want := strings.Join(outside, "")
	for _, opaque := range []bool{false, true} {
		signed, err := smime.Sign(msg, identity(p.alice), &smime.SignOptions{Opaque: opaque})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(signed), want) {
			t.Errorf("Sign(opaque=%v) changed the outer header:\n%s", opaque, signed[:len(want)])
		}
		encrypted, err := smime.Encrypt(msg, []*x509.Certificate{p.bob.Cert}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(encrypted), want) {
			t.Errorf("Encrypt changed the outer header:\n%s", encrypted[:len(want)])
		}
	}
	// MIME-Version is added once when missing.
	signed, err := smime.Sign(testMessage(t, "no-mime.eml"), identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := split(t, signed)
	if n := strings.Count(string(hdr), "MIME-Version: 1.0\r\n"); n != 1 {
		t.Errorf("MIME-Version appears %d times:\n%s", n, hdr)
	}
}

func TestEncryptOpen(t *testing.T) {
	p := newPKI(t)
	dave := p.ca.Issue(t, "dave@example.com", nil)
	msg := testMessage(t, "attachment.eml")
	for _, tc := range []struct {
		name string
		opts *smime.EncryptOptions
		typ  string
	}{
		{"default", nil, "enveloped-data"},
		{"aes128-cbc oaep", &smime.EncryptOptions{Cipher: cms.AES128CBC, OAEP: true}, "enveloped-data"},
		{"aes256-gcm", &smime.EncryptOptions{Cipher: cms.AES256GCM}, "authEnveloped-data"},
		{"aes128-gcm", &smime.EncryptOptions{Cipher: cms.AES128GCM}, "authEnveloped-data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := smime.Encrypt(msg, []*x509.Certificate{p.bob.Cert, p.carol.Cert}, tc.opts)
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			hdr, body := split(t, enc)
			ct, params := mediaType(t, hdr)
			if ct != "application/pkcs7-mime" || params["smime-type"] != tc.typ || params["name"] != "smime.p7m" {
				t.Errorf("Encrypt: Content-Type %s %v", ct, params)
			}
			for _, l := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
				if len(l) > 76 {
					t.Fatalf("base64 line of %d", len(l))
				}
			}
			for _, reader := range []*testpki.Identity{p.bob, p.carol} {
				o, err := smime.Open(enc, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(dave), keyPair(reader)}})
				if err != nil {
					t.Fatal(err)
				}
				if !o.Encrypted || !o.Decrypted || o.DecryptErr != nil || len(o.Recipients) != 2 {
					t.Fatalf("Open as %s: encrypted %v decrypted %v err %v, %d recipients", reader.Cert.Subject.CommonName, o.Encrypted, o.Decrypted, o.DecryptErr, len(o.Recipients))
				}
				if c := tc.opts; c != nil && o.Cipher != c.Cipher {
					t.Errorf("cipher %v, want %v", o.Cipher, c.Cipher)
				}
				// Served: the original header, the original content back.
				gotHdr, gotBody := split(t, o.Message)
				srcHdr, _ := split(t, msg)
				if !bytes.Equal(gotHdr, srcHdr) {
					t.Errorf("served header:\n%s\nwant\n%s", gotHdr, srcHdr)
				}
				if !bytes.Contains(gotBody, []byte("Sch=F6ne Gr=FC=DFe")) || bytes.Contains(gotBody, []byte("epilogue")) {
					t.Errorf("served body:\n%s", gotBody)
				}
			}
			o, err := smime.Open(enc, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(dave)}})
			if err != nil {
				t.Fatal(err)
			}
			if !o.Encrypted || o.Decrypted || !errors.Is(o.DecryptErr, cms.ErrNoRecipient) || !bytes.Equal(o.Message, enc) {
				t.Errorf("Open with a stranger's key: decrypted %v, err %v", o.Decrypted, o.DecryptErr)
			}
			o, _ = smime.Open(enc, nil)
			if !errors.Is(o.DecryptErr, cms.ErrNoRecipient) {
				t.Errorf("Open without keys: err %v", o.DecryptErr)
			}
		})
	}
}

func TestSignThenEncrypt(t *testing.T) {
	p := newPKI(t)
	msg := testMessage(t, "8bit.eml")
	for _, opaque := range []bool{false, true} {
		signed, err := smime.Sign(msg, identity(p.alice), &smime.SignOptions{Opaque: opaque})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := smime.Encrypt(signed, []*x509.Certificate{p.bob.Cert, p.alice.Cert}, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := smime.Open(enc, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}, Verify: p.verifyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		if !o.Decrypted {
			t.Fatalf("not decrypted: %v", o.DecryptErr)
		}
		wantStatus(t, fmt.Sprintf("opaque=%v", opaque), o.Signatures, smime.StatusValid)
		hdr, body := split(t, o.Message)
		ct, _ := mediaType(t, hdr)
		if !opaque && (ct != "multipart/signed" || !bytes.Equal(o.Message, signed)) {
			t.Errorf("served %s, want the signed message as it was sent", ct)
		}
		if opaque && (ct != "text/plain" || !bytes.Contains(body, []byte("Gr=C3=BC=C3=9Fe"))) {
			t.Errorf("served %s:\n%s", ct, body)
		}
		// The served message verifies on its own.
		sigs, err := smime.Verify(o.Message, ptr(p.verifyOpts()))
		if err != nil {
			t.Fatal(err)
		}
		if !opaque {
			wantStatus(t, "re-verify", sigs, smime.StatusValid)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestStatuses(t *testing.T) {
	p := newPKI(t)
	other := testpki.NewCA(t, "another root")
	now := time.Now()
	expired := p.ca.Issue(t, "alice@example.com", &testpki.Options{NotBefore: now.Add(-3 * time.Hour), NotAfter: now.Add(-2 * time.Hour)})
	serverOnly := p.ca.Issue(t, "alice@example.com", &testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	anyEKU := p.ca.Issue(t, "alice@example.com", &testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	noEKU := p.ca.Issue(t, "alice@example.com", &testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{}})
	subjectOnly := p.ca.Issue(t, "alice@example.com", &testpki.Options{NoSAN: true, SubjectEmail: true})
	inter := p.ca.Intermediate(t, "smime test intermediate")
	viaInter := inter.Issue(t, "alice@example.com", nil)

	msg := message("Alice <Alice@Example.com>", "Hello.\r\n")
	sign := func(id *testpki.Identity, m []byte) []byte {
		s, err := smime.Sign(m, identity(id), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(p.alice, msg)
	tampered := bytes.Replace(good, []byte("Hello."), []byte("Hellx."), 1)
	_, sigPart := signedParts(t, good)
	garbage := bytes.Replace(good, []byte(base64.StdEncoding.EncodeToString(sigPart)[:40]), []byte(strings.Repeat("A", 40)), 1)
	tests := []struct {
		name string
		msg  []byte
		opts smime.VerifyOptions
		want smime.Status
	}{
		{"valid", good, p.verifyOpts(), smime.StatusValid},
		{"tampered body", tampered, p.verifyOpts(), smime.StatusInvalid},
		{"garbage signature", garbage, p.verifyOpts(), smime.StatusError},
		{"untrusted root", good, smime.VerifyOptions{Roots: other.Pool()}, smime.StatusUntrusted},
		{"system roots", good, smime.VerifyOptions{}, smime.StatusUntrusted},
		{"expired signer", sign(expired, msg), p.verifyOpts(), smime.StatusExpired},
		{"expired signer, valid then", sign(expired, msg), smime.VerifyOptions{Roots: p.ca.Pool(), Time: now.Add(-150 * time.Minute)}, smime.StatusValid},
		{"expired signer, signed while valid", signAt(t, expired, msg, now.Add(-150*time.Minute)), p.verifyOpts(), smime.StatusValid},
		{"signing time in the future", signAt(t, expired, msg, now.Add(time.Hour)), p.verifyOpts(), smime.StatusExpired},
		{"not yet valid", good, smime.VerifyOptions{Roots: p.ca.Pool(), Time: now.Add(-2 * time.Hour)}, smime.StatusExpired},
		{"address mismatch", sign(p.alice, message("mallory@example.com", "Hi.\r\n")), p.verifyOpts(), smime.StatusAddressMismatch},
		{"two From addresses, one unnamed", sign(p.alice, message("alice@example.com, eve@example.com", "Hi.\r\n")), p.verifyOpts(), smime.StatusAddressMismatch},
		{"address in subject emailAddress", sign(subjectOnly, msg), p.verifyOpts(), smime.StatusValid},
		{"server-auth EKU only", sign(serverOnly, msg), p.verifyOpts(), smime.StatusUntrusted},
		{"anyExtendedKeyUsage", sign(anyEKU, msg), p.verifyOpts(), smime.StatusValid},
		{"no EKU", sign(noEKU, msg), p.verifyOpts(), smime.StatusValid},
		{"chain through an intermediate", sign(viaInter, msg), p.verifyOpts(), smime.StatusValid},
		{"intermediate from options", sign(&testpki.Identity{Cert: viaInter.Cert, Key: viaInter.Key}, msg),
			smime.VerifyOptions{Roots: p.ca.Pool(), Intermediates: pool(inter.Cert)}, smime.StatusValid},
		{"intermediate missing", sign(&testpki.Identity{Cert: viaInter.Cert, Key: viaInter.Key}, msg), p.verifyOpts(), smime.StatusUntrusted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sigs, err := smime.Verify(tc.msg, &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, tc.name, sigs, tc.want)
			if sigs[0].Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func signAt(t *testing.T, id *testpki.Identity, msg []byte, at time.Time) []byte {
	t.Helper()
	s, err := smime.Sign(msg, identity(id), &smime.SignOptions{Time: at})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestHarvest checks what a caller collects from a signature: the chain, and
// the encryption certificate named by SMIMEEncryptionKeyPreference.
func TestHarvest(t *testing.T) {
	p := newPKI(t)
	inter := p.ca.Intermediate(t, "harvest intermediate")
	signer := inter.Issue(t, "alice@example.com", &testpki.Options{KeyUsage: x509.KeyUsageDigitalSignature})
	enc := inter.Issue(t, "alice@example.com", &testpki.Options{KeyUsage: x509.KeyUsageKeyEncipherment})
	id := identity(signer)
	id.EncryptionCert = enc.Cert
	signed, err := smime.Sign(message("alice@example.com", "hi\r\n"), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := smime.Verify(signed, ptr(p.verifyOpts()))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "Verify", sigs, smime.StatusValid)
	s := sigs[0]
	for _, c := range []*x509.Certificate{signer.Cert, enc.Cert, inter.Cert} {
		if !containsCert(s.Certificates, c) {
			t.Errorf("certificate %s not carried", c.Subject)
		}
	}
	if s.EncryptionCert == nil || !s.EncryptionCert.Equal(enc.Cert) {
		t.Errorf("EncryptionCert = %v, want the separate encryption certificate", s.EncryptionCert)
	}
	if len(s.Capabilities) == 0 {
		t.Error("no SMIMECapabilities")
	}

	// Same certificate for both: no preference is sent.
	id = identity(p.alice)
	id.EncryptionCert = p.alice.Cert
	signed, err = smime.Sign(message("alice@example.com", "hi\r\n"), id, &smime.SignOptions{Capabilities: []cms.Capability{}})
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ = smime.Verify(signed, ptr(p.verifyOpts()))
	if sigs[0].EncryptionCert != nil && !sigs[0].EncryptionCert.Equal(p.alice.Cert) {
		t.Errorf("EncryptionCert = %v", sigs[0].EncryptionCert.Subject)
	}
}

// TestOuterSignatureAroundEncryption: a signature over an encrypted layer is
// reported, and decryption goes on; a signature inside is checked as well.
func TestOuterSignatureAroundEncryption(t *testing.T) {
	p := newPKI(t)
	inner, err := smime.Sign(message("alice@example.com", "inner text\r\n"), identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := smime.Encrypt(inner, []*x509.Certificate{p.bob.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := smime.Sign(enc, identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(outer, []byte("smime-type=enveloped-data"), []byte("smime-type=enveloped-data; x=1"), 1)
	for _, tc := range []struct {
		name string
		msg  []byte
		want []smime.Status
	}{
		{"good outer", outer, []smime.Status{smime.StatusValid, smime.StatusValid}},
		{"bad outer", bad, []smime.Status{smime.StatusInvalid, smime.StatusValid}},
	} {
		o, err := smime.Open(tc.msg, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}, Verify: p.verifyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		if !o.Decrypted {
			t.Errorf("%s: not decrypted: %v", tc.name, o.DecryptErr)
		}
		wantStatus(t, tc.name, o.Signatures, tc.want...)
		if !bytes.Contains(o.Message, []byte("inner text")) {
			t.Errorf("%s: served %s", tc.name, o.Message)
		}
	}
}

func TestOpenNotSMIME(t *testing.T) {
	for _, file := range []string{"plain.eml", "attachment.eml", "nested.eml"} {
		msg := testMessage(t, file)
		o, err := smime.Open(msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(o.Message, msg) || o.Encrypted || len(o.Signatures) != 0 {
			t.Errorf("Open(%s) changed a plain message", file)
		}
	}
	if _, err := smime.Open([]byte("From alice@example.com Mon Jan  1 00:00:00 2026\nSubject: x\n\nbody\n"), nil); !errors.Is(err, smime.ErrMalformed) {
		t.Errorf("Open(mbox From line) = %v, want ErrMalformed", err)
	}
}

func TestAuthenticationResults(t *testing.T) {
	p := newPKI(t)
	signed, err := smime.Sign(message("alice@example.com", "hi\r\n"), identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := smime.Encrypt(message("alice@example.com", "hi\r\n"), []*x509.Certificate{p.bob.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	open := func(m []byte, keys ...smime.KeyPair) *smime.Opened {
		o, err := smime.Open(m, &smime.OpenOptions{Keys: keys, Verify: p.verifyOpts()})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	serial := fmt.Sprintf("%X", p.alice.Cert.SerialNumber)
	// A revocation check by the caller sets StatusRevoked.
	revoked := open(signed)
	revoked.Signatures[0].Status, revoked.Signatures[0].Reason = smime.StatusRevoked, "certificate revoked (keyCompromise)"
	tests := []struct {
		name string
		o    *smime.Opened
		want string
	}{
		{"pass", open(signed), `mx.example; smime=pass reason="valid: signature verified" body.smime-identifier=alice@example.com body.smime-serial=` + serial + ` body.smime-issuer="CN=smime test root,O=smimeproxy tests"`},
		{"fail", open(bytes.Replace(signed, []byte("hi\r\n"), []byte("ho\r\n"), 1)), `mx.example; smime=fail reason="invalid: signature does not match the content" body.smime-identifier=alice@example.com body.smime-serial=` + serial + ` body.smime-issuer="CN=smime test root,O=smimeproxy tests"`},
		{"revoked", revoked, `mx.example; smime=fail reason="revoked: certificate revoked (keyCompromise)" body.smime-identifier=alice@example.com body.smime-serial=` + serial + ` body.smime-issuer="CN=smime test root,O=smimeproxy tests"`},
		{"unsigned", open(testMessage(t, "plain.eml")), "mx.example; smime=none"},
		{"not decrypted", open(enc), `mx.example; smime=none reason="not decrypted: no matching key"`},
		{"decrypted, unsigned", open(enc, keyPair(p.bob)), "mx.example; smime=none"},
	}
	for _, tc := range tests {
		if got := tc.o.AuthenticationResults("mx.example"); got != tc.want {
			t.Errorf("AuthenticationResults(%s) =\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
	if got := open(signed).AuthenticationResults("odd id"); !strings.HasPrefix(got, `"odd id"; smime=pass`) {
		t.Errorf("authserv-id not quoted: %s", got)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[smime.Status]string{
		smime.StatusValid: "valid", smime.StatusInvalid: "invalid", smime.StatusUntrusted: "untrusted",
		smime.StatusExpired: "expired", smime.StatusAddressMismatch: "address-mismatch", smime.StatusWeak: "weak",
		smime.StatusUnknownSigner: "unknown-signer", smime.StatusError: "error", smime.StatusRevoked: "revoked", smime.Status(42): "unknown",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// TestHeaderProtection: the innermost entity's protected header fields
// (RFC 9788 hp="cipher") are reported, and served in place of the outer
// ones.
func TestHeaderProtection(t *testing.T) {
	p := newPKI(t)
	inner := "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n" +
		"From: alice@example.com\r\nSubject: The real subject\r\nMessage-ID: <hp@example.com>\r\n\r\nSecret.\r\n"
	der, err := cms.Encrypt([]byte(inner), []*x509.Certificate{p.bob.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@example.com\r\nSubject: [...]\r\nMessage-ID: <hp@example.com>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(der) + "\r\n"
	o, err := smime.Open([]byte(msg), &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}})
	if err != nil {
		t.Fatal(err)
	}
	if o.HeaderProtection != "cipher" || o.ProtectedHeaders.Get("Subject") != "The real subject" {
		t.Errorf("HeaderProtection %q, protected Subject %q", o.HeaderProtection, o.ProtectedHeaders.Get("Subject"))
	}
	if o.ProtectedHeaders.Has("Content-Type") {
		t.Error("Content-Type among the protected headers")
	}
	hdr, body := split(t, o.Message)
	if headerValue(hdr, "Subject") != "The real subject" || string(body) != "Secret.\r\n" {
		t.Errorf("served:\n%s", o.Message)
	}
	if _, params := mediaType(t, hdr); params["hp"] != "cipher" {
		t.Errorf("served Content-Type lost hp: %v", params)
	}
}

// TestNestedSignatures: From names the outermost signer; an inner signature by
// someone else is checked for its address only when no trusted outer
// signature vouches for the message.
func TestNestedSignatures(t *testing.T) {
	p := newPKI(t)
	other := testpki.NewCA(t, "dave's root")
	dave := other.Issue(t, "dave@example.com", nil)
	inner, err := smime.Sign(message("alice@example.com", "from alice\r\n"), identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	forwarded := bytes.Replace(inner, []byte("From: alice@example.com"), []byte("From: dave@example.com"), 1)
	both := pool(p.ca.Cert, other.Cert)
	for _, opaque := range []bool{false, true} {
		outer, err := smime.Sign(forwarded, identity(dave), &smime.SignOptions{Opaque: opaque})
		if err != nil {
			t.Fatal(err)
		}
		sigs, err := smime.Verify(outer, &smime.VerifyOptions{Roots: both})
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, fmt.Sprintf("trusted dave around alice, opaque=%v", opaque), sigs, smime.StatusValid, smime.StatusValid)
		sigs, _ = smime.Verify(outer, ptr(p.verifyOpts()))
		wantStatus(t, fmt.Sprintf("untrusted dave around alice, opaque=%v", opaque), sigs, smime.StatusUntrusted, smime.StatusAddressMismatch)
	}
	sigs, _ := smime.Verify(forwarded, ptr(p.verifyOpts()))
	wantStatus(t, "alice under dave's From, alone", sigs, smime.StatusAddressMismatch)
}

func TestSignMalformed(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct{ name, msg string }{
		{"mbox From line", "From alice@example.com Mon Jan  1 00:00:00 2026\nSubject: x\n\nbody\n"},
		{"continuation first", " folded: x\n\nbody\n"},
		{"unknown encoding on 8-bit data", "Content-Type: text/plain\nContent-Transfer-Encoding: x-rot13\n\n\xe4\n"},
		{"broken multipart with 8-bit data", "Content-Type: multipart/mixed\n\n\xe4\n"},
	} {
		if _, err := smime.Sign([]byte(tc.msg), identity(p.alice), nil); !errors.Is(err, smime.ErrMalformed) || strings.Count(err.Error(), "smime:") != 1 {
			t.Errorf("Sign(%s) = %v, want ErrMalformed", tc.name, err)
		}
		if _, err := smime.Encrypt([]byte(tc.msg), []*x509.Certificate{p.bob.Cert}, nil); !errors.Is(err, smime.ErrMalformed) {
			t.Errorf("Encrypt(%s) = %v, want ErrMalformed", tc.name, err)
		}
	}
	if _, err := smime.Sign(message("alice@example.com", "x"), &smime.Identity{Cert: p.alice.Cert}, nil); err == nil {
		t.Error("Sign without a key succeeded")
	}
	if _, err := smime.Sign(message("alice@example.com", "x"), identity(p.alice), &smime.SignOptions{Hash: crypto.SHA1}); err == nil {
		t.Error("Sign with SHA-1 succeeded")
	}
	if _, err := smime.Encrypt(message("alice@example.com", "x"), nil, nil); err == nil {
		t.Error("Encrypt to nobody succeeded")
	}
}
