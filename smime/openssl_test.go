package smime_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/internal/testpki"
	"smimeproxy/smime"
)

// TestOpenSSLVerifiesOurs: openssl cms -verify and openssl smime -verify
// accept what we sign, detached and opaque, 8-bit bodies and attachments
// included, and get back exactly the entity we signed.
func TestOpenSSLVerifiesOurs(t *testing.T) {
	o := newPeer(t, "openssl")
	p := newPKI(t)
	inter := p.ca.Intermediate(t, "openssl intermediate")
	viaInter := inter.Issue(t, "alice@example.com", nil)
	caFile := o.write(t, "ca.pem", testpki.CertPEM(p.ca.Cert))
	for _, id := range []struct {
		name string
		id   *testpki.Identity
		h    crypto.Hash
	}{{"rsa", p.alice, crypto.SHA256}, {"p256", p.carol, crypto.SHA384}, {"rsa-intermediate", viaInter, crypto.SHA512}} {
		for _, file := range []string{"plain.eml", "8bit.eml", "attachment.eml", "nested.eml", "no-mime.eml"} {
			name := fmt.Sprintf("%s/%v/%s", id.name, id.h, file)
			t.Run(name, func(t *testing.T) {
				msg := testMessage(t, file)
				detached, err := smime.Sign(msg, identity(id.id), &smime.SignOptions{Hash: id.h})
				if err != nil {
					t.Fatal(err)
				}
				opaque, err := smime.Sign(msg, identity(id.id), &smime.SignOptions{Hash: id.h, Opaque: true})
				if err != nil {
					t.Fatal(err)
				}
				signedPart, _ := signedParts(t, detached)
				o.write(t, "detached.eml", detached)
				o.write(t, "opaque.eml", opaque)
				for _, cmd := range []string{"cms", "smime"} {
					for _, in := range []string{"detached.eml", "opaque.eml"} {
						o.run(t, nil, cmd, "-verify", "-in", in, "-CAfile", caFile, "-out", "content.out")
						if got := o.read(t, "content.out"); !bytes.Equal(got, signedPart) {
							t.Errorf("openssl %s -verify %s gave back\n%q\nwant\n%q", cmd, in, got, signedPart)
						}
					}
				}
			})
		}
	}
	// And rejects what was changed on the way.
	signed, err := smime.Sign(testMessage(t, "plain.eml"), identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.write(t, "tampered.eml", bytes.Replace(signed, []byte("plain ASCII"), []byte("plain ascii"), 1))
	if _, _, err := o.try(nil, "cms", "-verify", "-in", "tampered.eml", "-CAfile", caFile, "-out", "x"); err == nil {
		t.Error("openssl accepted a tampered message")
	}
}

// openSSLContent is a MIME entity for OpenSSL to sign or encrypt.
const openSSLContent = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
	"Hello from OpenSSL, Gr=C3=BC=C3=9Fe.\r\n"

// TestOpenSSLSignedVerifiedByUs: we verify what openssl cms -sign makes, in
// MIME form, detached and not, and tell weak, unknown and tampered ones.
func TestOpenSSLSignedVerifiedByUs(t *testing.T) {
	o := newPeer(t, "openssl")
	p := newPKI(t)
	in := o.write(t, "content.txt", []byte(openSSLContent))
	tests := []struct {
		name  string
		id    *testpki.Identity
		args  []string
		opts  smime.VerifyOptions
		want  smime.Status
		hash  crypto.Hash
		known bool // verify again with the certificate known: valid
	}{
		{"detached rsa", p.alice, nil, p.verifyOpts(), smime.StatusValid, crypto.SHA256, false},
		{"opaque rsa", p.alice, []string{"-nodetach"}, p.verifyOpts(), smime.StatusValid, crypto.SHA256, false},
		{"detached p256 sha384", p.carol, []string{"-md", "sha384"}, p.verifyOpts(), smime.StatusValid, crypto.SHA384, false},
		{"opaque p256 sha512", p.carol, []string{"-nodetach", "-md", "sha512"}, p.verifyOpts(), smime.StatusValid, crypto.SHA512, false},
		{"rsa-pss", p.alice, []string{"-keyopt", "rsa_padding_mode:pss"}, p.verifyOpts(), smime.StatusValid, crypto.SHA256, false},
		{"sha1 detached", p.alice, []string{"-md", "sha1"}, p.verifyOpts(), smime.StatusWeak, crypto.SHA1, false},
		{"sha1 opaque", p.alice, []string{"-md", "sha1", "-nodetach"}, p.verifyOpts(), smime.StatusWeak, crypto.SHA1, false},
		{"sha1 allowed", p.alice, []string{"-md", "sha1"}, smime.VerifyOptions{Roots: p.ca.Pool(), AllowSHA1: true}, smime.StatusValid, crypto.SHA1, false},
		{"no certificates", p.alice, []string{"-nocerts"}, p.verifyOpts(), smime.StatusUnknownSigner, crypto.SHA256, true},
		{"untrusted", p.alice, nil, smime.VerifyOptions{Roots: x509.NewCertPool()}, smime.StatusUntrusted, crypto.SHA256, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, key, _ := o.writeIdentity(t, "signer", tc.id)
			args := append([]string{"cms", "-sign", "-in", in, "-signer", cert, "-inkey", key,
				"-from", tc.id.Cert.EmailAddresses[0], "-to", "bob@example.com", "-subject", "OpenSSL signed"}, tc.args...)
			msg := o.run(t, nil, args...)
			sigs, err := smime.Verify(msg, &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, tc.name, sigs, tc.want)
			if sigs[0].Hash != tc.hash {
				t.Errorf("hash %v, want %v", sigs[0].Hash, tc.hash)
			}
			if tc.known {
				opts := tc.opts
				opts.Certificates = []*x509.Certificate{tc.id.Cert}
				sigs, _ = smime.Verify(msg, &opts)
				wantStatus(t, tc.name+" with the certificate known", sigs, smime.StatusValid)
			}
			opened, err := smime.Open(msg, &smime.OpenOptions{Verify: tc.opts})
			if err != nil {
				t.Fatal(err)
			}
			if _, text := servedContent(t, opened.Message); !strings.HasPrefix(text, "Hello from OpenSSL, Grüße.") {
				t.Errorf("served text %q", text)
			}
			// A changed body fails (openssl writes the detached content as it was given).
			bad := bytes.Replace(msg, []byte("Hello from"), []byte("Hello frum"), 1)
			if !bytes.Equal(bad, msg) {
				opts := tc.opts
				opts.Certificates = []*x509.Certificate{tc.id.Cert}
				sigs, _ = smime.Verify(bad, &opts)
				wantStatus(t, tc.name+" tampered", sigs, smime.StatusInvalid)
			}
		})
	}
}

