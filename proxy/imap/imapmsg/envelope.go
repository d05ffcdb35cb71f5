package imapmsg

import (
	"strings"

	"smimeproxy/internal/rfc822"
	"smimeproxy/smime"
)

// envelope holds the fields of an ENVELOPE as Dovecot keeps them
// (message-part-data.c): the last occurrence of each field counts, and
// nil stands for an absent one.
type envelope struct {
	date, subject, inReplyTo, messageID *string
	from, sender, replyTo, to, cc, bcc  []address
}

// address is one entry of an address list: a mailbox, or the start (a
// name in mailbox and no domain) or end (all nil) of a group.
type address struct {
	name, route, mailbox, domain *string
	invalid                      bool
}

// readEnvelope reads the envelope fields of the header of p.
func (m *Message) readEnvelope(p *smime.Part) *envelope {
	e := &envelope{}
	m.headers(p, func(h header) bool {
		if h.value == nil {
			return true
		}
		var addrs *[]address
		switch strings.ToLower(h.name) {
		case "date":
			e.date = headerString(h.value)
		case "subject":
			e.subject = headerString(h.value)
		case "message-id":
			e.messageID = headerString(h.value)
		case "in-reply-to":
			e.inReplyTo = headerString(h.value)
		case "from":
			addrs = &e.from
		case "sender":
			addrs = &e.sender
		case "reply-to":
			addrs = &e.replyTo
		case "to":
			addrs = &e.to
		case "cc":
			addrs = &e.cc
		case "bcc":
			addrs = &e.bcc
		}
		if addrs != nil {
			// Each further field of the same name adds its addresses.
			*addrs = append(*addrs, parseAddresses(h.value)...)
		}
		return true
	})
	return e
}

// Envelope is the ENVELOPE of the message, in wire form with its parentheses.
func (m *Message) Envelope() []byte {
	return appendEnvelope(nil, m.root.envelope)
}

func appendEnvelope(b []byte, e *envelope) []byte {
	b = append(b, '(')
	if e == nil {
		b = append(b, "NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL"...)
		return append(b, ')')
	}
	b = appendNStringNoLF(b, e.date)
	b = append(b, ' ')
	if e.subject == nil {
		b = append(b, "NIL"...)
	} else {
		b = appendHuman(b, *e.subject)
	}
	or := func(a, b []address) []address {
		if a != nil {
			return a
		}
		return b
	}
	for _, list := range [][]address{e.from, or(e.sender, e.from), or(e.replyTo, e.from), e.to, e.cc, e.bcc} {
		b = append(b, ' ')
		b = appendAddresses(b, list)
	}
	b = append(b, ' ')
	b = appendNStringNoLF(b, e.inReplyTo)
	b = append(b, ' ')
	b = appendNStringNoLF(b, e.messageID)
	return append(b, ')')
}

func appendAddresses(b []byte, list []address) []byte {
	if list == nil {
		return append(b, "NIL"...)
	}
	b = append(b, '(')
	for _, a := range list {
		b = append(b, '(')
		if a.name == nil {
			b = append(b, "NIL"...)
		} else {
			b = appendHuman(b, *a.name)
		}
		b = append(b, ' ')
		b = appendNString(b, a.route)
		b = append(b, ' ')
		b = appendNString(b, a.mailbox)
		b = append(b, ' ')
		b = appendNString(b, a.domain)
		b = append(b, ')')
	}
	return append(b, ')')
}

// addrParser reads an address list as Dovecot's message-address.c does,
// with MESSAGE_ADDRESS_PARSE_FLAG_FILL_MISSING and non-strict dots.
type addrParser struct {
	p       *rfc822.Parser
	comment []byte
	str     []byte
	cur     address
	list    []address
}

// parseAddresses reads an address list; nil when it holds none.
func parseAddresses(v []byte) []address {
	a := &addrParser{p: rfc822.New(v)}
	a.p.Comment = &a.comment
	a.p.ReplaceNUL = true
	if a.p.SkipLWSP() <= 0 {
		return nil
	}
	a.addressList()
	return a.list
}

func ptr(s string) *string { return &s }

func (a *addrParser) add() {
	a.list = append(a.list, a.cur)
	a.cur = address{}
}

func (a *addrParser) addFixed() {
	if a.cur.mailbox == nil {
		a.cur.mailbox = ptr("MISSING_MAILBOX")
		a.cur.invalid = true
	}
	if a.cur.domain == nil || *a.cur.domain == "" {
		a.cur.domain = ptr("MISSING_DOMAIN")
		a.cur.invalid = true
	}
	a.add()
}

// at reports whether the next byte is c (false at the end).
func (a *addrParser) at(c byte) bool { return !a.p.AtEnd() && a.p.Peek() == c }

func (a *addrParser) nonStrictDotAtom() int {
	ret := -1
	for {
		for a.at('.') {
			a.str = append(a.str, '.')
			a.p.Skip()
			if a.p.AtEnd() {
				return 0
			}
			ret = 1
		}
		if a.at('@') {
			break
		}
		ret = a.p.Atom(&a.str)
		if ret <= 0 || !a.at('.') {
			break
		}
	}
	return ret
}

