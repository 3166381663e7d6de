package master

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the master's Prometheus metrics, served on metrics_addr when it is set. Labels
// take a few fixed values each (kinds, outcomes, reasons): no minion ids, nothing a peer
// chooses, so a peer cannot grow the series.
type metrics struct {
	reg         *prometheus.Registry
	jobs        *prometheus.CounterVec   // kind, outcome
	results     *prometheus.CounterVec   // kind, outcome: per minion
	latency     *prometheus.HistogramVec // kind
	authFailure *prometheus.CounterVec   // reason
	refused     *prometheus.CounterVec   // reason: returns refused (acceptReturn)

	l net.Listener // metrics_addr, when set (listenMetrics)
}

// Job outcomes in the metrics.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeNoReturn  = "no_return"
)

// jobKinds bounds the kind label (a JobSpec's kind comes from the master's own code).
var jobKinds = map[string]bool{"apply": true, "converge": true, "run": true, "ping": true}

func newMetrics() *metrics {
	mt := &metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "brine_jobs_total",
			Help: "Jobs whose wait ended, by kind and outcome: succeeded (every minion succeeded), failed (one failed), no_return (none failed, one did not return).",
		}, []string{"kind", "outcome"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "brine_job_minion_results_total",
			Help: "Minions' results of jobs, by kind and outcome (succeeded, failed, no_return).",
		}, []string{"kind", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "brine_return_latency_seconds",
			Help:    "Time from publishing a job to receiving a minion's return, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 17), // 5 ms to about 5.5 min
		}, []string{"kind"}),
		authFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "brine_auth_failures_total",
			Help: "Refused minion authentications, by reason.",
		}, []string{"reason"}),
	}
	mt.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "brine_returns_refused_total",
		Help: "Returns of authenticated minions refused and not stored, by reason: bad (does not parse or verify), other_minion, unknown_job, not_addressed, kind, too_large (more than its job could make).",
	}, []string{"reason"})
	mt.reg.MustRegister(mt.jobs, mt.results, mt.latency, mt.authFailure, mt.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"challenge", "seal", "mismatch", "signature", "limited", "store_error", "pending", "rejected", "denied"} {
		mt.authFailure.WithLabelValues(r) // present at 0 from the start
	}
	for _, r := range []string{refusedBad, refusedOtherMinion, refusedUnknownJob, refusedNotAddressed, refusedKind, refusedTooLarge} {
		mt.refused.WithLabelValues(r)
	}
	return mt
}

// returnRefused counts a refused return; reason is one of the refused* reasons.
func (mt *metrics) returnRefused(reason string) {
	mt.refused.WithLabelValues(reason).Inc()
}

