package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newRegistry is the registry /metrics serves: ours plus the Go runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// readiness caches the outcome of an expensive check (it dials the
// upstreams), so that probes and scrapes do not hammer them.
type readiness struct {
	check  func(context.Context) error
	maxAge time.Duration

	mu   sync.Mutex
	at   time.Time
	last error
}

// get returns the last outcome, checking again when it is older than maxAge.
func (r *readiness) get(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) < r.maxAge {
		return r.last
	}
	r.last = r.check(ctx)
	r.at = time.Now()
	return r.last
}

// Describe and Collect make readiness the smimeproxy_ready gauge.
func (r *readiness) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (r *readiness) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v := 1.0
	if r.get(ctx) != nil {
		v = 0
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v)
}

var readyDesc = prometheus.NewDesc("smimeproxy_ready",
	"1 when the keystore is unlocked, the store can be reached and the upstream servers answer, else 0.", nil, nil)

// opsServer serves /metrics, /healthz and /readyz, and /debug/pprof/ when
// asked to.
type opsServer struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

func startOps(addr string, reg *prometheus.Registry, ready *readiness, withPprof bool, log *slog.Logger) (*opsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := ready.get(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if withPprof {
		// Registered on this mux only: importing net/http/pprof also adds
		// them to http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	o := &opsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		ln:  ln,
		log: log,
	}
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	return o, nil
}

func (o *opsServer) shutdown(ctx context.Context) error { return o.srv.Shutdown(ctx) }
