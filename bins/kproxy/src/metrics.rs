//! Prometheus metrics with kube-proxy's names, labels and buckets, in the text exposition
//! format, plus process metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kproxy_iptables::compile::SyncKind;
use kproxy_iptables::{SyncError, SyncReport};
use kproxy_model::{Changes, IpFamily};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A cumulative histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Histogram {
        let n = bounds.len();
        Histogram {
            bounds,
            inner: Mutex::new(HistogramData {
                counts: vec![0; n],
                ..HistogramData::default()
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let mut d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (b, c) in self.bounds.iter().zip(d.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        d.sum += v;
        d.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let d = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&d.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {c}", fmt_f64(*b));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", d.count);
        let _ = writeln!(out, "{name}_sum {}", fmt_f64(d.sum));
        let _ = writeln!(out, "{name}_count {}", d.count);
    }
}

fn fmt_f64(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn exponential(start: f64, factor: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start * factor.powi(i as i32)).collect()
}

fn linear(start: f64, width: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start + width * i as f64).collect()
}

/// kube-proxy's metrics (`pkg/proxy/metrics`).
#[derive(Debug)]
pub struct MetricsInner {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync: Gauge,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub last_queued: Gauge,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_service_changes_pending`.
    pub service_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_pending`.
    pub endpoint_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_iptables_restore_failures_total`.
    pub restore_failures: Counter,
    /// `kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total`.
    pub partial_restore_failures: Counter,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}`.
    pub no_local_internal: Gauge,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external"}`.
    pub no_local_external: Gauge,
    /// `kubeproxy_sync_proxy_rules_iptables_total{table="nat"}` / `{table="filter"}`.
    pub rules_total: [Gauge; 2],
    /// `kubeproxy_sync_proxy_rules_iptables_last{table="nat"}` / `{table="filter"}`.
    pub rules_last: [Gauge; 2],
    /// Syncs by kind (kproxy's own: `kproxy_syncs_total{kind}`): full, partial, delta.
    pub syncs: [Counter; 3],
    start_time: f64,
}

/// Shared handle to the metrics.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<MetricsInner>);

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;
    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    /// Fresh metrics with upstream's buckets.
    pub fn new() -> Metrics {
        let sync_buckets = || exponential(0.001, 2.0, 15);
        let mut np = linear(0.25, 0.25, 2);
        np.extend(linear(1.0, 1.0, 59));
        np.extend(linear(60.0, 5.0, 12));
        np.extend(linear(120.0, 30.0, 7));
        Metrics(Arc::new(MetricsInner {
            sync_duration: Histogram::new(sync_buckets()),
            full_sync_duration: Histogram::new(sync_buckets()),
            partial_sync_duration: Histogram::new(sync_buckets()),
            network_programming: Histogram::new(np),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            endpoint_changes_pending: Gauge::default(),
            restore_failures: Counter::default(),
            partial_restore_failures: Counter::default(),
            no_local_internal: Gauge::default(),
            no_local_external: Gauge::default(),
            rules_total: Default::default(),
            rules_last: Default::default(),
            syncs: Default::default(),
            start_time: unix_now(),
        }))
    }

    /// A sync was requested.
    pub fn record_queued(&self) {
        self.last_queued.set(unix_now());
    }

    /// A successful sync of one family.
    pub fn record_sync(&self, _family: IpFamily, report: &SyncReport, changes: &Changes) {
        let secs = report.total_time.as_secs_f64();
        self.sync_duration.observe(secs);
        match report.kind {
            SyncKind::Full => {
                self.full_sync_duration.observe(secs);
                self.syncs[0].inc();
            }
            SyncKind::Partial => {
                self.partial_sync_duration.observe(secs);
                self.syncs[1].inc();
            }
            SyncKind::Delta => {
                self.partial_sync_duration.observe(secs);
                self.syncs[2].inc();
            }
        }
        let now = SystemTime::now();
        self.last_sync.set(unix_now());
        for (_, t) in &changes.trigger_times {
            if let Ok(d) = now.duration_since(*t) {
                self.network_programming.observe(d.as_secs_f64());
            }
        }
        self.no_local_internal
            .set(report.stats.no_local_endpoints_internal as f64);
        self.no_local_external
            .set(report.stats.no_local_endpoints_external as f64);
        self.rules_total[0].set(report.stats.nat_rules_total as f64);
        self.rules_total[1].set(report.stats.filter_rules as f64);
        self.rules_last[0].set(report.stats.nat_rules_written as f64);
        self.rules_last[1].set(report.stats.filter_rules as f64);
    }

    /// A failed sync.
    pub fn record_failure(&self, e: &SyncError) {
        if e.restore_failed {
            self.restore_failures.inc();
        }
        if e.kind != SyncKind::Full {
            self.partial_restore_failures.inc();
        }
    }

    /// The text exposition, with the health servers' request counts.
    pub fn render(&self, health: &kproxy_healthcheck::RequestCounts) -> String {
        let mut out = String::with_capacity(8192);
        self.sync_duration.render(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
        );
        self.full_sync_duration.render(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        );
        self.partial_sync_duration.render(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        self.network_programming.render(
            &mut out,
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                fmt_f64(v)
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.get(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.last_queued.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            self.service_changes.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.get(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            self.service_changes_pending.get(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            self.restore_failures.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            self.partial_restore_failures.get(),
        );
        let _ = writeln!(
            out,
            "# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints\n\
             # TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge\n\
             kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"internal\"}} {}\n\
             kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"external\"}} {}",
            fmt_f64(self.no_local_internal.get()),
            fmt_f64(self.no_local_external.get())
        );
        for (name, help, gauges) in [
            (
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
                &self.rules_total,
            ),
            (
                "kubeproxy_sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync",
                &self.rules_last,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{table=\"nat\"}} {}\n{name}{{table=\"filter\"}} {}",
                fmt_f64(gauges[0].get()),
                fmt_f64(gauges[1].get())
            );
        }
        let _ = writeln!(
            out,
            "# HELP kubeproxy_proxy_healthz_total Cumulative proxy healthz HTTP status\n\
             # TYPE kubeproxy_proxy_healthz_total counter\n\
             kubeproxy_proxy_healthz_total{{code=\"200\"}} {}\n\
             kubeproxy_proxy_healthz_total{{code=\"503\"}} {}\n\
             # HELP kubeproxy_proxy_livez_total Cumulative proxy livez HTTP status\n\
             # TYPE kubeproxy_proxy_livez_total counter\n\
             kubeproxy_proxy_livez_total{{code=\"200\"}} {}\n\
             kubeproxy_proxy_livez_total{{code=\"503\"}} {}",
            health.healthz_200, health.healthz_503, health.livez_200, health.livez_503
        );
        let _ = writeln!(
            out,
            "# HELP kproxy_syncs_total Syncs by kind (kproxy)\n# TYPE kproxy_syncs_total counter\n\
             kproxy_syncs_total{{kind=\"full\"}} {}\nkproxy_syncs_total{{kind=\"partial\"}} {}\nkproxy_syncs_total{{kind=\"delta\"}} {}",
            self.syncs[0].get(),
            self.syncs[1].get(),
            self.syncs[2].get()
        );
        self.render_process(&mut out);
        out
    }

    fn render_process(&self, out: &mut String) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at ") ".
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = 100.0; // USER_HZ on Linux
        let cpu = fields
            .get(11)
            .zip(fields.get(12))
            .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
            .unwrap_or(0.0)
            / ticks;
        let page = 4096.0;
        let rss = fields
            .get(21)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            * page;
        let vsize = fields
            .get(20)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
             # HELP process_virtual_memory_bytes Virtual memory size in bytes.\n\
             # TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {fds}\n\
             # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
            fmt_f64(rss),
            fmt_f64(vsize),
            self.start_time
        );
    }
}

/// For tests: how long ago a timestamp gauge was set.
#[allow(dead_code)]
pub fn age(gauge: &Gauge) -> Duration {
    Duration::from_secs_f64((unix_now() - gauge.get()).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let h = Histogram::new(vec![0.5, 1.0]);
        h.observe(0.2);
        h.observe(0.7);
        h.observe(3.0);
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert_eq!(
            s,
            "# HELP x help\n# TYPE x histogram\nx_bucket{le=\"0.5\"} 1\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 3\nx_sum 3.9\nx_count 3\n"
        );
    }

    #[test]
    fn upstream_buckets() {
        let m = Metrics::new();
        assert_eq!(m.sync_duration.bounds.len(), 15);
        assert_eq!(m.sync_duration.bounds[0], 0.001);
        assert_eq!(m.sync_duration.bounds[14], 16.384);
        let np = &m.network_programming.bounds;
        assert_eq!(np.len(), 2 + 59 + 12 + 7);
        assert_eq!(&np[..3], &[0.25, 0.5, 1.0]);
        assert_eq!(np[np.len() - 1], 300.0);
    }

    #[test]
    fn exposition_has_upstream_names() {
        let text = Metrics::new().render(&kproxy_healthcheck::RequestCounts::default());
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
            "kubeproxy_network_programming_duration_seconds_count",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}",
            "kubeproxy_proxy_healthz_total{code=\"200\"}",
            "kubeproxy_proxy_livez_total{code=\"503\"}",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
