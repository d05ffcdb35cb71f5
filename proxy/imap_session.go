package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
)

// idlePollInterval is how often an IDLE client's upstream is asked for news
// with NOOP when the upstream has no IDLE of its own.
var idlePollInterval = 30 * time.Second

// relayedCaps are the post-login extensions the proxy passes on: it offers
// each one only when the client's upstream announced it after login.
var relayedCaps = []imap.Cap{
	imap.CapUIDPlus, imap.CapMove, imap.CapListExtended, imap.CapListStatus,
	imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapChildren, imap.CapBinary,
	imap.CapStatusSize, imap.CapLiteralPlus,
}

// emulatedCaps are the post-login extensions the proxy serves itself when
// the upstream lacks them.
var emulatedCaps = []imap.Cap{imap.CapNamespace, imap.CapESearch}

// imapSession is one client connection. It implements go-imap's Session
// and the optional SessionNamespace and SessionMove.
type imapSession struct {
	srv     *IMAP
	opts    Options // as they were when the client connected
	upCfg   *Upstream
	gen     uint64 // of the options
	conn    *imapserver.Conn
	caps    imap.CapSet // this connection's offer, completed at login
	one     *oneConnListener
	log     *slog.Logger
	metrics *Metrics
	view    *mailboxView

	ctx    context.Context // ends with the session
	cancel context.CancelFunc
	done   chan struct{}

	up   atomic.Pointer[imapUpstream] // nil until login
	user string
	mbox *selectedMailbox // nil unless a mailbox is selected

	relayed atomic.Bool // the command being answered went upstream
	closing atomic.Bool // the end is ours: no BYE for a lost upstream
}

type selectedMailbox struct {
	name        string
	uidValidity uint32
	readOnly    bool
}

var (
	_ imapserver.SessionNamespace = (*imapSession)(nil)
	_ imapserver.SessionMove      = (*imapSession)(nil)
)

func (s *IMAP) newSession(c *imapserver.Conn, opts Options, up *Upstream, gen uint64, caps imap.CapSet, one *oneConnListener) (*imapSession, error) {
	ctx, cancel := context.WithCancel(context.Background())
	sess := &imapSession{
		srv: s, opts: opts, upCfg: up, gen: gen, conn: c, caps: caps, one: one,
		log:     opts.Logger.With("proto", "imap", "session", newSessionID(), "remote", c.NetConn().RemoteAddr().String()),
		metrics: opts.Metrics,
		view:    newMailboxView(),
		ctx:     ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	if err := s.addSession(sess); err != nil {
		cancel()
		return nil, err
	}
	sess.metrics.Sessions.WithLabelValues("imap").Inc()
	sess.metrics.SessionsOpen.WithLabelValues("imap").Inc()
	sess.log.Debug("IMAP session opened")
	return sess, nil
}

func newSessionID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *imapSession) timeouts() (command, data time.Duration) {
	t := s.opts.Config.IMAP.Timeouts
	return t.Command.D(), t.Data.D()
}

// finish counts a client command and turns its error into the client's
// answer (see imap_errors.go), logging what the client is not told.
func (s *imapSession) finish(name string, errp *error) {
	err := *errp
	s.metrics.IMAPCommands.WithLabelValues(name, commandResult(err)).Inc()
	if err == nil {
		return
	}
	// No Poll follows a failed command: the next one must not take this
	// one's exchange with the upstream for its own.
	s.relayed.Store(false)
	ce := clientError(err)
	if _, upstreamAnswer := errors.AsType[*imap.Error](err); !upstreamAnswer {
		s.log.Warn("IMAP command failed", "command", name, "err", err)
	}
	*errp = ce
}

