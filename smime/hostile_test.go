package smime_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"smimeproxy/internal/hostile"
	"smimeproxy/smime"
)

// hostileCases are the small hostile messages of testdata/hostile and the
// generated ones of internal/hostile.
func hostileCases(t testing.TB) []hostile.Case {
	files, _ := filepath.Glob("testdata/hostile/*.eml")
	if len(files) == 0 {
		t.Fatal("no testdata/hostile/*.eml")
	}
	var cases []hostile.Case
	for _, f := range files {
		cases = append(cases, hostile.Case{Name: "testdata/" + filepath.Base(f), Msg: testMessage(t, filepath.Join("hostile", filepath.Base(f)))})
	}
	return append(cases, hostile.Messages()...)
}

// overLimit names the hostile messages that exceed DefaultLimits.
var overLimit = map[string]smime.Bound{
	"nested-multipart-10000":  smime.BoundDepth,
	"nested-multipart-20000":  smime.BoundDepth,
	"nested-multipart-100000": smime.BoundDepth,
	"signed-nested-10000":     smime.BoundDepth,
	"signed-nested-20000":     smime.BoundDepth,
	"signed-nested-100000":    smime.BoundDepth,
	"nested-rfc822-10000":     smime.BoundDepth,
	"parts-20000":             smime.BoundParts,
	"header-2mib":             smime.BoundHeader,
	"header-line-2mib":        smime.BoundHeader,
}

// TestOpenHostile: every hostile message opens, is served, says which
// limit it met, and a multipart/signed without its two parts is a
// malformed signature, never a crash (issue 9, points 1 and 2).
func TestOpenHostile(t *testing.T) {
	p := newPKI(t)
	opts := &smime.OpenOptions{Keys: []smime.KeyPair{keyPair(p.bob)}, Verify: p.verifyOpts()}
	for _, c := range hostileCases(t) {
		o, err := smime.Open(c.Msg, opts)
		if err != nil {
			t.Errorf("Open(%s): %v", c.Name, err)
			continue
		}
		var bound smime.Bound
		if o.Limit != nil {
			bound = o.Limit.Bound
		}
		if want := overLimit[c.Name]; bound != want {
			t.Errorf("Open(%s): limit %q, want %q", c.Name, bound, want)
		}
		if len(o.Message) == 0 {
			t.Errorf("Open(%s) serves nothing", c.Name)
		}
		ar := o.AuthenticationResults("mx.example")
		if o.Limit != nil && !strings.Contains(ar, o.Limit.Reason()) && len(o.Signatures) == 0 {
			t.Errorf("Open(%s): Authentication-Results %q does not say why", c.Name, ar)
		}
		name := strings.TrimPrefix(strings.TrimSuffix(c.Name, ".eml"), "testdata/")
		if strings.HasPrefix(name, "signed-") && (len(o.Signatures) != 1 || o.Signatures[0].Status != smime.StatusError) {
			t.Errorf("Open(%s): signatures %v, want one error", c.Name, o.Signatures)
		}
		if strings.HasPrefix(name, "cms-") || strings.HasPrefix(name, "ber-") || name == "encrypted-empty" {
			if !o.Encrypted || o.Decrypted || o.DecryptErr == nil {
				t.Errorf("Open(%s): encrypted %v, decrypted %v (%v); want an encrypted message that did not open", c.Name, o.Encrypted, o.Decrypted, o.DecryptErr)
			}
		}
	}
}

// TestSignHostile: a message past the limits is refused with the limit it
// met; no hostile message makes Sign fail otherwise than with ErrMalformed.
func TestSignHostile(t *testing.T) {
	p := newPKI(t)
	for _, c := range hostileCases(t) {
		_, err := smime.Sign(c.Msg, identity(p.alice), nil)
		le, isLimit := errors.AsType[*smime.LimitError](err)
		switch want, over := overLimit[c.Name]; {
		case over && (!isLimit || le.Bound != want):
			t.Errorf("Sign(%s) = %v, want a %s limit error", c.Name, err, want)
		case !over && err != nil && !errors.Is(err, smime.ErrMalformed):
			t.Errorf("Sign(%s) = %v", c.Name, err)
		}
		if isLimit && !errors.Is(err, smime.ErrLimit) {
			t.Errorf("Sign(%s): %v does not wrap ErrLimit", c.Name, err)
		}
	}
}

