package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"smimeproxy/config"
)

// upstream is how to reach one real server.
type upstream struct {
	addr    string
	mode    config.TLSMode
	tls     *tls.Config
	timeout time.Duration // for the dial and the TLS handshake
	dialer  net.Dialer
}

func newUpstream(up config.Upstream, connectTimeout time.Duration) (*upstream, error) {
	conf, err := clientTLSConfig(up)
	if err != nil {
		return nil, err
	}
	return &upstream{addr: up.Addr, mode: up.TLS, tls: conf, timeout: connectTimeout}, nil
}

// dial connects to the upstream; with implicit TLS the connection it returns
// has completed a verified handshake. STARTTLS is left to the protocol.
func (u *upstream) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	conn, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to upstream %s: %w", u.addr, err)
	}
	if u.mode != config.TLSImplicit {
		return conn, nil
	}
	tc := tls.Client(conn, u.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS with upstream %s: %w", u.addr, err)
	}
	return tc, nil
}
