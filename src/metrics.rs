//! Prometheus metrics, and the HTTP endpoint that serves them with health and readiness.
//!
//! One process-wide registry: the Flight adapter counts requests, the store counts bytes, the
//! engine counts results, the cache its hits, the queue its jobs, the sweep its deletions. Label
//! sets are bounded (method names, status codes, limit names), never handles or tenants' data.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the worker exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by Flight method (or action) and gRPC status code.
    pub requests: IntCounterVec,
    /// Request latency by method, up to the first response message.
    pub latency: HistogramVec,
    /// Time to a RESOURCE_EXHAUSTED answer, by method: how quickly excess load is shed.
    pub refusal_latency: HistogramVec,
    /// Requests being handled, by method.
    pub in_flight: IntGaugeVec,
    /// Bytes written to the state store.
    pub store_written: IntCounter,
    /// Bytes read from the state store.
    pub store_read: IntCounter,
    /// Results created (operations, uploads, reads).
    pub handles_created: IntCounter,
    /// Decoded-result cache hits.
    pub cache_hits: IntCounter,
    /// Decoded-result cache misses.
    pub cache_misses: IntCounter,
    /// Jobs queued.
    pub jobs_queued: IntCounter,
    /// Jobs running on this worker.
    pub jobs_running: IntGauge,
    /// Jobs that failed.
    pub jobs_failed: IntCounter,
    /// Deletions by the sweep, by kind (`expired`, `orphan`).
    pub gc_deleted: IntCounterVec,
    /// Requests refused by a limit, by limit.
    pub limit_rejections: IntCounterVec,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// Connections open on the Flight port.
    pub connections_open: IntGauge,
    /// Connections closed before serving, by reason (`max_connections`, `handshake_timeout`).
    pub connections_refused: IntCounterVec,
    /// Connections closed after the idle timeout with no call open.
    pub connections_idle_closed: IntCounter,
    /// Failed accepts, by kind (`resources`: out of descriptors or memory; `other`).
    pub accept_errors: IntCounterVec,
    /// Streams ended for moving no bytes, by direction (`response`, `upload`).
    pub streams_stalled: IntCounterVec,
    /// Response bytes read and not yet written to a socket.
    pub response_bytes_in_flight: IntGauge,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric"));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Metrics {
            requests: counter_vec("polarway_requests_total", "Requests by method and gRPC status code.", &["method", "code"]),
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("polarway_request_duration_seconds", "Request latency by method.")
                        .buckets(prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")),
                    &["method"],
                )
                .expect("valid metric"),
            ),
            refusal_latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "polarway_refusal_duration_seconds",
                        "Time from a request's arrival to its RESOURCE_EXHAUSTED answer (a limit or overload), by method.",
                    )
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
                    &["method"],
                )
                .expect("valid metric"),
            ),
            in_flight: register(
                &r,
                IntGaugeVec::new(Opts::new("polarway_requests_in_flight", "Requests being handled, by method."), &["method"])
                    .expect("valid metric"),
            ),
            store_written: counter("polarway_store_written_bytes_total", "Bytes written to the state store."),
            store_read: counter("polarway_store_read_bytes_total", "Bytes read from the state store."),
            handles_created: counter("polarway_handles_created_total", "Results created."),
            tls_handshake_failures: counter("polarway_tls_handshake_failures_total", "TLS handshakes refused or timed out."),
            connections_open: register(&r, IntGauge::new("polarway_connections_open", "Connections open on the Flight port.").expect("valid metric")),
            connections_refused: counter_vec(
                "polarway_connections_refused_total",
                "Connections closed before serving a call, by reason.",
                &["reason"],
            ),
            connections_idle_closed: counter("polarway_connections_idle_closed_total", "Connections closed for having no call open."),
            accept_errors: counter_vec("polarway_accept_errors_total", "Failed accepts on the Flight port, by kind.", &["kind"]),
            streams_stalled: counter_vec("polarway_streams_stalled_total", "Streams ended for moving no bytes, by direction.", &["direction"]),
            response_bytes_in_flight: register(
                &r,
                IntGauge::new("polarway_response_bytes_in_flight", "Response bytes read and not yet written to a socket.")
                    .expect("valid metric"),
            ),
            cache_hits: counter("polarway_cache_hits_total", "Decoded-result cache hits."),
            cache_misses: counter("polarway_cache_misses_total", "Decoded-result cache misses."),
            jobs_queued: counter("polarway_jobs_queued_total", "Batch jobs queued."),
            jobs_running: register(&r, IntGauge::new("polarway_jobs_running", "Batch jobs running here.").expect("valid metric")),
            jobs_failed: counter("polarway_jobs_failed_total", "Batch jobs that failed."),
            gc_deleted: counter_vec("polarway_gc_deleted_total", "Deletions by the sweep, by kind.", &["kind"]),
            limit_rejections: counter_vec("polarway_limit_rejections_total", "Requests refused by a limit.", &["limit"]),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Times one request: in flight while alive, counted with its status code when finished.
pub struct RequestTimer {
    method: &'static str,
    started: Instant,
}

impl RequestTimer {
    /// Starts timing a request of `method`.
    pub fn start(method: &'static str) -> RequestTimer {
        metrics().in_flight.with_label_values(&[method]).inc();
        RequestTimer { method, started: Instant::now() }
    }

    /// Records the outcome: `code` is the gRPC status code's name (`OK`, `NOT_FOUND`, ...), as
    /// `flight::status::code_name` spells it.
    pub fn finish(self, code: &'static str) {
        let m = metrics();
        m.requests.with_label_values(&[self.method, code]).inc();
        let elapsed = self.started.elapsed().as_secs_f64();
        m.latency.with_label_values(&[self.method]).observe(elapsed);
        if code == "RESOURCE_EXHAUSTED" {
            m.refusal_latency.with_label_values(&[self.method]).observe(elapsed);
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        metrics().in_flight.with_label_values(&[self.method]).dec();
    }
}

/// Readiness: true while the worker accepts calls, false while it drains.
pub static READY: AtomicBool = AtomicBool::new(false);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics().render()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async {
                if READY.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        );
    axum::serve(listener, app).await
}

/// Binds the metrics address (a port of 0 picks a free one).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
