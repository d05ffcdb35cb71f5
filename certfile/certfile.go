// Package certfile reads certificates from the files people get from a CA or
// from a correspondent: PEM, DER, or a PKCS #7 (.p7b/.p7c) bundle.
package certfile

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"smimeproxy/cms"
)

// ErrNoCertificate means the input holds no certificate in any form we read.
var ErrNoCertificate = errors.New("certfile: no certificate found (expected PEM, DER or PKCS #7)")

// pemCert and pemPKCS7 are the PEM block types that carry certificates.
var (
	pemCert  = map[string]bool{"CERTIFICATE": true, "X509 CERTIFICATE": true}
	pemPKCS7 = map[string]bool{"PKCS7": true, "CMS": true}
)

// Parse reads every certificate in data: any number of PEM CERTIFICATE or
// PKCS7 blocks, concatenated DER certificates, or a PKCS #7 SignedData (DER,
// BER or unarmoured base64), such as a CA's .p7b. Duplicates are dropped; the
// order is kept.
func Parse(data []byte) ([]*x509.Certificate, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: the input is empty", ErrNoCertificate)
	}
	if bytes.Contains(trimmed, []byte("-----BEGIN ")) {
		return parsePEM(trimmed)
	}
	certs, err := parseDER(trimmed)
	if err == nil || !errors.Is(err, ErrNoCertificate) {
		return certs, err
	}
	// Some CAs hand out a .p7b or .cer as bare base64 without PEM armour.
	if raw, berr := base64.StdEncoding.DecodeString(string(stripSpace(trimmed))); berr == nil && len(raw) > 0 {
		if certs, derr := parseDER(raw); derr == nil {
			return certs, nil
		}
	}
	return nil, err
}

func parsePEM(data []byte) ([]*x509.Certificate, error) {
	var (
		certs []*x509.Certificate
		other []string
		n     int
	)
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		switch {
		case pemCert[block.Type]:
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certfile: PEM block %d (%s): %w", n, block.Type, err)
			}
			certs = append(certs, c)
		case pemPKCS7[block.Type]:
			cs, err := parsePKCS7(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certfile: PEM block %d (%s): %w", n, block.Type, err)
			}
			certs = append(certs, cs...)
		default:
			// Keys and other blocks often share a file with the certificate.
			other = append(other, block.Type)
		}
	}
	if len(certs) == 0 {
		if len(other) == 0 {
			return nil, fmt.Errorf("%w: the PEM armour is damaged", ErrNoCertificate)
		}
		return nil, fmt.Errorf("%w: the PEM data holds only %s%s", ErrNoCertificate, strings.Join(other, ", "), csrHint(other))
	}
	return dedupe(certs), nil
}

func csrHint(types []string) string {
	for _, t := range types {
		if t == "CERTIFICATE REQUEST" || t == "NEW CERTIFICATE REQUEST" {
			return " (a CSR is what you send to the CA; import the certificate the CA sends back)"
		}
	}
	return ""
}

func parseDER(data []byte) ([]*x509.Certificate, error) {
	certs, certErr := x509.ParseCertificates(data)
	if certErr == nil && len(certs) > 0 {
		return dedupe(certs), nil
	}
	certs, p7Err := parsePKCS7(data)
	if p7Err == nil {
		return certs, nil
	}
	if errors.Is(p7Err, errEmptyPKCS7) {
		return nil, fmt.Errorf("%w: %v", ErrNoCertificate, p7Err)
	}
	if _, err := x509.ParseCertificateRequest(data); err == nil {
		return nil, fmt.Errorf("%w: the input is a certificate signing request (a CSR is what you send to the CA; import the certificate the CA sends back)", ErrNoCertificate)
	}
	if len(data) == 0 || data[0] != 0x30 {
		// Not even an ASN.1 SEQUENCE: the parsers' messages would only confuse.
		return nil, ErrNoCertificate
	}
	return nil, fmt.Errorf("%w: as a certificate: %v; as PKCS #7: %v", ErrNoCertificate, certErr, p7Err)
}

var errEmptyPKCS7 = errors.New("the PKCS #7 data holds no certificates")

func parsePKCS7(der []byte) ([]*x509.Certificate, error) {
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(sd.Certificates) == 0 {
		return nil, errEmptyPKCS7
	}
	return dedupe(sd.Certificates), nil
}

func dedupe(certs []*x509.Certificate) []*x509.Certificate {
	out := certs[:0:0]
	for _, c := range certs {
		dup := false
		for _, o := range out {
			if c.Equal(o) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

func stripSpace(b []byte) []byte {
	return bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, b)
}
