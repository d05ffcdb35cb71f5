// Package certcache holds other people's certificates, harvested from signed
// mail or imported, with the intermediates that build their paths and the
// roots a person chose to trust, and picks the certificate to encrypt to.
//
// The cache is a set of small documents (package storage), named by the
// certificate's SHA-256 fingerprint, in a directory (0700) of 0600 files by
// default or in a PostgreSQL database shared by several instances:
//
//	certs/<fingerprint>.json          a certificate with its metadata
//	intermediates/<fingerprint>.pem   CA certificates for path building, never trusted
//	anchors/<fingerprint>.pem         roots a person chose to trust
//	status/<fingerprint>.json         the last revocation check of a certificate
//
// Each write is atomic (in a directory: temporary file, fsync, rename,
// fsync of the directory; in a database: a transaction). An in-memory
// index, loaded at Open, serves lookups; changes another process makes are
// picked up when the store says it changed, re-parsing only what did.
package certcache

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/recheck"
	"smimeproxy/storage"
)

// Source says how a certificate got here.
type Source string

const (
	SourceHarvested Source = "harvested" // from a signed message whose signature and chain verified
	SourceImported  Source = "imported"  // from a file, by a person
	SourceDirectory Source = "directory" // from a directory (LDAP) for one lookup; never stored
)

// DefaultRecheckInterval is how often reads look for changes made by another
// process, by default.
const DefaultRecheckInterval = time.Second

// Layout is a certificate cache directory's. Writers take the lock file
// .lock, so that the CLI and a running proxy that harvests the same
// certificate at once keep both updates.
var Layout = storage.Layout{
	Dirs: map[string]func(string) bool{
		certsDir:  fingerprintFile(".json"),
		interDir:  fingerprintFile(".pem"),
		anchorDir: fingerprintFile(".pem"),
		statusDir: fingerprintFile(".json"),
	},
	Lock: true,
}

// fingerprintFile matches the names of one kind of document: a fingerprint
// in lower-case hex with ext.
func fingerprintFile(ext string) func(string) bool {
	return func(name string) bool {
		fp, ok := strings.CutSuffix(name, ext)
		n, valid := normalizeFingerprint(fp)
		return ok && valid && n == fp
	}
}

// Options tune a Cache; nil means the defaults.
type Options struct {
	// NoSystemRoots leaves the system's root CAs out: only the anchors are
	// trusted. By default both are.
	NoSystemRoots bool
	// Now is the clock for Lookup and ForAddress; nil: time.Now.
	Now func() time.Time
	// RecheckInterval is how often reads look for changes another process
	// made (storage.Docs.Changed); zero: DefaultRecheckInterval; negative:
	// never (call Reload).
	RecheckInterval time.Duration
}

// Entry is one stored certificate of someone else.
type Entry struct {
	Cert        *x509.Certificate
	Fingerprint string   // SHA-256 of the DER, lower-case hex
	Addresses   []string // lower case: subjectAltName rfc822Names and the subject's emailAddress
	Source      Source   // SourceImported once a person imported it, even if also harvested
	Added       time.Time
	// Harvested is the signing time of the newest message it came from;
	// zero when never harvested. Capabilities and EncryptionKeyPreference
	// come from that message.
	Harvested    time.Time
	Capabilities []cms.Capability
	// EncryptionKeyPreference: the sender's signature named this certificate
	// (SMIMEEncryptionKeyPreference) as the one to encrypt to.
	EncryptionKeyPreference bool
}

func newEntry(c *x509.Certificate) *Entry {
	return &Entry{Cert: c, Fingerprint: Fingerprint(c), Addresses: certAddresses(c)}
}

func (e *Entry) clone() *Entry {
	c := *e
	c.Addresses = slices.Clone(e.Addresses)
	c.Capabilities = slices.Clone(e.Capabilities)
	return &c
}

// Cache is a certificate cache. It is safe for concurrent use.
type Cache struct {
	docs    storage.Docs
	dir     string // when docs is a directory
	now     func() time.Time
	recheck *recheck.Throttle
	sys     *x509.CertPool // nil with NoSystemRoots

	writeMu sync.Mutex // serializes this process's writers

	mu  sync.RWMutex
	st  *state
	gen uint64 // see Generation
}

// state is the index of the store at one moment.
type state struct {
	snap    *storage.Snapshot // stamps only
	files   map[string]fileRec
	certs   map[string]*Entry // by fingerprint
	byAddr  map[string][]*Entry
	anchors map[string]*x509.Certificate
	inters  map[string]*x509.Certificate
	roots   *x509.CertPool
	pool    *x509.CertPool // intermediates
	// statuses are the revocation checks, by fingerprint.
	statuses map[string]*Status
	// valid holds the paths that validated, by fingerprint (see
	// state.check); a new state starts without them.
	valid sync.Map
}

// fileRec is one document as parsed, for incremental rescans.
type fileRec struct {
	stamp  string
	cert   *x509.Certificate // for anchors and intermediates
	e      *Entry            // for certs
	status *Status           // for statuses
}

// Open opens the cache in dir, creating it if needed.
func Open(dir string, opts *Options) (*Cache, error) {
	d := storage.OpenDir(dir, Layout)
	if err := d.Init(); err != nil {
		return nil, fmt.Errorf("certcache: %w", err)
	}
	return OpenDocs(d, opts)
}

