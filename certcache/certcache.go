// Package certcache holds other people's certificates, harvested from signed
// mail or imported, with the intermediates that build their paths and the
// roots a person chose to trust, and picks the certificate to encrypt to.
//
// The store is one directory (0700) of small 0600 files, named by the
// certificate's SHA-256 fingerprint:
//
//	certs/<fingerprint>.json          a certificate with its metadata
//	intermediates/<fingerprint>.pem   CA certificates for path building, never trusted
//	anchors/<fingerprint>.pem         roots a person chose to trust
//
// Each write is atomic (temporary file, fsync, rename, fsync of the
// directory). An in-memory index, loaded at Open, serves lookups; changes
// another process makes are picked up when a directory's mtime moves.
package certcache

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/atomicfile"
	"smimeproxy/internal/recheck"
)

// Source says how a certificate got here.
type Source string

const (
	SourceHarvested Source = "harvested" // from a signed message whose signature and chain verified
	SourceImported  Source = "imported"  // from a file, by a person
)

// DefaultRecheckInterval is how often reads look for changes made by another
// process, by default.
const DefaultRecheckInterval = 2 * time.Second

// Options tune a Cache; nil means the defaults.
type Options struct {
	// NoSystemRoots leaves the system's root CAs out: only the anchors are
	// trusted. By default both are.
	NoSystemRoots bool
	// Now is the clock for Lookup and ForAddress; nil: time.Now.
	Now func() time.Time
	// RecheckInterval is how often reads stat the directory to pick up
	// changes another process made; zero: DefaultRecheckInterval; negative:
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

// Cache is a certificate cache directory. It is safe for concurrent use.
type Cache struct {
	dir     string
	now     func() time.Time
	recheck *recheck.Throttle
	sys     *x509.CertPool // nil with NoSystemRoots

	writeMu sync.Mutex // serializes this process's writers

	mu sync.RWMutex
	st *state
}

// state is the index of the directory at one moment.
type state struct {
	loaded  time.Time
	mods    map[string]time.Time // subdirectory mtimes
	files   map[string]fileRec   // by path, for incremental rescans
	certs   map[string]*Entry    // by fingerprint
	byAddr  map[string][]*Entry
	anchors map[string]*x509.Certificate
	inters  map[string]*x509.Certificate
	roots   *x509.CertPool
	pool    *x509.CertPool // intermediates
}

type fileRec struct {
	fi   fs.FileInfo
	cert *x509.Certificate // for anchors and intermediates
	e    *Entry            // for certs
}

// Open opens the cache in dir, creating it if needed.
func Open(dir string, opts *Options) (*Cache, error) {
	c := &Cache{dir: dir, now: time.Now}
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
	for _, d := range []string{dir, filepath.Join(dir, certsDir), filepath.Join(dir, interDir), filepath.Join(dir, anchorDir)} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("certcache: %w", err)
		}
		atomicfile.RemoveStale(d, staleTemp)
	}
	st, err := c.scan(nil)
	if err != nil {
		return nil, err
	}
	c.st = st
	return c, nil
}

// scan reads the directory into a new state, re-parsing only the files that
// changed since prev. A damaged file is an error naming it.
func (c *Cache) scan(prev *state) (*state, error) {
	st := &state{
		loaded: time.Now(), mods: map[string]time.Time{}, files: map[string]fileRec{},
		certs: map[string]*Entry{}, byAddr: map[string][]*Entry{},
		anchors: map[string]*x509.Certificate{}, inters: map[string]*x509.Certificate{},
	}
	for _, sub := range []string{certsDir, interDir, anchorDir} {
		d := filepath.Join(c.dir, sub)
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("certcache: %w", err)
		}
		st.mods[sub] = fi.ModTime()
		des, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("certcache: %w", err)
		}
		ext := ".pem"
		if sub == certsDir {
			ext = ".json"
		}
		for _, de := range des {
			fp, ok := strings.CutSuffix(de.Name(), ext)
			if !ok || !de.Type().IsRegular() {
				continue
			}
			if n, ok := normalizeFingerprint(fp); !ok || n != fp {
				continue // not ours: temporary files and strangers
			}
			p := filepath.Join(d, de.Name())
			rec, err := c.readFile(p, sub, fp, prev)
			if isNotExist(err) {
				continue // removed between ReadDir and now
			}
			if err != nil {
				return nil, fmt.Errorf("certcache: %s: %w (remove or repair it)", p, err)
			}
			st.files[p] = rec
			switch sub {
			case certsDir:
				st.certs[fp] = rec.e
			case interDir:
				st.inters[fp] = rec.cert
			default:
				st.anchors[fp] = rec.cert
			}
		}
	}
	st.index(c.sys)
	return st, nil
}

func (c *Cache) readFile(p, sub, fp string, prev *state) (fileRec, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return fileRec{}, err
	}
	if prev != nil {
		if old, ok := prev.files[p]; ok && os.SameFile(old.fi, fi) && old.fi.ModTime().Equal(fi.ModTime()) && old.fi.Size() == fi.Size() {
			return old, nil
		}
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return fileRec{}, err
	}
	rec := fileRec{fi: fi}
	if sub == certsDir {
		rec.e, err = parseEntry(data)
		if err == nil {
			rec.cert = rec.e.Cert
		}
	} else {
		rec.cert, err = parseCertPEM(data)
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

// Reload rescans the directory now, picking up what another process wrote.
// On failure the Cache keeps the state it had. Reads rescan by themselves
// when a directory changed (see Options.RecheckInterval) and then ignore
// failures, so a damaged file never stops mail; call Reload to see the error.
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
	c.st = st
	c.mu.Unlock()
	return nil
}

// refresh rescans when a subdirectory may have changed, at most once per
// RecheckInterval. Cost when nothing changed: three stats.
func (c *Cache) refresh() {
	if c.recheck.Due() && c.changed() {
		_ = c.Reload() // see Reload: keep serving the last good state
	}
}

func (c *Cache) changed() bool {
	c.mu.RLock()
	st := c.st
	c.mu.RUnlock()
	for sub, mod := range st.mods {
		fi, err := os.Stat(filepath.Join(c.dir, sub))
		if err != nil || !fi.ModTime().Equal(mod) {
			return true
		}
		if recheck.Unsettled(mod, st.loaded) {
			return true
		}
	}
	return false
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
