package directory

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the lookups of every directory together. Labels carry no
// addresses.
type Metrics struct {
	// Lookups counts lookups by result: found, not_found, error, or cached
	// (answered from the cache, or skipped while the directory is down).
	Lookups *prometheus.CounterVec // result
	// Seconds is the time a search took, connecting and binding included.
	Seconds prometheus.Histogram
	// Rejected counts attribute values that are not certificates.
	Rejected prometheus.Counter
}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_directory_lookups_total", Help: "Certificate lookups in LDAP directories, by result."}, []string{"result"}),
		Seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "smimeproxy_directory_lookup_seconds", Help: "Time an LDAP search for a certificate took, connecting and binding included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8)}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smimeproxy_directory_values_rejected_total", Help: "Values of certificate attributes in LDAP directories that do not parse."}),
	}
	if reg != nil {
		reg.MustRegister(m.Lookups, m.Seconds, m.Rejected)
	}
	return m
}
