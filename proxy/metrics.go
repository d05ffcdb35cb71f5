package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxies' Prometheus metrics, registered once for both
// protocols. Labels carry no addresses, subjects or other message content.
type Metrics struct {
	SessionsOpen *prometheus.GaugeVec   // proto
	Sessions     *prometheus.CounterVec // proto
	// ConnectionsRefused counts connections a Limiter refused or cut off
	// before login: reason is max_connections, max_connections_per_ip,
	// preauth_idle or preauth_time.
	ConnectionsRefused *prometheus.CounterVec // proto, reason
	AuthFailures       *prometheus.CounterVec // proto
	UpstreamErrors     *prometheus.CounterVec // proto, stage: connect, tls, auth, command, data
	// UpstreamSeconds is the time the upstream took to answer: op is connect,
	// auth, data (SMTP) or a command name (IMAP).
	UpstreamSeconds *prometheus.HistogramVec // proto, op

	// Messages counts outgoing messages: action is sign, encrypt,
	// sign_encrypt, pass or refuse; result is ok, rejected (by the upstream),
	// tempfail, error, or partial (accepted, but a Bcc recipient's separate
	// copy was not).
	Messages         *prometheus.CounterVec   // action, result
	TransformSeconds *prometheus.HistogramVec // action

	IMAPCommands *prometheus.CounterVec // command, result: ok, no, bad
	// Opened counts incoming S/MIME messages: action is decrypt or verify,
	// result is ok, or why not (no_key, failed, invalid, untrusted, ...).
	Opened *prometheus.CounterVec // action, result
	// The memory budget (see Budget): its size, the bytes reserved now,
	// and the reservations refused.
	BudgetBytes   prometheus.Gauge
	BudgetUsed    prometheus.Gauge
	BudgetRefused prometheus.Counter

	Harvested   prometheus.Counter
	CacheHits   prometheus.Counter
	CacheMisses prometheus.Counter
	CacheBytes  prometheus.Gauge
}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered, as in tests that do not look at them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SessionsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "smimeproxy_sessions_open", Help: "Client sessions open now."}, []string{"proto"}),
		Sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_sessions_total", Help: "Client sessions accepted."}, []string{"proto"}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_connections_refused_total", Help: "Client connections refused, or cut off before login, by a limit."}, []string{"proto", "reason"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_auth_failures_total", Help: "Logins the upstream refused."}, []string{"proto"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_upstream_errors_total", Help: "Failures talking to the upstream server, by stage."}, []string{"proto", "stage"}),
		UpstreamSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "smimeproxy_upstream_seconds", Help: "Time the upstream server took to answer.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"proto", "op"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_messages_total", Help: "Outgoing messages, by what was done and how it ended."}, []string{"action", "result"}),
		TransformSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "smimeproxy_transform_seconds", Help: "Time to sign and encrypt one outgoing message.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"action"}),
		IMAPCommands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_imap_commands_total", Help: "IMAP commands, by name and result."}, []string{"command", "result"}),
		Opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smimeproxy_opened_total", Help: "Incoming S/MIME messages decrypted or verified, by result."}, []string{"action", "result"}),
		BudgetBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smimeproxy_memory_budget_bytes", Help: "The memory budget for messages held whole (memory_budget_mb)."}),
		BudgetUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smimeproxy_memory_budget_used_bytes", Help: "Bytes of the memory budget reserved now."}),
		BudgetRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smimeproxy_memory_budget_refused_total", Help: "Reservations the memory budget could not grant: temporary failures."}),
		Harvested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smimeproxy_certs_harvested_total", Help: "Certificates harvested from valid signatures."}),
		CacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smimeproxy_imap_cache_hits_total", Help: "FETCHes answered from the cache of opened messages."}),
		CacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smimeproxy_imap_cache_misses_total", Help: "FETCHes that had to fetch and open the message."}),
		CacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smimeproxy_imap_cache_bytes", Help: "Bytes of opened messages held in memory."}),
	}
	if reg != nil {
		reg.MustRegister(m.SessionsOpen, m.Sessions, m.ConnectionsRefused, m.AuthFailures, m.UpstreamErrors, m.UpstreamSeconds,
			m.Messages, m.TransformSeconds, m.IMAPCommands, m.Opened, m.BudgetBytes, m.BudgetUsed, m.BudgetRefused, m.Harvested, m.CacheHits, m.CacheMisses, m.CacheBytes)
	}
	return m
}
