// Package hostile makes the messages an outside sender can use against a
// mailbox behind the proxy: MIME nested thousands of levels deep, more parts
// than any reader should count, multiparts with nothing in them, CMS with
// absurd lengths or BER nested 100,000 levels deep, header blocks of
// megabytes. No key is needed for any of them. Tests feed them to every
// path that reads mail (smime, the IMAP description, the lab's Dovecot
// through the proxy) and check that each is answered quickly and whole.
package hostile

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// Case is one hostile message.
type Case struct {
	Name string
	Msg  []byte
}

// Messages returns every case, small and large (about 30 MB in all). Each
// has a Subject "hostile: <name>" and a Message-ID naming it.
func Messages() []Case {
	return []Case{
		{"signed-close-only", withHeader("signed-close-only", signedType+"abc\"", "--abc--\r\n")},
		{"signed-one-part", withHeader("signed-one-part", signedType+"abc\"",
			"--abc\r\nContent-Type: text/plain\r\n\r\nsigned?\r\n--abc--\r\n")},
		{"signed-delimiter-only", withHeader("signed-delimiter-only", signedType+"abc\"", "--abc\r\n")},
		{"multipart-no-boundary", withHeader("multipart-no-boundary", "multipart/mixed", "--abc\r\nContent-Type: text/plain\r\n\r\nx\r\n--abc--\r\n")},
		{"multipart-boundary-missing", withHeader("multipart-boundary-missing", "multipart/mixed; boundary=\"abc\"", "no delimiter anywhere\r\n")},
		{"multipart-empty-body", withHeader("multipart-empty-body", "multipart/mixed; boundary=\"abc\"", "")},
		{"multipart-empty-boundary", withHeader("multipart-empty-boundary", "multipart/mixed; boundary=\"\"", "--\r\nContent-Type: text/plain\r\n\r\nx\r\n----\r\n")},
		{"multipart-empty-parts", withHeader("multipart-empty-parts", "multipart/mixed; boundary=\"abc\"", "--abc\r\n--abc\r\n\r\n--abc\r\n--abc--\r\n")},
		{"multipart-unclosed", withHeader("multipart-unclosed", "multipart/mixed; boundary=\"abc\"", "--abc\r\nContent-Type: multipart/mixed; boundary=\"def\"\r\n\r\n--def\r\nContent-Type: text/plain\r\n\r\ncut short")},
		{"rfc822-empty", withHeader("rfc822-empty", "message/rfc822", "")},
		{"header-only", []byte("From: mallory@example.net\r\nSubject: hostile: header-only\r\nMessage-ID: <header-only@hostile.example>\r\n")},
		{"nul-bytes", withHeader("nul-bytes", "text/plain", "a\x00b\r\n\x00\r\n")},
		{"nested-multipart-10000", Nested(10000)},
		{"nested-multipart-20000", Nested(20000)},
		{"nested-multipart-100000", Nested(100000)},
		{"signed-nested-10000", SignedNested(10000)},
		{"signed-nested-20000", SignedNested(20000)},
		{"signed-nested-100000", SignedNested(100000)},
		{"nested-rfc822-10000", NestedMessages(10000)},
		{"parts-20000", ManyParts(20000)},
		{"ber-indefinite-100000", pkcs7("ber-indefinite-100000", DeepBER(100000))},
		{"signed-ber-indefinite-100000", withHeader("signed-ber-indefinite-100000", signedType+"s\"",
			"--s\r\nContent-Type: text/plain\r\n\r\nsigned?\r\n--s\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
				wrap(DeepBER(100000))+"--s--\r\n")},
		{"cms-length-4g", pkcs7("cms-length-4g", []byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x09})},
		{"cms-length-8-octets", pkcs7("cms-length-8-octets", []byte{0x30, 0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00})},
		{"cms-inner-length-2g", pkcs7("cms-inner-length-2g", []byte{
			0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, // envelopedData
			0xa0, 0x80, 0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00})},
		{"header-2mib", HugeHeader(2 << 20)},
		{"header-line-2mib", withExtra("header-line-2mib", "X-Long: "+strings.Repeat("a", 2<<20)+"\r\n", "text/plain", "body\r\n")},
	}
}