// do runs one exchange with the upstream. A watchdog closes the upstream
// connection when the exchange makes no progress for timeout; f calls
// progress to show it does (one per message of a FETCH, say).
func (s *imapSession) do(op string, timeout time.Duration, f func(up *imapUpstream, progress func()) error) error {
	up := s.up.Load()
	if up == nil {
		return errUpstreamLost
	}
	s.relayed.Store(true)
	start := time.Now()
	var fired atomic.Bool
	t := time.AfterFunc(timeout, func() {
		fired.Store(true)
		up.conn.Close()
	})
	err := f(up, func() { t.Reset(timeout) })
	t.Stop()
	s.metrics.UpstreamSeconds.WithLabelValues("imap", op).Observe(time.Since(start).Seconds())
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*imap.Error](err); ok && !fired.Load() {
		return err
	}
	s.metrics.UpstreamErrors.WithLabelValues("imap", "command").Inc()
	if fired.Load() {
		err = errors.Join(os.ErrDeadlineExceeded, err)
	}
	return fmt.Errorf("imap: upstream %s: %w", op, err)
}

// Login passes the credentials on: the session exists only when the
// upstream accepts them. The password is not kept.
func (s *imapSession) Login(username, password string) (err error) {
	defer s.finish("LOGIN", &err)
	start := time.Now()
	up, err := dialIMAP(s.ctx, s.upCfg, s.view.handler())
	s.metrics.UpstreamSeconds.WithLabelValues("imap", "connect").Observe(time.Since(start).Seconds())
	if err != nil {
		stage := "connect"
		if de, ok := errors.AsType[*dialError](err); ok && (de.stage == "tls" || de.stage == "starttls") {
			stage = "tls"
		}
		s.metrics.UpstreamErrors.WithLabelValues("imap", stage).Inc()
		return err
	}
	command, _ := s.timeouts()
	start = time.Now()
	t := time.AfterFunc(command, func() { up.conn.Close() })
	err = up.login(username, password)
	timedOut := !t.Stop()
	s.metrics.UpstreamSeconds.WithLabelValues("imap", "auth").Observe(time.Since(start).Seconds())
	if err != nil {
		up.client.Close()
		if _, refused := errors.AsType[*imap.Error](err); refused && !timedOut {
			s.metrics.AuthFailures.WithLabelValues("imap").Inc()
			s.log.Info("IMAP login refused by the upstream", "login", username)
			return err
		}
		s.metrics.UpstreamErrors.WithLabelValues("imap", "auth").Inc()
		if timedOut {
			err = errors.Join(os.ErrDeadlineExceeded, err)
		}
		return fmt.Errorf("imap: upstream login: %w", err)
	}
	// imapclient asks again for the capabilities that LOGIN changed.
	caps := up.client.Caps()
	if caps == nil {
		up.client.Close()
		return &dialError{stage: "capability", err: errors.New("no CAPABILITY answer after login")}
	}
	up.caps = caps
	// This connection's go-imap server reads its capability set only from
	// the goroutine running this command, and only after it returns: the
	// set can grow here to what this upstream offers.
	for _, c := range relayedCaps {
		if caps.Has(c) {
			s.caps[c] = struct{}{}
		}
	}
	for _, c := range emulatedCaps {
		s.caps[c] = struct{}{}
	}
	s.user = username
	s.log = s.log.With("user", username)
	s.up.Store(up)
	s.srv.wg.Add(1)
	go s.watch(up)
	s.log.Info("IMAP login")
	return nil
}

// watch says BYE to the client when the upstream connection ends under it,
// so that a client never waits on a connection that can no longer answer.
func (s *imapSession) watch(up *imapUpstream) {
	defer s.srv.wg.Done()
	select {
	case <-up.client.Closed():
	case <-s.done:
		return
	}
	if s.closing.Load() {
		return
	}
	s.metrics.UpstreamErrors.WithLabelValues("imap", "command").Inc()
	s.log.Warn("IMAP upstream connection lost; ending the session")
	s.conn.Bye("Connection to the mail server lost")
}

