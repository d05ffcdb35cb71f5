package revocation

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the checks. Labels carry no addresses or certificates.
type Metrics struct {
	// Checks counts checks by what answered (ocsp, crl, cache, or none when
	// nothing could be asked) and the state found.
	Checks *prometheus.CounterVec // method, state
	// Seconds is the time one OCSP request or CRL download took.
	Seconds *prometheus.HistogramVec // method
	// Failures counts questions that gave nothing usable: reason is
	// unreachable (no answer, an HTTP error, too slow) or rejected (an
	// answer that does not parse or verify, or is stale).
	Failures *prometheus.CounterVec // method, reason
}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_revocation_checks_total", Help: "Certificate revocation checks, by what answered and the state found."},
			[]string{"method", "state"}),
		Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "smimeproxy_revocation_seconds", Help: "Time one OCSP request or CRL download took.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8)}, []string{"method"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_revocation_failures_total", Help: "OCSP requests and CRL downloads that gave nothing usable, by why."},
			[]string{"method", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Checks, m.Seconds, m.Failures)
	}
	return m
}