// registerMaster adds the gauges and counters read from the running master.
func (mt *metrics) registerMaster(m *Master) {
	mt.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "brine_store_up",
			Help: "1 when this master's store answers (its last check, every 2 s), 0 when it lost its database: it then publishes no new job.",
		}, func() float64 {
			if m.StoreHealth().Up {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "brine_job_history_bytes",
			Help: "Bytes of the job history (jobs and returns, as job_history_mb counts them) after the last prune.",
		}, func() float64 { return float64(m.historyBytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "brine_connected_minions",
			Help: "Minions connected to this master (an authenticated request in the last 30 seconds, or two request periods in a large fleet).",
		}, func() float64 { return float64(len(m.connectedIDs())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_publish_dropped_total",
			Help: "Messages of the publish port not queued for a subscriber because its queue was full.",
		}, func() float64 { return float64(m.pub.Dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_publish_subscribers_refused_total",
			Help: "Subscribers disconnected for subscriptions over the limits or outside their session's topics, or a false or taken credential.",
		}, func() float64 { return float64(m.pub.Refused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_publish_subscribers_unadmitted_total",
			Help: "Subscribers disconnected for showing no session credential in time.",
		}, func() float64 { return float64(m.pub.Unadmitted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_connections_evicted_total",
			Help: "Connections of the publish and request ports that had not authenticated, closed to make room for a new one.",
		}, func() float64 { return float64(m.router.Evicted() + m.pub.Evicted()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_request_throttled_total",
			Help: "Messages of authenticated request-port connections that waited for their connection's message or byte rate.",
		}, func() float64 { return float64(m.router.Throttled.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_facts_throttled_total",
			Help: "Facts reports refused because their minion reported more often than its rate (30 at once, then one every 2 s).",
		}, func() float64 { return float64(m.factsThrottled.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "brine_request_not_reading_dropped_total",
			Help: "Request-port peers disconnected because they did not read their replies.",
		}, func() float64 { return float64(m.router.Dropped.Load()) }),
	)
}

func kindLabel(kind string) string {
	if jobKinds[kind] {
		return kind
	}
	return "other"
}

// jobDone counts one job whose wait ended with rets succeeded/failed and missing no return.
func (mt *metrics) jobDone(kind string, succeeded, failed, missing int) {
	kind = kindLabel(kind)
	outcome := outcomeSucceeded
	switch {
	case failed > 0:
		outcome = outcomeFailed
	case missing > 0:
		outcome = outcomeNoReturn
	}
	mt.jobs.WithLabelValues(kind, outcome).Inc()
	mt.results.WithLabelValues(kind, outcomeSucceeded).Add(float64(succeeded))
	mt.results.WithLabelValues(kind, outcomeFailed).Add(float64(failed))
	mt.results.WithLabelValues(kind, outcomeNoReturn).Add(float64(missing))
}

// returned observes a return that came d after its job was published.
func (mt *metrics) returned(kind string, d time.Duration) {
	mt.latency.WithLabelValues(kindLabel(kind)).Observe(d.Seconds())
}

// authRefused counts a refused authentication; why is one of handleAuth's reasons.
func (mt *metrics) authRefused(why string) {
	reason := "limited" // the enrolment limits' messages (enrol.go)
	switch why {
	case "unknown or expired challenge":
		reason = "challenge"
	case "auth does not open":
		reason = "seal"
	case "auth does not match hello":
		reason = "mismatch"
	case "bad signature":
		reason = "signature"
	case "key store error":
		reason = "store_error"
	}
	mt.authFailure.WithLabelValues(reason).Inc()
}

// authNotAccepted counts an authentication of a key that is not accepted (pending, rejected,
// denied).
func (mt *metrics) authNotAccepted(state string) {
	switch state {
	case "pending", "rejected", "denied":
		mt.authFailure.WithLabelValues(state).Inc()
	}
}

// listenMetrics binds metrics_addr when it is set (Start fails if it cannot).
func (m *Master) listenMetrics() error {
	m.metrics.registerMaster(m)
	if m.cfg.MetricsAddr == "" {
		return nil
	}
	l, err := net.Listen("tcp", m.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics_addr %s: %w", m.cfg.MetricsAddr, err)
	}
	// Over the limits a connection is closed at once (bootlimits.go): a scraper needs one.
	m.metrics.l = newLimitListener(l, maxMetricsConns, maxMetricsConnsPerSource)
	return nil
}

// The metrics endpoint's connection limits: Prometheus holds one connection per target.
const (
	maxMetricsConns          = 32
	maxMetricsConnsPerSource = 8
)

// MetricsAddr is the address the metrics endpoint is bound to ("" when off).
func (m *Master) MetricsAddr() string {
	if m.metrics.l == nil {
		return ""
	}
	return m.metrics.l.Addr().String()
}

// serveMetrics serves GET /metrics until the master stops. Scrapers are bounded in time and
// header size, and in concurrency (promhttp's MaxRequestsInFlight).
func (m *Master) serveMetrics() {
	if m.metrics.l == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4, Timeout: 10 * time.Second, ErrorLog: nil,
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 8 << 10,
		// net/http logs what peers cause (Accept errors once descriptors run out, bad
		// requests) to stderr, one line each, outside the rate-limited log: discarded, as at the
		// bootstrap endpoint.
		ErrorLog: quietLogger()}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(m.metrics.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		<-m.ctx.Done()
		_ = srv.Close()
	}()
	m.log.Info("serving metrics", "addr", m.MetricsAddr())
}
