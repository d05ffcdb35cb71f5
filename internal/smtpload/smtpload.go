// Package smtpload submits messages over SMTP on many connections at once
// and measures the rate: cmd/smtpload runs it once against the upstream and
// once through the proxy, and the proxy's load test uses it too. Each
// message carries a unique Message-ID, <MARKER.i@smtpload>, so that a test
// can count what was delivered.
package smtpload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options say what to send, where.
type Options struct {
	Addr      string
	TLS       string      // starttls, implicit or none
	TLSConfig *tls.Config // nil: the system roots, for the host of Addr
	// User and Password log in with AUTH PLAIN; no AUTH when User is empty.
	User, Password string
	From           string
	To             []string
	Messages       int           // how many, in all
	Conns          int           // on how many connections at once
	Size           int           // body size in bytes, about
	Marker         string        // unique to the run: in every Message-ID
	Timeout        time.Duration // for each command and each message
	// Done, when set, hears the outcome of each message: nil when the
	// server accepted it. It is called from the sending goroutines.
	Done func(i int, err error)
}

// Result is what a run did.
type Result struct {
	Sent, Failed int
	Elapsed      time.Duration
	// Errs holds the first few failures.
	Errs []error
}

// Rate is messages accepted per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

const keepErrs = 5

// Run sends o.Messages messages on o.Conns connections and waits for every
// reply. A connection that breaks is made again; a refused message counts
// as failed and is not sent again.
func Run(ctx context.Context, o Options) (Result, error) {
	switch {
	case o.Messages < 1 || o.Conns < 1:
		return Result{}, errors.New("smtpload: messages and connections must be at least 1")
	case o.From == "" || len(o.To) == 0:
		return Result{}, errors.New("smtpload: a sender and at least one recipient are needed")
	case o.TLS != "starttls" && o.TLS != "implicit" && o.TLS != "none":
		return Result{}, fmt.Errorf("smtpload: invalid TLS mode %q; options are starttls, implicit, none", o.TLS)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	var (
		next   atomic.Int64
		sent   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		errs   []error
		wg     sync.WaitGroup
	)
	done := func(i int, err error) {
		if o.Done != nil {
			o.Done(i, err)
		}
	}
	fail := func(i int, err error) {
		done(i, err)
		failed.Add(1)
		mu.Lock()
		if len(errs) < keepErrs {
			errs = append(errs, err)
		}
		mu.Unlock()
	}
	start := time.Now()
	for range min(o.Conns, o.Messages) {
		wg.Go(func() {
			var c *smtp.Client
			defer func() {
				if c != nil {
					_ = c.Quit()
				}
			}()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.Messages {
					return
				}
				if c == nil {
					var err error
					if c, err = dial(ctx, o); err != nil {
						fail(i, fmt.Errorf("message %d: %w", i, err))
						continue
					}
				}
				if err := send(c, o, i); err != nil {
					fail(i, fmt.Errorf("message %d: %w", i, err))
					var se *smtp.SMTPError
					if !errors.As(err, &se) || se.Code == 421 {
						c.Close()
						c = nil
					}
					continue
				}
				done(i, nil)
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	r := Result{Sent: int(sent.Load()), Failed: int(failed.Load()), Elapsed: time.Since(start), Errs: errs}
	return r, ctx.Err()
}

// dial connects, says EHLO and logs in.
func dial(ctx context.Context, o Options) (*smtp.Client, error) {
	d := &net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{}
	if o.TLSConfig != nil {
		conf = o.TLSConfig.Clone()
	}
	if conf.ServerName == "" {
		conf.ServerName, _, _ = net.SplitHostPort(o.Addr)
	}
	var c *smtp.Client
	switch o.TLS {
	case "starttls":
		if c, err = smtp.NewClientStartTLS(conn, conf); err != nil {
			conn.Close()
			return nil, err
		}
	case "implicit":
		c = smtp.NewClient(tls.Client(conn, conf))
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout, c.SubmissionTimeout = o.Timeout, o.Timeout
	if err := c.Hello("smtpload"); err != nil {
		c.Close()
		return nil, err
	}
	if o.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", o.User, o.Password)); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func send(c *smtp.Client, o Options, i int) error {
	if err := c.Mail(o.From, nil); err != nil {
		return err
	}
	for _, to := range o.To {
		if err := c.Rcpt(to, nil); err != nil {
			_ = c.Reset()
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(Message(o, i)); err != nil {
		return err
	}
	return w.Close()
}

// MessageID is the Message-ID of message i, without angle brackets.
func MessageID(marker string, i int) string { return fmt.Sprintf("%s.%d@smtpload", marker, i) }

// Message is message i of a run: a text message of about o.Size bytes.
func Message(o Options, i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: %s\r\nSubject: smtpload %s %d\r\n", o.From, "<"+strings.Join(o.To, ">, <")+">", o.Marker, i)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s>\r\n", time.Now().Format(time.RFC1123Z), MessageID(o.Marker, i))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
	for b.Len() < o.Size {
		b.WriteString(line)
	}
	return []byte(b.String())
}