// TestOpenSSLDecryptsOurs: openssl cms -decrypt opens what we encrypt, and
// the content is exactly the (signed) entity we put in.
func TestOpenSSLDecryptsOurs(t *testing.T) {
	o := newPeer(t, "openssl")
	p := newPKI(t)
	caFile := o.write(t, "ca.pem", testpki.CertPEM(p.ca.Cert))
	msg := testMessage(t, "attachment.eml")
	signed, err := smime.Sign(msg, identity(p.alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	signedPart, _ := signedParts(t, signed)
	for _, tc := range []struct {
		name   string
		reader *testpki.Identity
		opts   *smime.EncryptOptions
	}{
		{"rsa aes-256-cbc", p.bob, nil},
		{"rsa oaep aes-128-cbc", p.bob, &smime.EncryptOptions{Cipher: cms.AES128CBC, OAEP: true}},
		{"rsa aes-192-cbc", p.bob, &smime.EncryptOptions{Cipher: cms.AES192CBC}},
		{"rsa aes-256-gcm", p.bob, &smime.EncryptOptions{Cipher: cms.AES256GCM}},
		{"rsa aes-128-gcm", p.bob, &smime.EncryptOptions{Cipher: cms.AES128GCM}},
		{"p256 ecdh", p.carol, nil},
		{"p256 ecdh aes-256-gcm", p.carol, &smime.EncryptOptions{Cipher: cms.AES256GCM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, key, _ := o.writeIdentity(t, "reader", tc.reader)
			for _, in := range [][]byte{msg, signed} {
				enc, err := smime.Encrypt(in, []*x509.Certificate{p.alice.Cert, tc.reader.Cert}, tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				o.write(t, "enc.eml", enc)
				o.run(t, nil, "cms", "-decrypt", "-in", "enc.eml", "-recip", cert, "-inkey", key, "-out", "dec.out")
				got := o.read(t, "dec.out")
				// Signed: the multipart/signed entity as sent. Not signed: the
				// same canonical entity that Sign signs.
				want := signedPart
				if bytes.Equal(in, signed) {
					want = contentEntity(t, signed)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("decrypted\n%q\nwant\n%q", got, want)
				}
				if bytes.Equal(in, signed) {
					// What OpenSSL decrypted verifies in OpenSSL.
					o.run(t, nil, "cms", "-verify", "-in", "dec.out", "-CAfile", caFile, "-out", "content.out")
				}
			}
		})
	}
}

// TestOpenSSLEncryptedOpenedByUs: we open what openssl cms -encrypt makes.
func TestOpenSSLEncryptedOpenedByUs(t *testing.T) {
	o := newPeer(t, "openssl")
	p := newPKI(t)
	in := o.write(t, "content.txt", []byte(openSSLContent))
	bob := o.write(t, "bob.crt", testpki.CertPEM(p.bob.Cert))
	carol := o.write(t, "carol.crt", testpki.CertPEM(p.carol.Cert))
	for _, tc := range []struct {
		name   string
		args   []string
		reader *testpki.Identity
		cipher cms.Cipher
	}{
		{"rsa aes-256-cbc", []string{"-aes256", bob}, p.bob, cms.AES256CBC},
		{"rsa 3des", []string{"-des3", bob}, p.bob, cms.DES3CBC},
		{"rsa oaep", []string{"-aes128", "-recip", bob, "-keyopt", "rsa_padding_mode:oaep"}, p.bob, cms.AES128CBC},
		{"rsa oaep sha256", []string{"-aes256", "-recip", bob, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}, p.bob, cms.AES256CBC},
		{"rsa aes-256-gcm", []string{"-aes-256-gcm", bob}, p.bob, cms.AES256GCM},
		{"p256 ecdh", []string{"-aes256", carol}, p.carol, cms.AES256CBC},
		{"two recipients, second", []string{"-aes256", carol, bob}, p.bob, cms.AES256CBC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"cms", "-encrypt", "-in", in, "-from", "alice@example.com", "-to", "bob@example.com", "-subject", "OpenSSL encrypted"}, tc.args...)
			msg := o.run(t, nil, args...)
			opened, err := smime.Open(msg, &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(tc.reader)}})
			if err != nil {
				t.Fatal(err)
			}
			if !opened.Decrypted || opened.Cipher != tc.cipher {
				t.Fatalf("decrypted %v (%v), cipher %v, want %v", opened.Decrypted, opened.DecryptErr, opened.Cipher, tc.cipher)
			}
			hdr, body := split(t, opened.Message)
			if headerValue(hdr, "Subject") != "OpenSSL encrypted" || string(body) != "Hello from OpenSSL, Gr=C3=BC=C3=9Fe.\r\n" &&
				string(body) != "Hello from OpenSSL, Gr=C3=BC=C3=9Fe.\n" {
				t.Errorf("served:\n%s", opened.Message)
			}
			if ct, _ := mediaType(t, hdr); ct != "text/plain" {
				t.Errorf("served Content-Type %s", ct)
			}
		})
	}
}

