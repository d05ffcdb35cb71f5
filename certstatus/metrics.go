package certstatus

import "github.com/prometheus/client_golang/prometheus"

// Metrics count what the Checker decided. Labels carry no addresses.
type Metrics struct {
	// Verdicts counts revocation statuses by use (encrypt, verify) and
	// what was made of them: good, revoked, unknown_soft_fail (used),
	// unknown_hard_fail (not used), no_source (nothing to ask).
	Verdicts *prometheus.CounterVec // use, verdict
	// Directory counts the certificates found in directories: used, or
	// rejected (not valid, not for the address, revoked).
	Directory *prometheus.CounterVec // result
}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_revocation_verdicts_total", Help: "Revocation statuses of certificates about to be encrypted to or of signers, by what was made of them."},
			[]string{"use", "verdict"}),
		Directory: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_directory_certs_total", Help: "Certificates found in LDAP directories, by whether they were used."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.Verdicts, m.Directory)
	}
	return m
}
