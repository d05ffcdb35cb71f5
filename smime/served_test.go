package smime_test

import (
	"bytes"
	"encoding/base64"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/smime"
)

// TestServedEndsInLineBreak: opaque signed content that ends in a lone CR,
// as NSS signs HTML, is served ending in CRLF, so that an IMAP server counts
// the served message as the proxy does.
func TestServedEndsInLineBreak(t *testing.T) {
	p := newPKI(t)
	content := []byte("Content-Type: text/html\r\n\r\n<html><body>hi</body></html>\r")
	der, err := cms.Sign(content, p.alice.Cert, p.alice.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: html\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(der) + "\r\n")
	o, err := smime.Open(msg, &smime.OpenOptions{Verify: p.verifyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(o.Message, []byte("</html>\r\n")) {
		t.Errorf("served message ends %q", o.Message[len(o.Message)-20:])
	}
	if len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusValid {
		t.Errorf("the signature over the content as it was does not verify: %+v", o.Signatures)
	}
}
