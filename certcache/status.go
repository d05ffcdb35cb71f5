package certcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"smimeproxy/storage"
)

// statusDir holds status/<fingerprint>.json: the last revocation check of
// a certificate, ours or someone else's.
const statusDir = "status"

// statusKeep is how long a status is kept after it went stale, so that
// `certs show` can still say when a certificate was last checked.
const statusKeep = 30 * 24 * time.Hour

// Status is the outcome of the last revocation check of a certificate
// (package revocation decides what it says; the cache keeps it), so that
// the CLI shows it, other instances use it, and a restart does not ask the
// responders again before it is due.
type Status struct {
	State     string    `json:"state"`            // good, revoked, unknown
	Method    string    `json:"method,omitempty"` // what answered: ocsp or crl
	URL       string    `json:"url,omitempty"`    // whom it asked
	Reason    string    `json:"reason,omitempty"` // the revocation reason, or why unknown
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Checked   time.Time `json:"checked"`
	Until     time.Time `json:"until"` // stale after: ask again
}

// StateRevoked is the State of a revoked certificate's Status.
const StateRevoked = "revoked"

type statusFile struct {
	Version int `json:"version"`
	Status
}

func parseStatus(data []byte) (*Status, error) {
	var f statusFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version != formatVersion || f.State == "" {
		return nil, fmt.Errorf("not a status of version %d", formatVersion)
	}
	return &f.Status, nil
}

// Status returns the last revocation check stored for the certificate
// with a fingerprint, fresh or stale.
func (c *Cache) Status(fingerprint string) (Status, bool) {
	c.refresh()
	fp, _ := normalizeFingerprint(fingerprint)
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.st.statuses[fp]
	if !ok {
		return Status{}, false
	}
	return *s, true
}

// SetStatus stores the outcome of a revocation check of the certificate
// with a fingerprint, replacing the last one; statuses stale for longer
// than 30 days go meanwhile. Only a change of which certificates are
// revoked moves the Generation: a check that confirms what was known
// leaves caches built on the store alone.
func (c *Cache) SetStatus(fingerprint string, s Status) error {
	fp, ok := normalizeFingerprint(fingerprint)
	if !ok {
		return fmt.Errorf("certcache: %q is not a SHA-256 fingerprint", fingerprint)
	}
	data, err := json.MarshalIndent(statusFile{Version: formatVersion, Status: s}, "", "\t")
	if err != nil {
		return err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.RLock()
	var stale []string
	limit := c.now().Add(-statusKeep)
	for f, st := range c.st.statuses {
		if f != fp && st.Until.Before(limit) {
			stale = append(stale, statusDir+"/"+f+".json")
		}
	}
	c.mu.RUnlock()
	err = c.docs.Update(context.Background(), func(tx storage.Tx) error {
		if err := tx.Put(statusDir+"/"+fp+".json", data); err != nil {
			return fmt.Errorf("certcache: store the status of %s: %w", fp, err)
		}
		for _, name := range stale {
			if err := tx.Delete(name); err != nil && !isNotExist(err) {
				return fmt.Errorf("certcache: remove %s: %w", name, err)
			}
		}
		return nil
	})
	return errors.Join(err, c.rescan())
}

// sameContent reports whether a and b serve the same: the same documents
// apart from statuses, and the same certificates revoked.
func sameContent(a, b *state) bool {
	if a == nil || b == nil {
		return a == b
	}
	certDocs := func(s *state) map[string]storage.Doc {
		m := maps.Clone(s.snap.Docs)
		maps.DeleteFunc(m, func(name string, _ storage.Doc) bool { return strings.HasPrefix(name, statusDir+"/") })
		return m
	}
	same := (&storage.Snapshot{Docs: certDocs(a)}).Same(&storage.Snapshot{Docs: certDocs(b)})
	return same && maps.Equal(a.revoked(), b.revoked())
}

// revoked is the set of fingerprints whose status says revoked.
func (st *state) revoked() map[string]bool {
	out := map[string]bool{}
	for fp, s := range st.statuses {
		if s.State == StateRevoked {
			out[fp] = true
		}
	}
	return out
}
