package main

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"smimeproxy/certcache"
	"smimeproxy/keystore"
)

// expiryWarning is how long before its end a user's own certificate is
// warned about, in the log, in `smimeproxy identities` and in the metric the
// alert rules watch.
const expiryWarning = keystore.ExpiryWarning

var expiryDesc = prometheus.NewDesc("smimeproxy_cert_expiry_seconds",
	"Seconds until a certificate expires (negative once expired): kind is identity for our users' certificates, cached for other people's.",
	[]string{"kind", "email", "id"}, nil)

// expiry reports how long certificates have left, computed at each scrape so
// the value is never stale.
type expiry struct {
	ks  *keystore.Store
	cc  *certcache.Cache
	now func() time.Time
}

func (x *expiry) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (x *expiry) Collect(ch chan<- prometheus.Metric) {
	now := x.now()
	for email, id := range x.newest() {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, id.NotAfter.Sub(now).Seconds(), "identity", email, id.KeyID)
	}
	for _, e := range x.cc.List() {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, e.Cert.NotAfter.Sub(now).Seconds(), "cached", e.Addresses[0], e.Fingerprint[:16])
	}
}

// newest is, per address, the key whose certificate ends last: a renewed
// certificate makes the old one's expiry irrelevant, though the old key stays
// to decrypt old mail.
func (x *expiry) newest() map[string]keystore.IdentityInfo {
	out := map[string]keystore.IdentityInfo{}
	for _, id := range x.ks.Identities() {
		if id.NotAfter.IsZero() || id.Status == keystore.StatusBroken {
			continue
		}
		for _, email := range id.Emails {
			if cur, ok := out[email]; !ok || id.NotAfter.After(cur.NotAfter) {
				out[email] = id
			}
		}
	}
	return out
}

// warn logs every address whose newest certificate expires within
// expiryWarning or has expired. serve calls it at start and once a day.
func (x *expiry) warn(log *slog.Logger) {
	now := x.now()
	for email, id := range x.newest() {
		left := id.NotAfter.Sub(now)
		switch {
		case left <= 0:
			log.Warn("certificate expired: renew it with smimeproxy csr and import", "email", email, "key_id", id.KeyID, "not_after", id.NotAfter)
		case left < expiryWarning:
			log.Warn("certificate expires soon: renew it with smimeproxy csr and import", "email", email, "key_id", id.KeyID,
				"not_after", id.NotAfter, "days_left", int(left.Hours()/24))
		}
	}
}
