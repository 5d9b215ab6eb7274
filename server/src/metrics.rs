//! Process-wide Prometheus metrics of Ampstore, and a strict parser of the text exposition.
//!
//! Every process (node, master, collector) builds one [`Metrics`] with [`Metrics::new`], hands
//! clones of the `Arc` to whatever records, and serves [`Metrics::encode`] on its metrics
//! endpoint. All names carry the prefix `ampstore_`; there are no constant labels, so one
//! dashboard query covers every role.
//!
//! [`parse_text`] and [`sum`] exist so tests and tools can check an exposition without a
//! Prometheus server: the parser is deliberately strict, so that a malformed exposition fails a
//! test here instead of being silently dropped by a scraper.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ampstore_common::error::ErrorCode;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::request_metrics::RequestTable;

/// Member states reported by [`Metrics::set_members`]; created up front so each series exists
/// (at 0) before the first update, which keeps `absent()` alerts and rate queries sane.
const MEMBER_STATES: [&str; 4] = ["alive", "suspect", "down", "left"];
/// Range states reported by [`Metrics::set_ranges`]; created up front for the same reason.
const RANGE_STATES: [&str; 3] = ["serving", "loading", "failed"];
/// Gossip directions, created up front for the same reason.
const GOSSIP_DIRECTIONS: [&str; 2] = ["in", "out"];

// Label sets hold `&'static str` so that the hot path only hashes and compares: a label set is
// cloned (a copy of two pointers) only when a series is created for the first time.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// A gauge family whose whole content is replaced at once, by state.
#[derive(Debug)]
struct StateGauge {
    family: Family<StateLabels, Gauge>,
    /// Every state ever set, so that replacing the content zeroes states that were set before
    /// but are missing now (the family itself cannot be iterated).
    seen: Mutex<Vec<&'static str>>,
}

impl StateGauge {
    fn new(known: &[&'static str]) -> StateGauge {
        let family = Family::<StateLabels, Gauge>::default();
        for &state in known {
            let _ = family.get_or_create(&StateLabels { state });
        }
        StateGauge { family, seen: Mutex::new(known.to_vec()) }
    }

    fn replace(&self, counts: &[(&'static str, i64)]) {
        // Holding the lock serialises concurrent replacements, so two callers cannot interleave
        // into a mix of both. Each series is set exactly once, never zeroed first and then
        // set, so a scrape in the middle never sees a state drop to 0 and come back.
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for &(state, _) in counts {
            if !seen.contains(&state) {
                seen.push(state);
            }
        }
        for &state in seen.iter() {
            // Duplicated states add up rather than the last one winning silently.
            let value = counts.iter().filter(|(s, _)| *s == state).map(|(_, n)| *n).sum();
            self.family.get_or_create(&StateLabels { state }).set(value);
        }
    }
}

/// The process-wide metrics: one registry and the metric families Ampstore records.
///
/// Build it once with [`Metrics::new`] and share the `Arc`; every recording method takes
/// `&self` and is safe to call from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request counts and latencies (a collector: no lock per request).
    requests: Arc<RequestTable>,
    gossip_packets: Family<DirectionLabels, Counter>,
    gossip_dropped: Family<ReasonLabels, Counter>,
    /// Kept beside the family because a family cannot be summed without encoding it.
    gossip_dropped_total: AtomicU64,
    members: StateGauge,
    ranges: StateGauge,
    log_appends: Counter,
    log_batch_writes: Histogram,
    log_batch_bytes: Histogram,
    snapshot_duration: Histogram,
    snapshot_bytes: Histogram,
}

impl Metrics {
    /// Creates the registry with every Ampstore metric registered under the prefix `ampstore_`.
    ///
    /// Families that have a fixed set of label values (member and range states, gossip
    /// directions) start with every series present at 0.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ampstore");

        let requests = Arc::new(RequestTable::default());
        registry.register_collector(Box::new(requests.clone()));

        let gossip_packets = Family::<DirectionLabels, Counter>::default();
        for &direction in &GOSSIP_DIRECTIONS {
            let _ = gossip_packets.get_or_create(&DirectionLabels { direction });
        }
        registry.register("gossip_packets", "Gossip packets sent (out) and received (in)", gossip_packets.clone());

        let gossip_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register("gossip_dropped_packets", "Gossip packets dropped, by reason", gossip_dropped.clone());

        let members = StateGauge::new(&MEMBER_STATES);
        registry.register("members", "Cluster members known to this process, by state", members.family.clone());

        let ranges = StateGauge::new(&RANGE_STATES);
        registry.register("ranges", "Ranges held by this process, by state", ranges.family.clone());

        let log_appends = Counter::default();
        registry.register("log_appends", "Commit-log appends (batches)", log_appends.clone());

        let log_batch_writes = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register("log_batch_writes", "Writes per commit-log append", log_batch_writes.clone());

        let log_batch_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 10));
        registry.register_with_unit(
            "log_batch",
            "Payload size of a commit-log append",
            Unit::Bytes,
            log_batch_bytes.clone(),
        );

