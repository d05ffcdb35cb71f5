package smtp

import (
	"bytes"
	"errors"
	"io"

	"smimeproxy/internal/ascii"
	"smimeproxy/proxy"
)

// The proxy holds each message whole while it signs and encrypts it, and
// what it holds counts against the memory budget it shares with the IMAP
// proxy (memory_budget_mb). As the message arrives, each chunk reserves
// what the costliest usual transform (signing and encrypting a 7-bit
// message) will cost for it; once policy has decided, the reservation
// becomes what the decision costs. A message that does not fit now gets
// 452 4.3.1 and the client tries again later; the SIZE the proxy
// advertises keeps out one that could never fit. Reserving the transform
// while reading means that of several large messages arriving at once,
// those that do not fit fail early and give their share to the others:
// the last one standing always fits, where reserving it only after reading
// could fail them all.

// Chunks in which a message is read and reserved: small messages cost
// little, and the last chunk of a large one wastes at most maxChunk.
const (
	firstChunk = 64 << 10
	maxChunk   = 4 << 20
)

// What transforming a message costs at its peak, in bytes held per byte of
// the message, beyond the message as read. Measured by
// TestTransformMemory: with the message as read, the heap in use peaks at
// 2.1, 4.4, 3.5 (4.8 with two Bcc copies) and 5.3 times a 7-bit message
// for signing, opaque signing, signing and encrypting, and both with an
// opaque signature; each cost here is the measure, less the message as
// read, rounded up, and one more to spare. Signing holds the
// content and the signed message, its canonical form written into it;
// encrypting, signed or not, also holds the ciphertext, encrypted a block
// at a time straight into the base64 message (4/3 of it), the DER never
// whole. An opaque signature is base64 of a DER holding the content, so
// all that follows it is 4/3 larger. Only one Bcc copy is ever held.
const (
	signCost              = 3
	opaqueSignCost        = 5
	encryptCost           = 5
	opaqueSignEncryptCost = 6
)

// eightBitExpansion bounds how much larger than the message its canonical
// form is when its body has 8-bit bytes: 8-bit text becomes
// quoted-printable, up to three bytes for one (binary becomes base64,
// 4/3). A 7-bit message stays as large. (Measured: 7.4 and 10.7 times
// 8-bit text for signing, and signing and encrypting.)
const eightBitExpansion = 3

var (
	// errMemory: the memory budget cannot hold the message now.
	errMemory = errors.New("proxy: the memory budget is in use")
	// errTooBig: the memory budget could never hold the message.
	errTooBig = errors.New("proxy: the message is too large for the memory budget")
)

// transformCost is what policy's decision costs for msg, signed opaque
// or not; 0 when it goes as it is.
func transformCost(sign, encrypt, opaque bool, msg []byte) int64 {
	k := int64(0)
	switch {
	case encrypt && sign && opaque:
		k = opaqueSignEncryptCost
	case encrypt:
		k = encryptCost
	case sign && opaque:
		k = opaqueSignCost
	case sign:
		k = signCost
	}
	if !ascii.Valid(messageBody(msg)) {
		k *= eightBitExpansion
	}
	return k * int64(len(msg))
}

// readCost is what reading reserves per byte: the message itself, and
// signing and encrypting it as a 7-bit message.
func readCost(opaque bool) int64 {
	if opaque {
		return 1 + opaqueSignEncryptCost
	}
	return 1 + encryptCost
}

// maxMessageSize is the largest 7-bit message (as mail clients send) that
// the budget could ever read, sign and encrypt, with nothing else in it.
func maxMessageSize(b *proxy.Budget, opaque bool) int64 {
	return b.Total() / readCost(opaque)
}

// messageBody is what follows the header of msg.
func messageBody(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[i+4:]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[i+2:]
	}
	return nil
}

// readMessage reads a message from r, reserving in b each chunk it
// allocates and cost-1 more bytes for each byte it reads, and returns the
// message with the bytes it holds reserved: cost for each of its bytes. It
// fails with errMemory when b cannot hold more, having released what it
// reserved; the caller leaves the rest of the message unread, for go-smtp
// to discard.
//
// declared is the size the client said the message has (MAIL's SIZE=), 0
// when it said none. The first chunk is made large enough for that much,
// so that such a message is read whole into it with no copy, but never
// larger than maxChunk, and only when b has room for it now: a client
// that declares more than it sends holds at most a chunk, as any other,
// and never fails for having declared it.
func readMessage(r io.Reader, b *proxy.Budget, cost, declared int64) (msg []byte, held int64, err error) {
	size := int64(firstChunk)
	// One more byte than declared, for io.ReadFull to find the end in it.
	if want := min(declared+1, maxChunk); want > size && b.TryAcquire(want) {
		size = want
	} else if !b.TryAcquire(size) {
		return nil, 0, errMemory
	}
	held = size
	var chunks [][]byte
	total := 0
	for {
		c := make([]byte, size)
		n, err := io.ReadFull(r, c)
		chunks = append(chunks, c[:n])
		total += n
		if !b.TryAcquire((cost - 1) * int64(n)) {
			b.Release(held)
			return nil, 0, errMemory
		}
		held += (cost - 1) * int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			b.Release(held)
			return nil, 0, err
		}
		size = min(2*size, maxChunk)
		if !b.TryAcquire(size) {
			b.Release(held)
			return nil, 0, errMemory
		}
		held += size
	}
	msg = chunks[0]
	if len(chunks) > 1 {
		// The copy is within what was reserved: the chunks, and more than
		// as much again for the transform.
		msg = make([]byte, 0, total)
		for _, c := range chunks {
			msg = append(msg, c...)
		}
	}
	want := cost * int64(total)
	b.Release(held - want)
	return msg, want, nil
}

// reserve makes p hold want bytes of the budget, taking or giving back the
// difference. More than the whole budget fails with errTooBig, more than
// it has free now with errMemory.
func (s *session) reserve(p *plan, want int64) error {
	b := s.gen.budget
	switch {
	case want <= p.held:
		b.Release(p.held - want)
	case want > b.Total():
		return errTooBig
	case !b.TryAcquire(want - p.held):
		return errMemory
	}
	p.held = want
	return nil
}
