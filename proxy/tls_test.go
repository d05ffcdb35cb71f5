package proxy_test

import (
	"crypto/tls"
	"net"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/proxy"
)

// serverCert is a listener certificate with a key of the given kind.
func serverCert(t *testing.T, kind string) *proxy.Certificate {
	t.Helper()
	id := testpki.NewCA(t, "tls test root").Issue(t, "server@example.com", &testpki.Options{Key: kind})
	certFile, keyFile, _ := testpki.WriteIdentity(t, t.TempDir(), "server", id)
	c, err := proxy.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake between a client with conf and a server
// with the listeners' configuration, and returns the client's outcome.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Server(a, server).Handshake()
		a.Close()
	}()
	c := tls.Client(b, client)
	err := c.Handshake()
	return c.ConnectionState(), err
}

// TestServerSuites: with TLS 1.2 the listeners accept only ECDHE with an
// AEAD cipher; a client offering only CBC suites is refused.
func TestServerSuites(t *testing.T) {
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	}
	for _, kind := range []string{"p256", "rsa2048"} {
		server := serverCert(t, kind).ServerConfig()
		t.Run(kind, func(t *testing.T) {
			if _, err := handshake(t, server, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: cbc}); err == nil {
				t.Error("TLS 1.2 with only CBC and static-RSA suites offered: handshake succeeded, want it refused")
			}
			st, err := handshake(t, server, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
			if err != nil {
				t.Fatalf("TLS 1.2 with Go's default suites: %v", err)
			}
			if name := tls.CipherSuiteName(st.CipherSuite); !isAEADECDHE(st.CipherSuite) {
				t.Errorf("TLS 1.2 negotiated %s, want an ECDHE AEAD suite", name)
			}
			if st, err := handshake(t, server, &tls.Config{InsecureSkipVerify: true}); err != nil || st.Version != tls.VersionTLS13 {
				t.Errorf("default client: version %x, %v; want TLS 1.3", st.Version, err)
			}
		})
	}
}

func isAEADECDHE(id uint16) bool {
	switch id {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}
