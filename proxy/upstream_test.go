package proxy_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"smimeproxy/config"
	"smimeproxy/proxy"
)

// TestDialPlaintextLoopbackOnly: without TLS the upstream must be on
// loopback when the connection is made, not only when the configuration
// was checked.
func TestDialPlaintextLoopbackOnly(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	external := nonLoopbackIP(t)
	tests := []struct {
		name, host string
		insecure   bool
		wantErr    string
	}{
		{"loopback address", "127.0.0.1", false, ""},
		{"localhost", "localhost", false, ""},
		{"another address", external, false, "not loopback"},
		{"another address with insecure_plaintext", external, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up, err := proxy.NewUpstream(config.Upstream{Addr: net.JoinHostPort(tc.host, port), TLS: config.TLSNone, InsecurePlaintext: tc.insecure}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := up.Dial(context.Background())
			if conn != nil {
				conn.Close()
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Dial(%s) = %v, want error %q", tc.host, err, tc.wantErr)
			}
		})
	}
}

// nonLoopbackIP is an address of this machine that is not loopback.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no IPv4 address other than loopback")
	return ""
}
