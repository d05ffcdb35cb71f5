package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// A load balancer in front of several instances (HAProxy with
// send-proxy-v2) tells each connection's real client in a PROXY protocol
// version 2 header, the first bytes of the connection, so that logs and
// limits see the client rather than the balancer
// (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).

// proxySignature starts every version 2 header.
var proxySignature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Address families and transports, in the header's 14th byte.
const (
	proxyINET   = 0x1
	proxyINET6  = 0x2
	proxyStream = 0x1
)

// DefaultProxyHeaderTimeout bounds the wait for a connection's PROXY header.
const DefaultProxyHeaderTimeout = 10 * time.Second

// ProxyHeader is what a PROXY protocol v2 header says.
type ProxyHeader struct {
	// Local is a connection the balancer made for itself, such as a health
	// check: it carries no client address.
	Local bool
	// Source and Dest are the client's address and the one it connected
	// to, for a TCP connection over IPv4 or IPv6; nil otherwise (LOCAL,
	// UNIX sockets, UDP), when the connection's own addresses stand.
	Source, Dest *net.TCPAddr
}

// ReadProxyHeader reads one PROXY protocol v2 header from r, and not a byte
// after it. Version 1 (text) headers are refused.
func ReadProxyHeader(r io.Reader) (*ProxyHeader, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, fmt.Errorf("proxy: PROXY header: %w", err)
	}
	if !bytes.Equal(fixed[:12], proxySignature) {
		return nil, errors.New("proxy: the connection does not begin with a PROXY protocol v2 header")
	}
	if v := fixed[12] >> 4; v != 2 {
		return nil, fmt.Errorf("proxy: PROXY protocol version %d; only version 2 is supported", v)
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("proxy: PROXY header: %w", err)
	}
	switch cmd := fixed[12] & 0xf; cmd {
	case 0x0:
		return &ProxyHeader{Local: true}, nil
	case 0x1:
	default:
		return nil, fmt.Errorf("proxy: PROXY header with unknown command %#x", cmd)
	}
	family, transport := fixed[13]>>4, fixed[13]&0xf
	h := &ProxyHeader{}
	if transport != proxyStream {
		return h, nil
	}
	var size int
	switch family {
	case proxyINET:
		size = 4
	case proxyINET6:
		size = 16
	default:
		return h, nil
	}
	if len(body) < 2*size+4 {
		return nil, fmt.Errorf("proxy: PROXY header too short for its addresses (%d bytes)", len(body))
	}
	src, _ := netip.AddrFromSlice(body[:size])
	dst, _ := netip.AddrFromSlice(body[size : 2*size])
	ports := body[2*size:]
	h.Source = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(ports)))
	h.Dest = net.TCPAddrFromAddrPort(netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(ports[2:])))
	return h, nil
}

// ProxyProtocolListener wraps ln for a listener behind a load balancer
// that sends PROXY protocol v2 headers (config.Listener.ProxyProtocol).
// Each connection's header is read, within timeout, before Accept returns
// it; its RemoteAddr is then the client's. A connection without a valid
// header is logged and closed, and never reaches the server: so nothing is
// written to it, not even a greeting. The headers are read concurrently,
// so that a slow client holds up no other.
func ProxyProtocolListener(ln net.Listener, timeout time.Duration, log *slog.Logger) net.Listener {
	if timeout <= 0 {
		timeout = DefaultProxyHeaderTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &proxyListener{
		Listener: ln, timeout: timeout, log: log,
		ready: make(chan accepted), done: make(chan struct{}), pending: map[net.Conn]struct{}{},
	}
	l.wg.Add(1)
	go l.loop()
	return l
}

type proxyListener struct {
	net.Listener
	timeout time.Duration
	log     *slog.Logger
	ready   chan accepted
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // reading their header
}

// accepted is a connection ready for the server, or the error Accept returns.
type accepted struct {
	conn net.Conn
	err  error
}

// loop accepts connections and starts reading each one's header. An
// accept error goes to Accept's caller, which decides whether to go on.
func (l *proxyListener) loop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.ready <- accepted{err: err}:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.mu.Lock()
		select {
		case <-l.done: // Close ran since Accept returned: it did not see c
			l.mu.Unlock()
			c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(c)
	}
}

func (l *proxyListener) handshake(c net.Conn) {
	defer l.wg.Done()
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	h, err := ReadProxyHeader(c)
	_ = c.SetReadDeadline(time.Time{})
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		l.log.Warn("connection refused: no valid PROXY protocol header", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	pc := &proxiedConn{Conn: c}
	if h.Source != nil {
		pc.remote, pc.local = h.Source, h.Dest
	}
	select {
	case l.ready <- accepted{conn: pc}:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection whose header was read.
func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.ready:
		return a.conn, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections whose header is still
// awaited.
func (l *proxyListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// proxiedConn is a connection with the addresses its PROXY header gave.
type proxiedConn struct {
	net.Conn
	remote, local net.Addr // nil: the connection's own
}

func (c *proxiedConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *proxiedConn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.Conn.LocalAddr()
}