// TestOpenSSLReadsProtected: openssl cms decrypts and verifies what we send
// with header protection, and the content it gets holds the protected
// header: the real Subject, and the Legacy Display Element when encrypted.
func TestOpenSSLReadsProtected(t *testing.T) {
	o := newPeer(t, "openssl")
	p := newPKI(t)
	caFile := o.write(t, "ca.pem", testpki.CertPEM(p.ca.Cert))
	cert, key, _ := o.writeIdentity(t, "bob", p.bob)
	msg := testMessage(t, "plain.eml")
	for _, way := range protectWays {
		t.Run(way.name, func(t *testing.T) {
			in := o.write(t, "in.eml", way.make(t, p, msg))
			if way.encrypt {
				o.run(t, nil, "cms", "-decrypt", "-in", in, "-recip", cert, "-inkey", key, "-out", "dec.eml")
				in = "dec.eml"
			}
			content := o.read(t, in)
			if way.name != "encrypted" {
				o.run(t, nil, "cms", "-verify", "-in", in, "-CAfile", caFile, "-out", "content.out")
				content = o.read(t, "content.out")
			}
			want := []string{"Subject: Plain ASCII\r\n", "From: Alice <alice@example.com>\r\n", "hp=\"clear\""}
			if way.encrypt {
				want = []string{"Subject: Plain ASCII\r\n", "HP-Outer: Subject: [...]\r\n", "hp=\"cipher\"", "\r\n\r\nSubject: Plain ASCII\r\n\r\nHello Bob,"}
			}
			for _, s := range want {
				if !bytes.Contains(content, []byte(s)) {
					t.Errorf("openssl got content without %q:\n%s", s, content)
				}
			}
		})
	}
}