// OpenDocs is Open for any store, such as a database (see package storage).
func OpenDocs(docs storage.Docs, opts *Options) (*Cache, error) {
	c := &Cache{docs: docs, now: time.Now}
	if d, ok := docs.(*storage.Dir); ok {
		c.dir = d.Path()
	}
	every := DefaultRecheckInterval
	if opts == nil || !opts.NoSystemRoots {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("certcache: system roots: %w", err)
		}
		c.sys = sys
	}
	if opts != nil {
		if opts.Now != nil {
			c.now = opts.Now
		}
		if opts.RecheckInterval != 0 {
			every = opts.RecheckInterval
		}
	}
	c.recheck = recheck.NewThrottle(every)
	st, err := c.scan(nil)
	if err != nil {
		return nil, err
	}
	c.st = st
	c.gen = 1
	return c, nil
}

// scan reads the store into a new state, re-parsing only the documents that
// changed since prev. A damaged document is an error naming it.
func (c *Cache) scan(prev *state) (*state, error) {
	snap, err := c.docs.Load(context.Background(), func(name, stamp string) bool {
		rec, ok := prev.file(name)
		return ok && rec.stamp == stamp
	})
	if err != nil {
		return nil, fmt.Errorf("certcache: %w", err)
	}
	st := &state{
		snap: snap, files: map[string]fileRec{},
		certs: map[string]*Entry{}, byAddr: map[string][]*Entry{},
		anchors: map[string]*x509.Certificate{}, inters: map[string]*x509.Certificate{},
		statuses: map[string]*Status{},
	}
	for name, d := range snap.Docs {
		sub, base, _ := strings.Cut(name, "/")
		match := Layout.Dirs[sub]
		if match == nil || !match(base) {
			continue // not ours
		}
		fp := base[:strings.IndexByte(base, '.')]
		rec, ok := prev.file(name)
		if !ok || rec.stamp != d.Stamp || d.Data != nil {
			if rec, err = parseFile(sub, fp, d); err != nil && sub == statusDir {
				// A status is only a cache of a check: one that does not
				// read is asked again and replaced.
				continue
			} else if err != nil {
				return nil, fmt.Errorf("certcache: %s: %w (remove or repair it)", c.docs.Where(name), err)
			}
		}
		st.files[name] = rec
		switch sub {
		case statusDir:
			st.statuses[fp] = rec.status
		case certsDir:
			st.certs[fp] = rec.e
		case interDir:
			st.inters[fp] = rec.cert
		default:
			st.anchors[fp] = rec.cert
		}
		snap.Docs[name] = storage.Doc{Stamp: d.Stamp}
	}
	st.index(c.sys)
	return st, nil
}

func (st *state) file(name string) (fileRec, bool) {
	if st == nil {
		return fileRec{}, false
	}
	rec, ok := st.files[name]
	return rec, ok
}

func parseFile(sub, fp string, d storage.Doc) (fileRec, error) {
	rec := fileRec{stamp: d.Stamp}
	var err error
	if sub == statusDir {
		rec.status, err = parseStatus(d.Data)
		return rec, err
	}
	if sub == certsDir {
		rec.e, err = parseEntry(d.Data)
		if err == nil {
			rec.cert = rec.e.Cert
		}
	} else {
		rec.cert, err = parseCertPEM(d.Data)
	}
	if err == nil && Fingerprint(rec.cert) != fp {
		err = errors.New("the file name is not the certificate's fingerprint")
	}
	return rec, err
}

// index builds the address index and the pools from certs, anchors and inters.
func (st *state) index(sys *x509.CertPool) {
	st.byAddr = map[string][]*Entry{}
	for _, e := range st.certs {
		for _, a := range e.Addresses {
			st.byAddr[a] = append(st.byAddr[a], e)
		}
	}
	if sys != nil {
		st.roots = sys.Clone()
	} else {
		st.roots = x509.NewCertPool()
	}
	for _, a := range st.anchors {
		st.roots.AddCert(a)
	}
	st.pool = x509.NewCertPool()
	for _, i := range st.inters {
		st.pool.AddCert(i)
	}
}

// Reload rescans the store now, picking up what another process wrote. On
// failure the Cache keeps the state it had. Reads rescan by themselves when
// the store changed (see Options.RecheckInterval) and then ignore failures,
// so a damaged file or an unreachable database never stops mail; call
// Reload to see the error.
func (c *Cache) Reload() error {
	// Writers rescan after writing; serializing with them keeps an older
	// scan from being installed over a newer one.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.rescan()
}

// rescan installs a fresh scan; c.writeMu is held.
func (c *Cache) rescan() error {
	c.mu.RLock()
	prev := c.st
	c.mu.RUnlock()
	st, err := c.scan(prev)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if !sameContent(prev, st) {
		c.gen++
	}
	c.st = st
	c.mu.Unlock()
	return nil
}

// refresh rescans when the store may have changed, at most once per
// RecheckInterval. Cost when nothing changed: three stats, or for a
// database a look at the last change counter it polled.
func (c *Cache) refresh() {
	if !c.recheck.Due() {
		return
	}
	c.mu.RLock()
	snap := c.st.snap
	c.mu.RUnlock()
	if c.docs.Changed(snap) {
		_ = c.Reload() // see Reload: keep serving the last good state
	}
}

// Generation counts the changes to what the Cache serves: its own writes
// and another process's that it picked up. A cache of what was computed
// from certificates and trust anchors (verified messages) is stale once the
// generation it was made under has passed. It looks for changes first, as
// reads do.
func (c *Cache) Generation() uint64 {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// Available is nil while the store can be reached (a directory always can),
// or says why not. Reads still answer from what was last read; writes fail.
func (c *Cache) Available() error { return c.docs.Available() }

// Dir returns the cache's directory; "" for a cache in a database.
func (c *Cache) Dir() string { return c.dir }

// Location names the cache for people: its directory or its database.
func (c *Cache) Location() string { return c.docs.String() }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
