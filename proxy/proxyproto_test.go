package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smimeproxy/internal/testutil"
)

// proxyHeaderV2 is what HAProxy's send-proxy-v2 writes for a TCP client.
func proxyHeaderV2(src, dst netip.AddrPort) []byte {
	fam, size := byte(0x11), 4
	if src.Addr().Is6() {
		fam, size = 0x21, 16
	}
	out := append(bytes.Clone(proxySignature), 0x21, fam)
	out = binary.BigEndian.AppendUint16(out, uint16(2*size+4))
	out = append(out, src.Addr().AsSlice()...)
	out = append(out, dst.Addr().AsSlice()...)
	out = binary.BigEndian.AppendUint16(out, src.Port())
	return binary.BigEndian.AppendUint16(out, dst.Port())
}

func seed(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "proxyproto", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestReadProxyHeader(t *testing.T) {
	tests := []struct {
		name      string
		seed      string
		local     bool
		src, dst  string // "" for none
		rest      string // what follows the header, untouched
		errSubstr string
	}{
		{name: "tcp4", seed: "tcp4.bin", src: "203.0.113.7:4242", dst: "127.0.0.1:1579", rest: "EHLO client\r\n"},
		{name: "tcp6", seed: "tcp6.bin", src: "[2001::1]:50000", dst: "[::1]:443"},
		{name: "tlv after the addresses", seed: "tlv.bin", src: "203.0.113.7:4242", dst: "127.0.0.1:1579"},
		{name: "local (health check)", seed: "local.bin", local: true},
		{name: "unix socket", seed: "unix.bin"},
		{name: "version 1 text", seed: "v1-text.bin", errSubstr: "does not begin with a PROXY protocol v2 header"},
		{name: "truncated", seed: "truncated.bin", errSubstr: "PROXY header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(seed(t, tc.seed))
			h, err := ReadProxyHeader(r)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("ReadProxyHeader(%s) = %+v, %v; want an error with %q", tc.seed, h, err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadProxyHeader(%s): %v", tc.seed, err)
			}
			addr := func(a *net.TCPAddr) string {
				if a == nil {
					return ""
				}
				return a.String()
			}
			if h.Local != tc.local || addr(h.Source) != tc.src || addr(h.Dest) != tc.dst {
				t.Errorf("ReadProxyHeader(%s) = local %v, %s -> %s; want local %v, %s -> %s", tc.seed, h.Local, addr(h.Source), addr(h.Dest), tc.local, tc.src, tc.dst)
			}
			if rest, _ := io.ReadAll(r); string(rest) != tc.rest {
				t.Errorf("after the header: %q, want %q untouched", rest, tc.rest)
			}
		})
	}
	bad := seed(t, "tcp4.bin")
	bad[12] = 0x11 // version 1 in binary
	if _, err := ReadProxyHeader(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("binary header of version 1 = %v, want refused", err)
	}
	bad[12] = 0x2f // unknown command
	if _, err := ReadProxyHeader(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("header with an unknown command = %v, want refused", err)
	}
	short := append(bytes.Clone(proxySignature), 0x21, 0x11, 0, 4, 1, 2, 3, 4)
	if _, err := ReadProxyHeader(bytes.NewReader(short)); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("TCP4 header without room for its addresses = %v, want refused", err)
	}
}

// FuzzReadProxyHeader: any input is refused or read to exactly the length
// its header gives, never past it.
func FuzzReadProxyHeader(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "proxyproto", "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadProxyHeader(r)
		if err != nil {
			return
		}
		want := len(data) - 16 - int(binary.BigEndian.Uint16(data[14:16]))
		if r.Len() != want {
			t.Fatalf("%d bytes left after the header, want %d", r.Len(), want)
		}
		if (h.Source == nil) != (h.Dest == nil) || h.Local && h.Source != nil {
			t.Fatalf("inconsistent header %+v", h)
		}
	})
}

// TestProxyProtocolListener: behind the balancer, the server sees the
// client's address; a connection without a header never reaches it, and a
// silent one holds up no other.
func TestProxyProtocolListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var log testutil.Buffer
	ln := ProxyProtocolListener(raw, 500*time.Millisecond, slog.New(slog.NewTextHandler(&log, nil)))
	defer ln.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	silent := dial() // sends nothing: its header never comes
	bad := dial()
	if _, err := bad.Write([]byte("EHLO not a balancer\r\n")); err != nil {
		t.Fatal(err)
	}
	good := dial()
	client := netip.MustParseAddrPort("203.0.113.7:4242")
	if _, err := good.Write(append(proxyHeaderV2(client, netip.MustParseAddrPort("127.0.0.1:587")), "EHLO client\r\n"...)); err != nil {
		t.Fatal(err)
	}

	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != client.String() {
		t.Errorf("RemoteAddr() = %s, want the client's %s", got, client)
	}
	line := make([]byte, len("EHLO client\r\n"))
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "EHLO client\r\n" {
		t.Errorf("after the header the server reads %q, %v; want the client's first line", line, err)
	}
	for name, conn := range map[string]net.Conn{"without a header": bad, "silent": silent} {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 64)); n != 0 || err == nil {
			t.Errorf("the connection %s read %d bytes, %v; want it closed without a word", name, n, err)
		}
	}
	if !strings.Contains(log.String(), "no valid PROXY protocol header") {
		t.Errorf("nothing logged about the refused connections:\n%s", log.String())
	}

	// A health check (LOCAL) keeps the connection's own address.
	hc := dial()
	if _, err := hc.Write(seed(t, "local.bin")); err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, want := c2.RemoteAddr().String(), hc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr() of a LOCAL connection = %s, want the connection's own %s", got, want)
	}

	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}

// TestProxyProtocolListenerClose: Close ends the wait for a pending header
// at once (were it to wait for the hour, the test would time out), and
// closes that connection.
func TestProxyProtocolListenerClose(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := ProxyProtocolListener(raw, time.Hour, nil)
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(proxySignature[:5]); err != nil { // a header begun, never finished
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept waiting during Close = %v, want net.ErrClosed", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the pending connection after Close: read %v, want it closed", err)
	}
}
