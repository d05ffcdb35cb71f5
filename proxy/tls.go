package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"smimeproxy/config"
)

// Certificate is the listeners' certificate. Reload swaps in a renewed one
// without dropping open sessions: handshakes read it through GetCertificate.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate chain and its key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files; on error the old certificate stays in use.
func (c *Certificate) Reload() error {
	kp, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("proxy: load TLS certificate %s: %w", c.certFile, err)
	}
	c.cur.Store(&kp)
	return nil
}

// serverSuites are the TLS 1.2 cipher suites the listeners accept: ECDHE
// key exchange (forward secrecy) with an AEAD cipher only. Go's default list
// still holds the CBC-SHA suites (no AEAD, Lucky13-prone); every mail client
// that speaks TLS 1.2 also speaks these. TLS 1.3 suites are not configurable
// and all AEAD.
var serverSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig is the TLS configuration for listeners: TLS 1.2 with the
// AEAD ECDHE suites, or TLS 1.3.
func (c *Certificate) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: serverSuites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// Listen opens a listener for l: implicit TLS listeners hand out TLS
// connections, the others plain ones (STARTTLS is the protocol's business).
func Listen(l config.Listener, cert *Certificate) (net.Listener, error) {
	if l.TLS != config.TLSNone && cert == nil {
		return nil, fmt.Errorf("proxy: listener %s needs a TLS certificate (tls.cert_file, tls.key_file)", l.Addr)
	}
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen on %s: %w", l.Addr, err)
	}
	if l.TLS == config.TLSImplicit {
		ln = tls.NewListener(ln, cert.ServerConfig())
	}
	return ln, nil
}

// clientTLSConfig verifies an upstream server: against ca_file when given,
// else the system roots, for server_name or the host of addr.
func clientTLSConfig(up config.Upstream) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(up.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream address %q: %w", up.Addr, err)
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: up.InsecureSkipVerify,
	}
	if up.ServerName != "" {
		conf.ServerName = up.ServerName
	}
	if up.CAFile != "" {
		pem, err := os.ReadFile(up.CAFile)
		if err != nil {
			return nil, fmt.Errorf("proxy: upstream CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("proxy: upstream CA file " + up.CAFile + " holds no PEM certificate")
		}
		conf.RootCAs = pool
	}
	return conf, nil
}