// Close ends the session: imapserver calls it when the client connection
// ends, whichever side ended it.
func (s *imapSession) Close() error {
	s.closing.Store(true)
	s.cancel()
	close(s.done)
	if up := s.up.Load(); up != nil {
		up.logout(s.upCfg.timeout)
	}
	s.one.Close()
	s.metrics.SessionsOpen.WithLabelValues("imap").Dec()
	s.log.Debug("IMAP session closed")
	s.srv.removeSession(s)
	return nil
}

// shutdown says BYE for a server shutdown; when ctx ends first the
// connections are closed.
func (s *imapSession) shutdown(ctx context.Context) {
	s.closing.Store(true)
	s.cancel() // a login still dialing the upstream gives up
	done := make(chan struct{})
	go func() {
		s.conn.Bye("Server shutting down")
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.kill()
	<-done
}

// kill closes both connections at once.
func (s *imapSession) kill() {
	s.closing.Store(true)
	s.conn.NetConn().Close()
	if up := s.up.Load(); up != nil {
		up.conn.Close()
	}
}

// abandon ends an upstream command whose literal could not be read or
// passed on. The upstream connection goes, and imapclient's reader is let
// finish before the command is drained: until then both would read the
// connection.
func (s *imapSession) abandon(up *imapUpstream, cmd interface{ Close() error }) {
	up.conn.Close()
	select {
	case <-up.client.Closed():
	case <-time.After(s.upCfg.timeout):
	}
	cmd.Close()
}

// fatal ends the client connection at once, for a failure in the middle of
// a response, where nothing more can be written that the client would
// understand.
func (s *imapSession) fatal(err error) error {
	s.log.Warn("IMAP response cut short; closing the connection", "err", err)
	s.kill()
	return err
}

func (s *imapSession) Select(mailbox string, options *imap.SelectOptions) (data *imap.SelectData, err error) {
	name := "SELECT"
	if options.ReadOnly {
		name = "EXAMINE"
	}
	defer s.finish(name, &err)
	// Updates from here on belong to the mailbox being left.
	s.view.reset(false, 0)
	s.mbox = nil
	command, _ := s.timeouts()
	err = s.do(name, command, func(up *imapUpstream, _ func()) (err error) {
		data, err = up.client.Select(mailbox, &imap.SelectOptions{ReadOnly: options.ReadOnly}).Wait()
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mbox = &selectedMailbox{name: mailbox, uidValidity: data.UIDValidity, readOnly: options.ReadOnly}
	s.view.reset(true, data.NumMessages)
	s.relayed.Store(false) // imapserver does not Poll after SELECT
	return data, nil
}

// Unselect leaves the mailbox without expunging. Without UNSELECT upstream,
// EXAMINE makes the mailbox read-only, so that CLOSE expunges nothing.
func (s *imapSession) Unselect() (err error) {
	defer s.finish("UNSELECT", &err)
	s.view.reset(false, 0)
	readOnly := s.mbox != nil && s.mbox.readOnly
	name := ""
	if s.mbox != nil {
		name = s.mbox.name
	}
	s.mbox = nil
	command, _ := s.timeouts()
	return s.do("UNSELECT", command, func(up *imapUpstream, _ func()) error {
		if up.caps.Has(imap.CapUnselect) {
			return up.client.Unselect().Wait()
		}
		if !readOnly {
			if _, err := up.client.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
				return err
			}
		}
		return up.client.UnselectAndExpunge().Wait()
	})
}

func (s *imapSession) simple(name string, f func(up *imapUpstream) error) (err error) {
	defer s.finish(name, &err)
	command, _ := s.timeouts()
	return s.do(name, command, func(up *imapUpstream, _ func()) error { return f(up) })
}

func (s *imapSession) Create(mailbox string, options *imap.CreateOptions) error {
	return s.simple("CREATE", func(up *imapUpstream) error { return up.client.Create(mailbox, options).Wait() })
}

func (s *imapSession) Delete(mailbox string) error {
	return s.simple("DELETE", func(up *imapUpstream) error { return up.client.Delete(mailbox).Wait() })
}

func (s *imapSession) Rename(mailbox, newName string, options *imap.RenameOptions) error {
	return s.simple("RENAME", func(up *imapUpstream) error { return up.client.Rename(mailbox, newName, options).Wait() })
}

func (s *imapSession) Subscribe(mailbox string) error {
	return s.simple("SUBSCRIBE", func(up *imapUpstream) error { return up.client.Subscribe(mailbox).Wait() })
}

func (s *imapSession) Unsubscribe(mailbox string) error {
	return s.simple("UNSUBSCRIBE", func(up *imapUpstream) error { return up.client.Unsubscribe(mailbox).Wait() })
}

// List relays LIST and LSUB. go-imap's client takes one pattern per
// command, so several patterns (LIST-EXTENDED) are several commands, each
// mailbox written once. LSUB reaches here as LIST (SUBSCRIBED), which the
// upstream must support.
func (s *imapSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) (err error) {
	defer s.finish("LIST", &err)
	if len(patterns) == 0 {
		// LIST "" "" asks for the hierarchy delimiter.
		patterns = []string{""}
	}
	extended := options != nil && (options.SelectSubscribed || options.SelectRemote || options.SelectRecursiveMatch ||
		options.SelectSpecialUse || options.ReturnSubscribed || options.ReturnChildren || options.ReturnSpecialUse ||
		options.ReturnStatus != nil)
	command, _ := s.timeouts()
	seen := map[string]bool{}
	for _, pattern := range patterns {
		err := s.do("LIST", command, func(up *imapUpstream, progress func()) error {
			if extended && !up.caps.Has(imap.CapListExtended) {
				return &errNotSupported{what: "LSUB or extended LIST"}
			}
			var opts *imap.ListOptions
			if extended {
				o := *options
				if o.ReturnStatus != nil {
					o.ReturnStatus = upstreamStatus(o.ReturnStatus)
				}
				opts = &o
			}
			cmd := up.client.List(ref, pattern, opts)
			for data := cmd.Next(); data != nil; data = cmd.Next() {
				progress()
				if seen[data.Mailbox] {
					continue
				}
				seen[data.Mailbox] = true
				if data.Status != nil && options.ReturnStatus != nil {
					fillStatus(data.Status, options.ReturnStatus)
				}
				if err := w.WriteList(data); err != nil {
					cmd.Close()
					return err
				}
			}
			return cmd.Close()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// upstreamStatus is what the upstream is asked for: all the client asked,
// but RECENT, which go-imap's client cannot ask (it panics).
func upstreamStatus(o *imap.StatusOptions) *imap.StatusOptions {
	c := *o
	c.NumRecent = false
	return &c
}

// fillStatus gives every item the client asked for a value: go-imap's
// server writes them all and cannot write a missing one. RECENT is one the
// upstream is never asked for (go-imap's client cannot), and is 0.
func fillStatus(d *imap.StatusData, o *imap.StatusOptions) {
	zero32 := func(p **uint32) {
		if *p == nil {
			*p = new(uint32)
		}
	}
	zero64 := func(p **int64) {
		if *p == nil {
			*p = new(int64)
		}
	}
	if o.NumMessages {
		zero32(&d.NumMessages)
	}
	if o.NumRecent {
		zero32(&d.NumRecent)
	}
	if o.NumUnseen {
		zero32(&d.NumUnseen)
	}
	if o.NumDeleted {
		zero32(&d.NumDeleted)
	}
	if o.Size {
		zero64(&d.Size)
	}
	if o.DeletedStorage {
		zero64(&d.DeletedStorage)
	}
}

func (s *imapSession) Status(mailbox string, options *imap.StatusOptions) (data *imap.StatusData, err error) {
	err = s.simple("STATUS", func(up *imapUpstream) (err error) {
		data, err = up.client.Status(mailbox, upstreamStatus(options)).Wait()
		return err
	})
	if err != nil {
		return nil, err
	}
	fillStatus(data, options)
	return data, nil
}

// Append streams the client's literal to the upstream; the message is
// stored exactly as the client sent it.
func (s *imapSession) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (data *imap.AppendData, err error) {
	defer s.finish("APPEND", &err)
	_, dataTimeout := s.timeouts()
	err = s.do("APPEND", dataTimeout, func(up *imapUpstream, progress func()) error {
		cmd := up.client.Append(mailbox, r.Size(), options)
		cr := &countingReader{r: r}
		_, copyErr := io.Copy(progressWriter{cmd, progress}, cr)
		if cr.err != nil || (copyErr == nil && cr.n != r.Size()) {
			// The client's literal broke off: the upstream waits for the
			// rest, and only closing its connection ends that.
			up.conn.Close()
			cmd.Close()
			return fmt.Errorf("imap: APPEND literal from the client cut at %d of %d bytes: %v", cr.n, r.Size(), cr.err)
		}
		// A write error is the upstream refusing before the literal (its NO
		// comes with Wait) or the connection failing.
		closeErr := cmd.Close()
		d, err := cmd.Wait()
		if err != nil {
			return err
		}
		if copyErr != nil {
			return copyErr
		}
		if closeErr != nil {
			return closeErr
		}
		if d.UID != 0 {
			data = d
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// countingReader counts what it reads and keeps the error, other than EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

type progressWriter struct {
	w        io.Writer
	progress func()
}

func (p progressWriter) Write(b []byte) (int, error) {
	p.progress()
	return p.w.Write(b)
}

// Namespace relays NAMESPACE, or answers it from the hierarchy delimiter
// when the upstream lacks it: one personal namespace at the root.
func (s *imapSession) Namespace() (data *imap.NamespaceData, err error) {
	err = s.simple("NAMESPACE", func(up *imapUpstream) error {
		if up.caps.Has(imap.CapNamespace) {
			var err error
			data, err = up.client.Namespace().Wait()
			return err
		}
		l, err := up.client.List("", "", nil).Collect()
		if err != nil {
			return err
		}
		var delim rune
		if len(l) > 0 {
			delim = l[0].Delim
		}
		data = &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}
		return nil
	})
	return data, err
}

// Poll writes the upstream's news. Commands that imapserver answers alone
// (NOOP, CHECK, CAPABILITY, ENABLE) never reached the upstream, which is
// then asked with NOOP.
func (s *imapSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.up.Load() == nil {
		return nil
	}
	if !s.relayed.Load() {
		command, _ := s.timeouts()
		err := s.do("NOOP", command, func(up *imapUpstream, _ func()) error { return up.client.Noop().Wait() })
		s.metrics.IMAPCommands.WithLabelValues("NOOP", commandResult(err)).Inc()
		if err != nil {
			// The watcher says BYE if the upstream is gone; a refused
			// NOOP only means there is no news.
			s.log.Debug("IMAP upstream NOOP failed", "err", err)
		}
	}
	s.relayed.Store(false)
	return s.flushUpdates(w, allowExpunge)
}

func (s *imapSession) flushUpdates(w updateWriter, allowExpunge bool) error {
	ok, err := s.view.flush(w, allowExpunge)
	if !ok {
		s.log.Warn("IMAP upstream's mailbox updates do not add up; ending the session")
		s.conn.Bye("Mailbox state lost; please reconnect")
		return errors.New("imap: mailbox updates inconsistent")
	}
	return err
}

// Idle relays IDLE: news from the upstream reaches the client as it comes.
// Without IDLE upstream, the upstream is asked with NOOP every
// idlePollInterval.
func (s *imapSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) (err error) {
	defer s.finish("IDLE", &err)
	if err := s.flushUpdates(w, true); err != nil {
		return err
	}
	up := s.up.Load()
	if up == nil {
		return errUpstreamLost
	}
	if !up.caps.Has(imap.CapIdle) {
		return s.idlePoll(w, stop)
	}
	command, _ := s.timeouts()
	var cmd interface {
		Close() error
		Wait() error
	}
	err = s.do("IDLE", command, func(up *imapUpstream, _ func()) error {
		c, err := up.client.Idle()
		cmd = c
		return err
	})
	if err != nil {
		return err
	}
	for {
		select {
		case <-s.view.notify:
			if err := s.flushUpdates(w, true); err != nil {
				cmd.Close()
				return err
			}
		case <-up.client.Closed():
			return errUpstreamLost
		case <-stop:
			err := s.do("DONE", command, func(*imapUpstream, func()) error {
				if err := cmd.Close(); err != nil {
					return err
				}
				return cmd.Wait()
			})
			if err != nil {
				return err
			}
			return s.flushUpdates(w, true)
		}
	}
}

func (s *imapSession) idlePoll(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	t := time.NewTicker(idlePollInterval)
	defer t.Stop()
	command, _ := s.timeouts()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
			err := s.do("NOOP", command, func(up *imapUpstream, _ func()) error { return up.client.Noop().Wait() })
			if err != nil {
				return err
			}
			if err := s.flushUpdates(w, true); err != nil {
				return err
			}
		}
	}
}

// Expunge relays EXPUNGE and UID EXPUNGE; the expunged messages reach the
// client, in order with the rest of the upstream's news, after the command.
// A read-only mailbox expunges nothing, which is also what CLOSE of an
// EXAMINEd mailbox (which reaches here) must do.
func (s *imapSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) (err error) {
	defer s.finish("EXPUNGE", &err)
	if s.mbox != nil && s.mbox.readOnly && uids == nil {
		return nil
	}
	command, _ := s.timeouts()
	return s.do("EXPUNGE", command, func(up *imapUpstream, progress func()) error {
		if uids != nil && !up.caps.Has(imap.CapUIDPlus) {
			return &errNotSupported{what: "UID EXPUNGE"}
		}
		var cmd *imapclient.ExpungeCommand
		if uids != nil {
			cmd = up.client.UIDExpunge(*uids)
		} else {
			cmd = up.client.Expunge()
		}
		for seq := cmd.Next(); seq != 0; seq = cmd.Next() {
			progress()
			s.view.push(update{kind: updateExpunge, num: seq})
		}
		return cmd.Close()
	})
}

// translate maps the client's message numbers to the upstream's. UIDs need
// nothing; sequence numbers move across the expunges the client has not
// been told of yet.
func (s *imapSession) translate(set imap.NumSet) (imap.NumSet, bool) {
	seqs, ok := set.(imap.SeqSet)
	if !ok {
		return set, true
	}
	return s.view.seqSetToUpstream(seqs)
}

// errExpungeIssued answers a command whose messages were all expunged by
// someone else in the meantime (RFC 5530).
var errExpungeIssued = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "EXPUNGEISSUED",
	Text: "The messages were expunged in the meantime"}

// Search relays SEARCH. The upstream always gets a plain SEARCH: ESEARCH's
// MIN, MAX and COUNT are computed here, so they work with any upstream.
func (s *imapSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (data *imap.SearchData, err error) {
	defer s.finish("SEARCH", &err)
	if !s.translateCriteria(criteria) {
		return nil, errExpungeIssued
	}
	command, _ := s.timeouts()
	var res *imap.SearchData
	err = s.do("SEARCH", command, func(up *imapUpstream, _ func()) (err error) {
		if kind == imapserver.NumKindUID {
			res, err = up.client.UIDSearch(criteria, nil).Wait()
		} else {
			res, err = up.client.Search(criteria, nil).Wait()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.searchResult(kind, res), nil
}

func (s *imapSession) searchResult(kind imapserver.NumKind, res *imap.SearchData) *imap.SearchData {
	out := &imap.SearchData{}
	var nums []uint32
	switch all := res.All.(type) {
	case imap.SeqSet:
		l, _ := all.Nums()
		var set imap.SeqSet
		for _, n := range l {
			if c := s.view.toClient(n); c != 0 {
				set.AddNum(c)
				nums = append(nums, c)
			}
		}
		out.All = set
	case imap.UIDSet:
		l, _ := all.Nums()
		for _, u := range l {
			nums = append(nums, uint32(u))
		}
		out.All = all
	default:
		if kind == imapserver.NumKindUID {
			out.All = imap.UIDSet{}
		} else {
			out.All = imap.SeqSet{}
		}
	}
	for _, n := range nums {
		if out.Min == 0 || n < out.Min {
			out.Min = n
		}
		out.Max = max(out.Max, n)
	}
	out.Count = uint32(len(nums))
	return out
}

// translateCriteria maps the sequence sets in c, at every depth. It
// reports false when a set names only messages that are gone.
func (s *imapSession) translateCriteria(c *imap.SearchCriteria) bool {
	for i, set := range c.SeqNum {
		t, ok := s.view.seqSetToUpstream(set)
		if !ok {
			return false
		}
		c.SeqNum[i] = t
	}
	for i := range c.Not {
		if !s.translateCriteria(&c.Not[i]) {
			return false
		}
	}
	for i := range c.Or {
		if !s.translateCriteria(&c.Or[i][0]) || !s.translateCriteria(&c.Or[i][1]) {
			return false
		}
	}
	return true
}

// Store relays STORE; the upstream's FETCH answers reach the client.
func (s *imapSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) (err error) {
	defer s.finish("STORE", &err)
	numSet, ok := s.translate(numSet)
	if !ok {
		return errExpungeIssued
	}
	command, _ := s.timeouts()
	return s.do("STORE", command, func(up *imapUpstream, progress func()) error {
		cmd := up.client.Store(numSet, flags, nil)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			progress()
			seq := s.view.toClient(msg.SeqNum)
			if seq == 0 {
				continue
			}
			buf, err := msg.Collect()
			if err != nil {
				s.abandon(up, cmd)
				return err
			}
			rw := w.CreateMessage(seq)
			if buf.UID != 0 {
				rw.WriteUID(buf.UID)
			}
			if buf.Flags != nil {
				rw.WriteFlags(buf.Flags)
			}
			if err := rw.Close(); err != nil {
				cmd.Close()
				return err
			}
		}
		return cmd.Close()
	})
}

func (s *imapSession) Copy(numSet imap.NumSet, dest string) (data *imap.CopyData, err error) {
	defer s.finish("COPY", &err)
	numSet, ok := s.translate(numSet)
	if !ok {
		return nil, errExpungeIssued
	}
	command, _ := s.timeouts()
	err = s.do("COPY", command, func(up *imapUpstream, _ func()) error {
		d, err := up.client.Copy(numSet, dest).Wait()
		if err == nil && d.UIDValidity != 0 {
			data = d
		}
		return err
	})
	return data, err
}

// Move relays MOVE. It is offered only when the upstream has MOVE: go-imap's
// client would otherwise fall back to COPY, STORE and EXPUNGE, and a plain
// EXPUNGE removes every message marked \Deleted, not only those moved.
func (s *imapSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) (err error) {
	defer s.finish("MOVE", &err)
	numSet, ok := s.translate(numSet)
	if !ok {
		return errExpungeIssued
	}
	command, _ := s.timeouts()
	var data *imapclient.MoveData
	err = s.do("MOVE", command, func(up *imapUpstream, _ func()) (err error) {
		if !up.caps.Has(imap.CapMove) {
			return &errNotSupported{what: "MOVE"}
		}
		data, err = up.client.Move(numSet, dest).Wait()
		return err
	})
	if err != nil {
		return err
	}
	// The expunges came as the upstream's news and follow with Poll.
	src, ok1 := data.SourceUIDs.(imap.UIDSet)
	dst, ok2 := data.DestUIDs.(imap.UIDSet)
	if data.UIDValidity != 0 && ok1 && ok2 {
		return w.WriteCopyData(&imap.CopyData{UIDValidity: data.UIDValidity, SourceUIDs: src, DestUIDs: dst})
	}
	return nil
}
