package smime

import (
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Kind is what a message's (or entity's) headers say it is.
type Kind int

const (
	Plain Kind = iota
	// Signed is multipart/signed with an application/pkcs7-signature (or
	// x-pkcs7-signature) part (RFC 8551 3.5.3).
	Signed
	// SignedOpaque is application/pkcs7-mime with smime-type=signed-data.
	SignedOpaque
	// Encrypted is application/pkcs7-mime with smime-type enveloped-data or
	// authEnveloped-data; also pkcs7-mime without smime-type and
	// application/octet-stream named *.p7m, whose content Open sniffs.
	Encrypted
	// CertsOnly is application/pkcs7-mime with smime-type=certs-only, or a
	// *.p7c file.
	CertsOnly
	PGPSigned
	PGPEncrypted
)

var kindNames = [...]string{"plain", "signed", "signed-opaque", "encrypted", "certs-only", "pgp-signed", "pgp-encrypted"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// SMIME reports whether k is an S/MIME kind.
func (k Kind) SMIME() bool {
	return k == Signed || k == SignedOpaque || k == Encrypted || k == CertsOnly
}

// Classify says what h's Content-Type (and, for octet-stream, file name)
// declares. It reads headers only; Open confirms with the content.
func Classify(h textproto.Header) Kind {
	t, params := mediaType(h)
	switch t {
	case "multipart/signed":
		switch strings.ToLower(params["protocol"]) {
		case "application/pkcs7-signature", "application/x-pkcs7-signature":
			return Signed
		case "application/pgp-signature":
			return PGPSigned
		}
	case "multipart/encrypted":
		if strings.ToLower(params["protocol"]) == "application/pgp-encrypted" {
			return PGPEncrypted
		}
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		switch strings.ToLower(params["smime-type"]) {
		case "signed-data":
			return SignedOpaque
		case "enveloped-data", "authenveloped-data", "":
			return Encrypted
		case "certs-only":
			return CertsOnly
		}
	case "application/octet-stream":
		// RFC 8551 3.2.2: senders may use octet-stream with the S/MIME file names.
		switch name := filename(h, params); {
		case strings.HasSuffix(name, ".p7m"):
			return Encrypted
		case strings.HasSuffix(name, ".p7c"):
			return CertsOnly
		}
	}
	return Plain
}