// TestSignAtTheLimit: a message that nests as deep as the limit allows can
// be encrypted, and signed opaque, but not signed detached, which would
// nest it one level deeper; one level less can be signed then encrypted.
func TestSignAtTheLimit(t *testing.T) {
	p := newPKI(t)
	id := identity(p.alice)
	full, less := hostile.Nested(smime.DefaultLimits.MaxDepth), hostile.Nested(smime.DefaultLimits.MaxDepth-1)
	if _, err := smime.Encrypt(full, []*x509.Certificate{p.bob.Cert}, nil); err != nil {
		t.Errorf("Encrypt(%d levels): %v", smime.DefaultLimits.MaxDepth, err)
	}
	if _, err := smime.Sign(full, id, &smime.SignOptions{Opaque: true}); err != nil {
		t.Errorf("Sign(%d levels, opaque): %v", smime.DefaultLimits.MaxDepth, err)
	}
	_, err := smime.Sign(full, id, nil)
	if le, ok := errors.AsType[*smime.LimitError](err); !ok || le.Bound != smime.BoundDepth || le.Limit != smime.DefaultLimits.MaxDepth {
		t.Errorf("Sign(%d levels) = %v, want the depth limit", smime.DefaultLimits.MaxDepth, err)
	}
	signed, err := smime.Sign(less, id, nil)
	if err != nil {
		t.Fatalf("Sign(%d levels): %v", smime.DefaultLimits.MaxDepth-1, err)
	}
	if _, err := smime.Encrypt(signed, []*x509.Certificate{p.bob.Cert}, nil); err != nil {
		t.Errorf("Encrypt(Sign(%d levels)): %v", smime.DefaultLimits.MaxDepth-1, err)
	}
	// The From address is mallory's, so the signature is a mismatch, checked.
	if o, err := smime.Open(signed, &smime.OpenOptions{Verify: p.verifyOpts()}); err != nil || o.Limit != nil || o.Signatures[0].Status != smime.StatusAddressMismatch {
		t.Errorf("Open(Sign(%d levels)) = %v, limit %v, %v", smime.DefaultLimits.MaxDepth-1, err, o.Limit, o.Signatures[0].Status)
	}
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestOpenLinear: opening twice the nesting costs about twice the memory,
// not four times (issue 9, point 2). Time is measured by BenchmarkOpenNested.
func TestOpenLinear(t *testing.T) {
	p := newPKI(t)
	opts := &smime.OpenOptions{Verify: p.verifyOpts()}
	for _, gen := range []func(int) []byte{hostile.SignedNested, hostile.Nested, hostile.NestedMessages} {
		small, large := gen(10000), gen(20000)
		a := allocated(func() { _, _ = smime.Open(small, opts) })
		b := allocated(func() { _, _ = smime.Open(large, opts) })
		t.Logf("%.40q: %d bytes allocated for 10,000 levels, %d for 20,000 (x%.2f)", small[len(small)-40:], a, b, float64(b)/float64(a))
		if float64(b) > 2.5*float64(a) {
			t.Errorf("twice the levels allocate x%.2f", float64(b)/float64(a))
		}
	}
}

// rfc822Chain is a message holding a message/rfc822 levels deep, the
// innermost one an 8-bit text of size bytes.
func rfc822Chain(levels, size int) []byte {
	var b strings.Builder
	b.WriteString("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: chain\r\nMIME-Version: 1.0\r\n")
	for range levels - 1 {
		b.WriteString("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n")
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	line := "Gr\u00fc\u00dfe aus K\u00f6ln, again and again.\r\n"
	b.WriteString(strings.Repeat(line, size/len(line)))
	return []byte(b.String())
}

// TestSignLinear: signing a deep message copies its content once, not once
// per level: memory follows the size, not size times depth.
func TestSignLinear(t *testing.T) {
	p := newPKI(t)
	id := identity(p.alice)
	sign := func(msg []byte) uint64 {
		return allocated(func() {
			if _, err := smime.Sign(msg, id, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
	shallow, deep, big := sign(rfc822Chain(2, 1<<20)), sign(rfc822Chain(99, 1<<20)), sign(rfc822Chain(99, 2<<20))
	t.Logf("1 MiB at 2 levels: %d bytes allocated; at 99 levels: %d; 2 MiB at 99 levels: %d", shallow, deep, big)
	if float64(deep) > 1.5*float64(shallow) {
		t.Errorf("99 levels allocate x%.2f what 2 levels do", float64(deep)/float64(shallow))
	}
	if float64(big) > 2.5*float64(deep) {
		t.Errorf("twice the content allocates x%.2f", float64(big)/float64(deep))
	}
}

// BenchmarkOpenNested opens a multipart/signed with a junk signature whose
// signed part nests 1,000 to 100,000 levels deep: the time per byte stays
// the same (issue 9 measured 14-16 s of CPU for 10,000 levels before).
func BenchmarkOpenNested(b *testing.B) {
	p := newPKI(b)
	opts := &smime.OpenOptions{Verify: p.verifyOpts()}
	for _, levels := range []int{1000, 10000, 100000} {
		msg := hostile.SignedNested(levels)
		b.Run(fmt.Sprintf("%dk", levels/1000), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				o, err := smime.Open(msg, opts)
				if err != nil || len(o.Signatures) != 1 {
					b.Fatalf("Open: %v %+v", err, o)
				}
			}
		})
	}
}

// BenchmarkWalk reads the structure of the same messages.
func BenchmarkWalk(b *testing.B) {
	for _, levels := range []int{1000, 10000, 100000} {
		msg := hostile.SignedNested(levels)
		b.Run(fmt.Sprintf("%dk", levels/1000), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				smime.Walk(msg, nil)
			}
		})
	}
}
