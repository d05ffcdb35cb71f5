package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"smimeproxy/config"
)

// Upstream is how to reach one real server.
type Upstream struct {
	Addr string
	Mode config.TLSMode
	// TLS verifies the server, for implicit TLS and STARTTLS alike.
	TLS     *tls.Config
	timeout time.Duration // for the dial and the TLS handshake
	dialer  net.Dialer
	// loopbackOnly: tls: none without insecure_plaintext. The name was
	// loopback when the configuration was checked; each dial checks the
	// address it reached, since a name can resolve elsewhere later.
	loopbackOnly bool
}

// NewUpstream prepares the connections to up; nothing is dialed yet.
func NewUpstream(up config.Upstream, connectTimeout time.Duration) (*Upstream, error) {
	conf, err := clientTLSConfig(up)
	if err != nil {
		return nil, err
	}
	return &Upstream{Addr: up.Addr, Mode: up.TLS, TLS: conf, timeout: connectTimeout,
		loopbackOnly: up.TLS == config.TLSNone && !up.InsecurePlaintext}, nil
}

// ConnectTimeout bounds dialing, the TLS handshake and the greeting.
func (u *Upstream) ConnectTimeout() time.Duration { return u.timeout }

// Dial connects to the upstream; with implicit TLS the connection it returns
// has completed a verified handshake. STARTTLS is left to the protocol.
func (u *Upstream) Dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	conn, err := u.dialer.DialContext(ctx, "tcp", u.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to upstream %s: %w", u.Addr, err)
	}
	if remote, ok := conn.RemoteAddr().(*net.TCPAddr); u.loopbackOnly && (!ok || !remote.IP.IsLoopback()) {
		conn.Close()
		return nil, fmt.Errorf("connect to upstream %s: reached %s, which is not loopback, without TLS; use starttls or implicit, or set insecure_plaintext: true", u.Addr, conn.RemoteAddr())
	}
	if u.Mode != config.TLSImplicit {
		return conn, nil
	}
	tc := tls.Client(conn, u.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS with upstream %s: %w", u.Addr, err)
	}
	return tc, nil
}

// CheckEndpoint applies the configuration's rule: plaintext only on
// loopback, unless the configuration says so in so many words.
func CheckEndpoint(addr string, mode config.TLSMode, insecure bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("invalid address %q", addr)
	}
	switch mode {
	case config.TLSStartTLS, config.TLSImplicit:
		return nil
	case config.TLSNone:
		if !insecure && !config.IsLoopback(host) {
			return fmt.Errorf("tls: none on %s needs insecure_plaintext: true", addr)
		}
		return nil
	}
	return fmt.Errorf("invalid tls %q", mode)
}
