package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/membrane-net/membrane/state"
)

// metricsCollector exports the datapath's counters and a few state gauges
// in Prometheus format. It reads them at scrape time: nothing is cached.
type metricsCollector struct {
	api *apiServer

	packets    *prometheus.Desc
	bytes      *prometheus.Desc
	endpoints  *prometheus.Desc
	identities *prometheus.Desc
	rules      *prometheus.Desc
	revision   *prometheus.Desc
	lockdown   *prometheus.Desc
	up         *prometheus.Desc
}

func newMetricsCollector(api *apiServer) *metricsCollector {
	return &metricsCollector{
		api:        api,
		packets:    prometheus.NewDesc("membrane_datapath_packets_total", "Packets the datapath handled, by reason.", []string{"reason", "verdict"}, nil),
		bytes:      prometheus.NewDesc("membrane_datapath_bytes_total", "Bytes the datapath handled, by reason.", []string{"reason", "verdict"}, nil),
		endpoints:  prometheus.NewDesc("membrane_endpoints", "Endpoints membrane manages.", nil, nil),
		identities: prometheus.NewDesc("membrane_identities", "Allocated identities (endpoint and CIDR).", nil, nil),
		rules:      prometheus.NewDesc("membrane_policy_rules", "Policy rules loaded.", nil, nil),
		revision:   prometheus.NewDesc("membrane_policy_revision", "Policy revision the datapath enforces.", nil, nil),
		lockdown:   prometheus.NewDesc("membrane_policy_lockdown_identities", "Identities denied everything because the policy map is full.", nil, nil),
		up:         prometheus.NewDesc("membrane_datapath_up", "1 when the datapath's counters could be read.", nil, nil),
	}
}

func (m *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.packets, m.bytes, m.endpoints, m.identities, m.rules, m.revision, m.lockdown, m.up} {
		ch <- d
	}
}

func (m *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := m.api.dp.Counters()
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up)
	for _, c := range counters {
		verdict := "forward"
		if c.Drop {
			verdict = "drop"
		}
		ch <- prometheus.MustNewConstMetric(m.packets, prometheus.CounterValue, float64(c.Packets), c.Reason, verdict)
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(c.Bytes), c.Reason, verdict)
	}
	txn := m.api.store.Read()
	if eps, err := state.ListEndpoints(txn); err == nil {
		ch <- prometheus.MustNewConstMetric(m.endpoints, prometheus.GaugeValue, float64(len(eps)))
	}
	if ids, err := state.ListIdentities(txn); err == nil {
		ch <- prometheus.MustNewConstMetric(m.identities, prometheus.GaugeValue, float64(len(ids)))
	}
	if rules, err := state.ListPolicies(txn); err == nil {
		ch <- prometheus.MustNewConstMetric(m.rules, prometheus.GaugeValue, float64(len(rules)))
	}
	rev, lockdown := m.api.ctl.status()
	ch <- prometheus.MustNewConstMetric(m.revision, prometheus.GaugeValue, float64(rev))
	ch <- prometheus.MustNewConstMetric(m.lockdown, prometheus.GaugeValue, float64(len(lockdown)))
}

// serveMetrics serves /metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, api *apiServer, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	if err := reg.Register(newMetricsCollector(api)); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Info("serving metrics", logKeyAddress, ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}
