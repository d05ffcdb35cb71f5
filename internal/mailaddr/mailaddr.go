// Package mailaddr puts mail addresses and domains into the one form in
// which the policy, the keystore, the certificate cache and the proxies
// compare them. Two spellings that reach the same mailbox must compare
// equal, or a rule written for one is bypassed by the other: the proxy
// relays RCPT TO:<carol@Example.ORG.> as the client wrote it, and the mail
// server delivers it to carol@example.org.
package mailaddr

import (
	"strings"
	"unicode"

	"golang.org/x/net/idna"
)

// profile maps an internationalized domain as mail servers resolve it: UTS
// #46 non-transitional processing (ß stays ß), without the STD3 rules that
// refuse an underscore. Postfix maps UTF-8 domains the same way.
var profile = idna.New(idna.MapForLookup(), idna.StrictDomainName(false), idna.Transitional(false), idna.BidiRule())

// Normalize returns addr in the form names are compared in: the local
// part in lower case, the domain as Domain returns it. A name without @
// (a login such as "bob") is only trimmed and put in lower case.
//
// The local part is folded because no mail system in use treats Alice@ and
// alice@ as different people, and certificate authorities and clients
// compare addresses that way; RFC 5321 allows a server to do otherwise.
// Quoting is the SMTP and header parsers' business: they hand over the
// local part unquoted.
func Normalize(addr string) string {
	addr = strings.TrimSpace(addr)
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return strings.ToLower(addr)
	}
	return strings.ToLower(addr[:i]) + "@" + Domain(addr[i+1:])
}

// Domain returns a domain in the form names are compared in: in lower case,
// without trailing dots (example.org. is the fully qualified spelling of
// example.org), and an internationalized name as its ASCII form
// (bücher.example is xn--bcher-kva.example). A name that cannot be mapped,
// which no mail server would deliver to, is only put in lower case.
func Domain(domain string) string {
	domain = strings.TrimSpace(domain)
	if !isASCII(domain) {
		if a, err := profile.ToASCII(domain); err == nil {
			domain = a
		}
	}
	return strings.TrimRightFunc(strings.ToLower(domain), func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
}

// DomainOf returns the normalized domain of addr, or "" when it has no @.
func DomainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return Domain(addr[i+1:])
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
