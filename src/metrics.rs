//! Prometheus metrics: one registry per application, rendered at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// From a tenth of a millisecond (an embedded read) to ten seconds (a stuck dependency).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `route` label of requests no route matched, so scanners cannot add label values.
pub const UNMATCHED: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub store_duration: HistogramVec,
    pub auth: IntCounterVec,
    pub classifications: IntCounterVec,
    pub form_submissions: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests answered, by method, matched route and status.",
            &["method", "route", "status"],
        );
        let http_duration = histogram(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method and matched route.",
            &["method", "route"],
        );
        let store_duration = histogram(
            "store_operation_duration_seconds",
            "Time of storage engine calls (one redb transaction or one DynamoDB request), by backend, operation, record kind and outcome.",
            &["backend", "operation", "record", "outcome"],
        );
        let auth = counter(
            "auth_requests_total",
            "Requests by what identity checks found: open (the route needs none), ok, missing, malformed, unknown, expired, alb_invalid, forbidden, undeclared or unavailable.",
            &["outcome"],
        );
        let classifications = counter(
            "classifications_total",
            "Classifications served, by outcome (ok, not_found, error).",
            &["outcome"],
        );
        let form_submissions = counter(
            "metrics_form_submissions_total",
            "Metrics form submissions, by outcome (saved, invalid, error).",
            &["outcome"],
        );
        let http_in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being answered now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_in_flight.clone()))
            .expect("registered once");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "enc_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version", "git_sha"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("ENC_GIT_SHA").unwrap_or("unknown"),
            ])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("registered once");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            store_duration,
            auth,
            classifications,
            form_submissions,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