        let snapshot_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "snapshot_duration",
            "Time to write a snapshot",
            Unit::Seconds,
            snapshot_duration.clone(),
        );

        let snapshot_bytes = Histogram::new(exponential_buckets(1024.0, 4.0, 12));
        registry.register_with_unit("snapshot", "Size of a written snapshot", Unit::Bytes, snapshot_bytes.clone());

        Arc::new(Metrics {
            registry,
            requests,
            gossip_packets,
            gossip_dropped,
            gossip_dropped_total: AtomicU64::new(0),
            members,
            ranges,
            log_appends,
            log_batch_writes,
            log_batch_bytes,
            snapshot_duration,
            snapshot_bytes,
        })
    }

    /// The text exposition of every metric (OpenMetrics text, as produced by
    /// `prometheus_client::encoding::text::encode`), ending with `# EOF\n`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and the registry only holds our own metrics,
        // whose encoders do not fail either.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        out
    }

    /// Records one request served: `op` is the operation's `Op::index`, `outcome` the error
    /// it ended with (`None`: ok). Lock-free (a few relaxed atomic adds).
    pub fn observe_request(&self, op: usize, outcome: Option<ErrorCode>, latency: Duration) {
        self.requests.observe(op, outcome, latency);
    }

    /// Records one gossip packet; `direction` is `"in"` or `"out"`.
    pub fn gossip_packet(&self, direction: &'static str) {
        self.gossip_packets.get_or_create(&DirectionLabels { direction }).inc();
    }

    /// Records one dropped gossip packet; `reason` such as `"auth"`, `"oversize"`, `"malformed"`.
    pub fn gossip_drop(&self, reason: &'static str) {
        self.gossip_dropped.get_or_create(&ReasonLabels { reason }).inc();
        self.gossip_dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Total gossip packets dropped so far, all reasons together.
    pub fn gossip_drops_total(&self) -> u64 {
        self.gossip_dropped_total.load(Ordering::Relaxed)
    }

    /// Replaces the gauge of members by state with `counts`, pairs of (state, count) with
    /// states `"alive"`, `"suspect"`, `"down"`, `"left"`. States not given are set to 0; a state
    /// given twice counts the sum.
    pub fn set_members(&self, counts: &[(&'static str, i64)]) {
        self.members.replace(counts);
    }

    /// Replaces the gauge of ranges by state (`"serving"`, `"loading"`, `"failed"`), with the
    /// same semantics as [`Metrics::set_members`].
    pub fn set_ranges(&self, counts: &[(&'static str, i64)]) {
        self.ranges.replace(counts);
    }

    /// Records one commit-log append of `writes` writes carrying `bytes` bytes of payload.
    pub fn log_append(&self, writes: usize, bytes: usize) {
        self.log_appends.inc();
        self.log_batch_writes.observe(writes as f64);
        self.log_batch_bytes.observe(bytes as f64);
    }

    /// Records one snapshot written, which took `took` and has `bytes` bytes.
    pub fn snapshot(&self, took: Duration, bytes: usize) {
        self.snapshot_duration.observe(took.as_secs_f64());
        self.snapshot_bytes.observe(bytes as f64);
    }
}

// The text parser the tests read `/metrics` with lives in `metrics_text`, compiled only
// for tests (here, and in other crates through the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
pub use crate::metrics_text::{Sample, parse_text, sum};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_text::parse_value;
    use ampstore_common::protocol::OP_NAMES;

    /// The `Op::index` of the operation named `name`.
    fn op(name: &str) -> usize {
        OP_NAMES.iter().position(|n| *n == name).expect("an operation's name")
    }

    fn scrape(metrics: &Metrics) -> Vec<Sample> {
        let text = metrics.encode();
        parse_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn metrics_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn encode_parses_and_ends_with_eof() {
        let metrics = Metrics::new();
        metrics.observe_request(op("get"), None, Duration::from_micros(70));
        metrics.gossip_packet("in");
        metrics.gossip_drop("auth");
        metrics.set_members(&[("alive", 3)]);
        metrics.set_ranges(&[("serving", 8)]);
        metrics.log_append(5, 300);
        metrics.snapshot(Duration::from_millis(20), 4096);
        let text = metrics.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = parse_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let names: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            "ampstore_requests_total",
            "ampstore_request_duration_seconds_bucket",
            "ampstore_request_duration_seconds_sum",
            "ampstore_request_duration_seconds_count",
            "ampstore_gossip_packets_total",
            "ampstore_gossip_dropped_packets_total",
            "ampstore_members",
            "ampstore_ranges",
            "ampstore_log_appends_total",
            "ampstore_log_batch_writes_count",
            "ampstore_log_batch_bytes_count",
            "ampstore_snapshot_duration_seconds_count",
            "ampstore_snapshot_bytes_count",
        ] {
            assert!(names.contains(expected), "{expected} missing from\n{text}");
        }
        assert_eq!(sum(&samples, "ampstore_log_batch_writes_sum", &[]), 5.0);
        assert_eq!(sum(&samples, "ampstore_log_batch_bytes_sum", &[]), 300.0);
        assert_eq!(sum(&samples, "ampstore_snapshot_bytes_sum", &[]), 4096.0);
        assert_eq!(sum(&samples, "ampstore_snapshot_duration_seconds_count", &[]), 1.0);
    }

    #[test]
    fn histogram_buckets_are_as_specified() {
        let metrics = Metrics::new();
        metrics.observe_request(op("get"), None, Duration::ZERO);
        metrics.log_append(1, 1);
        metrics.snapshot(Duration::ZERO, 0);
        let samples = scrape(&metrics);
        let bounds = |name: &str| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| parse_value(&s.labels.iter().find(|(k, _)| k == "le").unwrap().1).unwrap())
                .collect()
        };
        let check = |name: &str, start: f64, factor: f64, count: usize| {
            let got = bounds(name);
            assert_eq!(got.len(), count + 1, "{name}: {got:?}");
            assert!((got[0] - start).abs() <= start * 1e-9, "{name}: {got:?}");
            assert!((got[count - 1] - start * factor.powi(count as i32 - 1)).abs() <= got[count - 1] * 1e-9);
            assert_eq!(got[count], f64::INFINITY);
        };
        check("ampstore_request_duration_seconds_bucket", 0.000_05, 2.0, 18);
        check("ampstore_log_batch_writes_bucket", 1.0, 2.0, 13);
        check("ampstore_log_batch_bytes_bucket", 64.0, 4.0, 10);
        check("ampstore_snapshot_duration_seconds_bucket", 0.001, 2.0, 16);
        check("ampstore_snapshot_bytes_bucket", 1024.0, 4.0, 12);
    }

    #[test]
    fn requests_count_by_op_and_outcome() {
        let metrics = Metrics::new();
        metrics.observe_request(op("get"), None, Duration::from_millis(1));
        metrics.observe_request(op("get"), None, Duration::from_millis(3));
        metrics.observe_request(op("get"), Some(ErrorCode::NotOwner), Duration::from_millis(1));
        metrics.observe_request(op("put"), None, Duration::from_millis(1));
        let s = scrape(&metrics);
        assert_eq!(sum(&s, "ampstore_requests_total", &[("op", "get"), ("outcome", "ok")]), 2.0);
        assert_eq!(sum(&s, "ampstore_requests_total", &[("op", "get")]), 3.0);
        assert_eq!(sum(&s, "ampstore_requests_total", &[("outcome", "ok")]), 3.0);
        assert_eq!(sum(&s, "ampstore_requests_total", &[]), 4.0);
    }

    #[test]
    fn request_histogram_count_moves() {
        let metrics = Metrics::new();
        let count = |m: &Metrics| sum(&scrape(m), "ampstore_request_duration_seconds_count", &[("op", "get")]);
        assert_eq!(count(&metrics), 0.0);
        metrics.observe_request(op("get"), None, Duration::from_micros(200));
        metrics.observe_request(op("get"), Some(ErrorCode::Timeout), Duration::from_secs(2));
        assert_eq!(count(&metrics), 2.0);
        let s = scrape(&metrics);
        let sum_secs = sum(&s, "ampstore_request_duration_seconds_sum", &[("op", "get")]);
        assert!((sum_secs - 2.0002).abs() < 1e-9, "{sum_secs}");
        assert_eq!(sum(&s, "ampstore_request_duration_seconds_bucket", &[("op", "get"), ("le", "+Inf")]), 2.0);
    }

    #[test]
    fn set_members_sets_given_and_zeroes_others() {
        let metrics = Metrics::new();
        let s = scrape(&metrics);
        for state in MEMBER_STATES {
            let present =
                s.iter().any(|x| x.name == "ampstore_members" && x.labels == [("state".into(), state.into())]);
            assert!(present, "{state} should exist before any update");
        }
        metrics.set_members(&[("alive", 4), ("suspect", 1), ("down", 2)]);
        metrics.set_members(&[("alive", 5), ("left", 1)]);
        let s = scrape(&metrics);
        let members = |state| sum(&s, "ampstore_members", &[("state", state)]);
        assert_eq!(members("alive"), 5.0);
        assert_eq!(members("suspect"), 0.0);
        assert_eq!(members("down"), 0.0);
        assert_eq!(members("left"), 1.0);

        // A state outside the known set is reported, and zeroed when later omitted.
        metrics.set_ranges(&[("serving", 3), ("draining", 2)]);
        assert_eq!(sum(&scrape(&metrics), "ampstore_ranges", &[("state", "draining")]), 2.0);
        metrics.set_ranges(&[("loading", 1)]);
        let s = scrape(&metrics);
        assert_eq!(sum(&s, "ampstore_ranges", &[("state", "draining")]), 0.0);
        assert_eq!(sum(&s, "ampstore_ranges", &[("state", "serving")]), 0.0);
        assert_eq!(sum(&s, "ampstore_ranges", &[("state", "loading")]), 1.0);
    }

    #[test]
    fn gossip_counters() {
        let metrics = Metrics::new();
        assert_eq!(metrics.gossip_drops_total(), 0);
        metrics.gossip_drop("auth");
        metrics.gossip_drop("auth");
        metrics.gossip_drop("oversize");
        metrics.gossip_packet("in");
        metrics.gossip_packet("out");
        metrics.gossip_packet("in");
        assert_eq!(metrics.gossip_drops_total(), 3);
        let s = scrape(&metrics);
        assert_eq!(sum(&s, "ampstore_gossip_dropped_packets_total", &[("reason", "auth")]), 2.0);
        assert_eq!(sum(&s, "ampstore_gossip_dropped_packets_total", &[]), 3.0);
        assert_eq!(sum(&s, "ampstore_gossip_packets_total", &[("direction", "in")]), 2.0);
        assert_eq!(sum(&s, "ampstore_gossip_packets_total", &[("direction", "out")]), 1.0);
    }

    #[test]
    fn parse_text_accepts_the_format() {
        let text = concat!(
            "# HELP up Whether \\\"up\\\".\n",
            "# TYPE up gauge\n",
            "# UNIT rt_seconds seconds\n",
            "up 1\n",
            "\n",
            "x:y_z{a=\"q\\\"uote\",b=\"back\\\\slash\",c=\"new\\nline\",} +Inf 1700000000\n",
            "e{} -Inf\n",
            "n{a=\"\"}\tNaN 1.5\n",
            "f 1.5e-3\n",
            "# EOF\n",
        );
        let s = parse_text(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0], Sample { name: "up".into(), labels: vec![], value: 1.0 });
        assert_eq!(s[1].name, "x:y_z");
        assert_eq!(
            s[1].labels,
            vec![
                ("a".to_string(), "q\"uote".to_string()),
                ("b".to_string(), "back\\slash".to_string()),
                ("c".to_string(), "new\nline".to_string()),
            ]
        );
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].value, 0.0015);
        assert_eq!(sum(&s, "x:y_z", &[("a", "q\"uote")]), f64::INFINITY);
    }

    #[test]
    fn parse_text_rejects_garbage_with_line_number() {
        let cases = [
            "foo bar baz",
            "x{a=\"b\" 1",
            "1abc 2",
            "x{a=\"b\"} 1 2 3",
            "x{a=\"b\\t\"} 1",
            "x{a=\"b\",a=\"c\"} 1",
            "x{1a=\"b\"} 1",
            "x{a=b} 1",
            "x{a=\"b\"}1",
            "x",
            "x inf",
            "x 1 abc",
            " x 1",
            "# random comment",
            "# TYPE x colour",
            "#EOF",
            "x 1 # {trace=\"a\"} 1",
        ];
        for case in cases {
            let text = format!("# TYPE ok counter\nok_total 1\n{case}\n");
            let err = parse_text(&text).expect_err(case);
            assert!(err.starts_with("line 3:"), "{case:?}: {err}");
        }
        let err = parse_text("a 1\n# EOF\nb 2\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }

    #[test]
    fn parse_text_round_trips_escaped_label_values() {
        // Label values with quotes, backslashes and newlines, as the library escapes them.
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Tricky {
            v: String,
        }
        let family = Family::<Tricky, Counter>::default();
        let tricky = "a\"b\\c\nd} 1\ne{x=\"";
        family.get_or_create(&Tricky { v: tricky.to_string() }).inc_by(7);
        let mut registry = Registry::default();
        registry.register("tricky", "Tricky label values", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let s = parse_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(sum(&s, "tricky_total", &[("v", tricky)]), 7.0);
    }
}