const signedType = "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\""

func withHeader(name, contentType, body string) []byte {
	return withExtra(name, "", contentType, body)
}

func withExtra(name, extra, contentType, body string) []byte {
	var b bytes.Buffer
	head(&b, name)
	b.WriteString(extra)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: " + contentType + "\r\n\r\n")
	b.WriteString(body)
	return b.Bytes()
}

func head(b *bytes.Buffer, name string) {
	fmt.Fprintf(b, "From: Mallory <mallory@example.net>\r\nTo: victim@example.org\r\n"+
		"Subject: hostile: %s\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <%s@hostile.example>\r\n", name, name)
}

// Nested is a multipart/mixed message nested levels deep (the message
// itself counting as one), a text part innermost.
func Nested(levels int) []byte {
	var b bytes.Buffer
	head(&b, fmt.Sprintf("nested-multipart-%d", levels))
	b.WriteString("MIME-Version: 1.0\r\n")
	nest(&b, levels)
	return b.Bytes()
}

// nest writes the Content-Type and body of a multipart nested levels deep.
// The boundaries have one width, so that none is a prefix of another.
func nest(b *bytes.Buffer, levels int) {
	for i := range levels - 1 {
		fmt.Fprintf(b, "Content-Type: multipart/mixed; boundary=\"b%06d\"\r\n\r\n--b%06d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ndeepest\r\n")
	for i := levels - 2; i >= 0; i-- {
		fmt.Fprintf(b, "--b%06d--\r\n", i)
	}
}

// SignedNested is a multipart/signed message with a junk signature whose
// signed part is a multipart nested levels-1 deep: levels in all.
func SignedNested(levels int) []byte {
	var b bytes.Buffer
	head(&b, fmt.Sprintf("signed-nested-%d", levels))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: " + signedType + "s\"\r\n\r\n--s\r\n")
	nest(&b, levels-1)
	b.WriteString("--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--s--\r\n")
	return b.Bytes()
}

// NestedMessages is a message holding a message/rfc822, holding another,
// levels deep in all.
func NestedMessages(levels int) []byte {
	var b bytes.Buffer
	head(&b, fmt.Sprintf("nested-rfc822-%d", levels))
	b.WriteString("MIME-Version: 1.0\r\n")
	for range levels - 1 {
		b.WriteString("Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n")
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ndeepest\r\n")
	return b.Bytes()
}

// ManyParts is a multipart/mixed message of n text parts.
func ManyParts(n int) []byte {
	var b bytes.Buffer
	head(&b, fmt.Sprintf("parts-%d", n))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n")
	for i := range n {
		fmt.Fprintf(&b, "--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
	}
	b.WriteString("--p--\r\n")
	return b.Bytes()
}

// DeepBER is a CMS ContentInfo (enveloped-data) whose content is a BER
// SEQUENCE of indefinite length nested levels deep.
func DeepBER(levels int) []byte {
	b := []byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80}
	b = append(b, bytes.Repeat([]byte{0x30, 0x80}, levels)...)
	return append(b, make([]byte, 2*levels+4)...)
}

// HugeHeader is a message whose header block is about size bytes.
func HugeHeader(size int) []byte {
	var b bytes.Buffer
	head(&b, "header-2mib")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "X-Filler-%d: %s\r\n", i, strings.Repeat("f", 60))
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n")
	return b.Bytes()
}

// pkcs7 is an application/pkcs7-mime message whose body is der in base64.
func pkcs7(name string, der []byte) []byte {
	var b bytes.Buffer
	head(&b, name)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n")
	b.WriteString(wrap(der))
	return b.Bytes()
}

// wrap is data in base64, in lines of 76 characters.
func wrap(data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.String()
}
