//! Prometheus metrics (not the metrics form): one registry per application, rendered at
//! `/metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// From a tenth of a millisecond (an embedded read) to ten seconds (a stuck dependency).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `route` label of requests no route matched, so scanners cannot add label values.
pub const UNMATCHED: &str = "unmatched";

/// What an identity check can find, as `auth_requests_total` labels them.
const AUTH_OUTCOMES: [&str; 10] = [
    "open",
    "ok",
    "missing",
    "malformed",
    "unknown",
    "expired",
    "alb_invalid",
    "forbidden",
    "undeclared",
    "unavailable",
];

/// The series of one answered method, route and status in one registry.
struct Answered {
    metrics: u64,
    method: &'static str,
    status: StatusCode,
    count: IntCounter,
    duration: Histogram,
}

/// This thread's kept series, by route (a handful of methods and statuses each).
type Kept = HashMap<Box<str>, Vec<Answered>>;

thread_local! {
    static ANSWERED: RefCell<Kept> = RefCell::default();
}

pub struct Metrics {
    /// Tells this registry's kept handles from another's (tests run several in one thread).
    id: u64,
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub store_duration: HistogramVec,
    pub store_read_bytes: IntCounterVec,
    auth: IntCounterVec,
    /// The `auth` counter of each of `AUTH_OUTCOMES`, found by its label once.
    auth_outcomes: [OnceLock<IntCounter>; AUTH_OUTCOMES.len()],
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
        let store_read_bytes = counter(
            "store_read_bytes_total",
            "Bytes of the records storage engine reads returned (each record's JSON), by backend, operation and record kind: what fleet-wide work reads.",
            &["backend", "operation", "record"],
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
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            store_duration,
            store_read_bytes,
            auth,
            auth_outcomes: Default::default(),
            classifications,
            form_submissions,
        }
    }

    /// Counts an answered request and its duration. The two series are found by their labels
    /// once per thread and kept (a label lookup hashes every label, takes the family's lock
    /// and clones the series, on every request).
    pub fn answered(&self, method: &'static str, route: &str, status: StatusCode, seconds: f64) {
        let observe = |s: &Answered| {
            s.count.inc();
            s.duration.observe(seconds);
        };
        ANSWERED.with_borrow_mut(|kept| {
            let found = kept.get(route).and_then(|series| {
                series
                    .iter()
                    .find(|s| s.metrics == self.id && s.method == method && s.status == status)
            });
            if let Some(s) = found {
                return observe(s);
            }
            let s = Answered {
                metrics: self.id,
                method,
                status,
                count: self
                    .http_requests
                    .with_label_values(&[method, route, status.as_str()]),
                duration: self.http_duration.with_label_values(&[method, route]),
            };
            observe(&s);
            kept.entry(route.into()).or_default().push(s);
        });
    }

    /// Counts a request by what its identity check found: one of `AUTH_OUTCOMES`.
    pub fn auth_outcome(&self, outcome: &str) {
        match AUTH_OUTCOMES.iter().position(|o| *o == outcome) {
            Some(at) => self.auth_outcomes[at]
                .get_or_init(|| self.auth.with_label_values(&[outcome]))
                .inc(),
            None => self.auth.with_label_values(&[outcome]).inc(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(rendered: &'a str, series: &str) -> Option<&'a str> {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn answered_requests_count_under_their_labels_in_their_own_registry_from_any_thread() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let route = "/nodes/{unique_name}";
        a.answered("GET", route, StatusCode::OK, 0.001);
        a.answered("GET", route, StatusCode::OK, 0.002);
        a.answered("GET", route, StatusCode::NOT_FOUND, 0.004);
        a.answered("PUT", route, StatusCode::OK, 0.008);
        a.answered("GET", "/healthz", StatusCode::OK, 0.016);
        b.answered("GET", route, StatusCode::OK, 0.5);
        std::thread::scope(|s| {
            s.spawn(|| a.answered("GET", route, StatusCode::OK, 0.032));
        });
        let (a, b) = (a.render(), b.render());
        let count = |rendered, method, route, status| {
            let series = format!(
                r#"http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
            );
            line(rendered, &series).map(str::to_owned)
        };
        assert_eq!(count(&a, "GET", route, 200).as_deref(), Some("3"), "{a}");
        assert_eq!(count(&a, "GET", route, 404).as_deref(), Some("1"));
        assert_eq!(count(&a, "PUT", route, 200).as_deref(), Some("1"));
        assert_eq!(count(&a, "GET", "/healthz", 200).as_deref(), Some("1"));
        assert_eq!(count(&b, "GET", route, 200).as_deref(), Some("1"), "{b}");
        assert_eq!(count(&b, "GET", route, 404), None);
        let duration = |rendered, what| {
            let series =
                format!(r#"http_request_duration_seconds_{what}{{method="GET",route="{route}"}}"#);
            line(rendered, &series).map(|v| v.parse::<f64>().unwrap())
        };
        assert_eq!(duration(&a, "count"), Some(4.0));
        assert!((duration(&a, "sum").unwrap() - 0.039).abs() < 1e-9);
        assert_eq!(duration(&b, "count"), Some(1.0));
    }

    #[test]
    fn auth_outcomes_count_kept_ones_and_odd_ones_alike() {
        let metrics = Metrics::new();
        for outcome in ["ok", "ok", "forbidden", "something new"] {
            metrics.auth_outcome(outcome);
        }
        let rendered = metrics.render();
        let count = |outcome| {
            line(
                &rendered,
                &format!(r#"auth_requests_total{{outcome="{outcome}"}}"#),
            )
        };
        assert_eq!(count("ok"), Some("2"), "{rendered}");
        assert_eq!(count("forbidden"), Some("1"));
        assert_eq!(count("something new"), Some("1"));
        assert_eq!(
            count("missing"),
            None,
            "only outcomes that happened are shown"
        );
    }
}
