package smime_test

import (
	"bufio"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/smime"
)

func header(t testing.TB, s string) textproto.Header {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(s + "\r\n")))
	if err != nil {
		t.Fatalf("ReadHeader(%q): %v", s, err)
	}
	return h
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   smime.Kind
	}{
		{"no content type", "Subject: hi\r\n", smime.Plain},
		{"text", "Content-Type: text/plain; charset=utf-8\r\n", smime.Plain},
		{"mixed", "Content-Type: multipart/mixed; boundary=x\r\n", smime.Plain},
		{"detached", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=x\r\n", smime.Signed},
		{"detached legacy x-", "Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=sha1; boundary=x\r\n", smime.Signed},
		{"detached upper case", "Content-Type: Multipart/Signed; Protocol=\"Application/PKCS7-Signature\"; boundary=x\r\n", smime.Signed},
		{"detached folded", "Content-Type: multipart/signed;\r\n protocol=\"application/pkcs7-signature\";\r\n\tmicalg=sha-256; boundary=x\r\n", smime.Signed},
		{"signed without protocol", "Content-Type: multipart/signed; boundary=x\r\n", smime.Plain},
		{"pgp signed", "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=x\r\n", smime.PGPSigned},
		{"pgp encrypted", "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n", smime.PGPEncrypted},
		{"opaque", "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n", smime.SignedOpaque},
		{"opaque legacy x-", "Content-Type: application/x-pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n", smime.SignedOpaque},
		{"opaque quoted", "Content-Type: application/pkcs7-mime; name=\"smime.p7m\";\r\n smime-type=\"signed-data\"\r\n", smime.SignedOpaque},
		{"enveloped", "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n", smime.Encrypted},
		{"enveloped legacy x-", "Content-Type: application/x-pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n", smime.Encrypted},
		{"authEnveloped", "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n", smime.Encrypted},
		{"pkcs7-mime without smime-type", "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"\r\n", smime.Encrypted},
		{"certs-only", "Content-Type: application/pkcs7-mime; smime-type=certs-only; name=smime.p7c\r\n", smime.CertsOnly},
		{"unknown smime-type", "Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n", smime.Plain},
		{"octet-stream p7m by name", "Content-Type: application/octet-stream; name=smime.p7m\r\n", smime.Encrypted},
		{"octet-stream p7m by filename", "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"SMIME.P7M\"\r\n", smime.Encrypted},
		{"octet-stream p7c", "Content-Type: application/octet-stream; name=certs.p7c\r\n", smime.CertsOnly},
		{"octet-stream other", "Content-Type: application/octet-stream; name=report.pdf\r\n", smime.Plain},
		{"lone signature part", "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n", smime.Plain},
		{"duplicate parameters", "Content-Type: application/pkcs7-mime; smime-type=signed-data; smime-type=enveloped-data\r\n", smime.SignedOpaque},
		{"garbage", "Content-Type: ;;;\r\n", smime.Plain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := smime.Classify(header(t, tc.header)); got != tc.want {
				t.Errorf("Classify(%s) = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[smime.Kind]string{
		smime.Plain: "plain", smime.Signed: "signed", smime.SignedOpaque: "signed-opaque",
		smime.Encrypted: "encrypted", smime.CertsOnly: "certs-only", smime.PGPSigned: "pgp-signed",
		smime.PGPEncrypted: "pgp-encrypted", smime.Kind(99): "unknown",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
	if !smime.Signed.SMIME() || !smime.Encrypted.SMIME() || smime.PGPSigned.SMIME() || smime.Plain.SMIME() {
		t.Error("SMIME() disagrees with the kinds")
	}
}