func (a *addrParser) localPart() int {
	a.str = a.str[:0]
	var ret int
	if a.at('"') {
		ret = a.p.QuotedString(&a.str)
	} else {
		ret = a.nonStrictDotAtom()
	}
	if ret < 0 {
		return -1
	}
	a.cur.mailbox = ptr(string(a.str))
	return ret
}

func (a *addrParser) domain() int {
	a.str = a.str[:0]
	ret := a.p.Domain(&a.str)
	if ret < 0 {
		return -1
	}
	a.cur.domain = ptr(string(a.str))
	return ret
}

func (a *addrParser) domainList() int {
	a.str = a.str[:0]
	for {
		if a.p.AtEnd() {
			return 0
		}
		if !a.at('@') {
			break
		}
		if len(a.str) > 0 {
			a.str = append(a.str, ',')
		}
		a.str = append(a.str, '@')
		if ret := a.p.Domain(&a.str); ret <= 0 {
			return ret
		}
		for a.p.SkipLWSP() > 0 && a.at(',') {
			a.p.Skip()
		}
	}
	a.cur.route = ptr(string(a.str))
	return 1
}

func (a *addrParser) angleAddr() int {
	a.p.Skip() // '<'
	if a.p.SkipLWSP() <= 0 {
		return -1
	}
	if a.at('@') {
		if a.domainList() > 0 && a.at(':') {
			a.p.Skip()
		} else {
			a.cur.route = ptr("INVALID_ROUTE")
			if a.p.AtEnd() {
				return -1
			}
		}
		if a.p.SkipLWSP() <= 0 {
			return -1
		}
	}
	if !a.at('>') {
		if a.localPart() <= 0 {
			return -1
		}
		if a.at('@') && a.domain() <= 0 {
			return -1
		}
	}
	if !a.at('>') {
		return -1
	}
	a.p.Skip()
	return a.p.SkipLWSP()
}

func (a *addrParser) nameAddr() int {
	a.str = a.str[:0]
	if a.p.Phrase(&a.str) <= 0 || !a.at('<') {
		return -1
	}
	if len(a.str) > 0 {
		a.cur.name = ptr(string(a.str))
	}
	if a.angleAddr() < 0 {
		a.cur.domain = ptr("SYNTAX_ERROR")
		a.cur.invalid = true
	}
	if a.p.AtEnd() {
		return 0
	}
	return 1
}

func (a *addrParser) addrSpec() int {
	ret2 := -2
	a.comment = a.comment[:0]
	quoted := a.at('"')
	ret := a.localPart()
	if ret <= 0 {
		a.cur.invalid = true
	}
	if ret != 0 && a.at('@') {
		ret2 = a.domain()
		if ret2 <= 0 {
			ret = ret2
		}
	}
	if len(a.comment) > 0 {
		a.cur.name = ptr(string(a.comment))
	} else if ret2 == -2 {
		a.str = append(a.str, ' ')
		n := len(a.str)
		a.p.Phrase(&a.str)
		if len(a.str) != n {
			a.cur.mailbox = nil
			a.cur.name = ptr(string(a.str))
		} else if !quoted {
			a.cur.domain = ptr("")
		}
		a.cur.invalid = true
		ret = -1
	}
	return ret
}

func (a *addrParser) mailbox() int {
	start := a.p.Pos()
	ret := a.nameAddr()
	if ret < 0 {
		a.p.SetPos(start)
		ret = a.addrSpec()
		if a.cur.invalid && a.cur.name == nil && a.cur.mailbox != nil && a.cur.domain == nil {
			a.cur.name, a.cur.mailbox = a.cur.mailbox, nil
		}
	}
	if ret < 0 {
		a.cur.invalid = true
	}
	a.addFixed()
	return ret
}

func (a *addrParser) group() int {
	a.str = a.str[:0]
	if a.p.Phrase(&a.str) <= 0 || !a.at(':') {
		return -1
	}
	a.p.Skip()
	ret := a.p.SkipLWSP()
	if ret <= 0 {
		a.cur.invalid = true
	}
	a.cur.mailbox = ptr(string(a.str))
	a.add()
	if ret > 0 && !a.at(';') {
		for {
			a.mailbox()
			if !a.at(',') {
				break
			}
			a.p.Skip()
			if a.p.SkipLWSP() <= 0 {
				ret = -1
				break
			}
		}
	}
	if ret >= 0 {
		if !a.at(';') {
			ret = -1
		} else {
			a.p.Skip()
			ret = a.p.SkipLWSP()
		}
	}
	if ret < 0 {
		a.cur.invalid = true
	}
	a.add()
	if ret == 0 {
		return 0
	}
	return 1
}

func (a *addrParser) address() int {
	start := a.p.Pos()
	ret := a.group()
	if ret < 0 {
		a.p.SetPos(start)
		ret = a.mailbox()
	}
	return ret
}

func (a *addrParser) addressList() {
	for {
		if a.address() == 0 {
			return
		}
		if !a.at(',') {
			return
		}
		a.p.Skip()
		if ret := a.p.SkipLWSP(); ret <= 0 {
			if ret < 0 {
				a.addFixed()
			}
			return
		}
	}
}
