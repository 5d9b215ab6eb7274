//! Request counts and latencies, recorded without a lock: one row of atomic counters per
//! operation (`Op::index`), with a column per outcome (ok, or an `ErrorCode`) and the
//! latency histogram's buckets, turned into Prometheus families only when scraped. Every
//! request served records here, so a registry lookup and a histogram mutex per request
//! (what `Family` and `Histogram` cost) are kept off the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ampstore_common::error::ErrorCode;
use ampstore_common::protocol::OP_NAMES;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Outcome columns: ok, then one per error code.
const OUTCOMES: usize = 1 + ErrorCode::ALL.len();
/// Latency buckets: 50 us doubling 18 times (50 us to 6.5 s), then +Inf.
const BUCKETS: usize = 18;
const BUCKET_FIRST_NS: u64 = 50_000;

fn outcome_name(column: usize) -> &'static str {
    match column.checked_sub(1) {
        None => "ok",
        Some(i) => ErrorCode::ALL.get(i).map_or("unknown", |c| c.as_str()),
    }
}

/// A bucket's upper bound in nanoseconds.
fn bound_ns(bucket: usize) -> u64 {
    BUCKET_FIRST_NS << bucket
}

#[derive(Debug)]
struct OpRow {
    outcomes: [AtomicU64; OUTCOMES],
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for OpRow {
    fn default() -> OpRow {
        OpRow {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// The table (see the module doc). Registered in the process's registry as a collector.
#[derive(Debug)]
pub struct RequestTable {
    rows: Vec<OpRow>,
}

impl Default for RequestTable {
    fn default() -> RequestTable {
        RequestTable { rows: (0..OP_NAMES.len()).map(|_| OpRow::default()).collect() }
    }
}

impl RequestTable {
    /// Records one request of operation `op` (`Op::index`) that ended with `outcome`.
    pub fn observe(&self, op: usize, outcome: Option<ErrorCode>, latency: Duration) {
        let Some(row) = self.rows.get(op) else { return };
        let column = outcome.map_or(0, |c| 1 + c.index());
        if let Some(count) = row.outcomes.get(column) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least `ns` (the last one is +Inf).
        let bucket = (0..BUCKETS).find(|&b| ns <= bound_ns(b)).unwrap_or(BUCKETS);
        row.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        row.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Collector for RequestTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "requests",
                "Requests served, by operation and outcome",
                None,
                MetricType::Counter,
            )?;
            for (op, row) in self.rows.iter().enumerate() {
                for (column, count) in row.outcomes.iter().enumerate() {
                    let n = count.load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let labels = [("op", OP_NAMES[op]), ("outcome", outcome_name(column))];
                    family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "request_duration",
            "Time to serve a request, by operation",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (op, row) in self.rows.iter().enumerate() {
            let counts: Vec<u64> = row.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = counts
                .iter()
                .enumerate()
                .map(|(b, n)| (if b < BUCKETS { bound_ns(b) as f64 / 1e9 } else { f64::INFINITY }, *n))
                .collect();
            let sum_s = row.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let labels = [("op", OP_NAMES[op])];
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum_s, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_on_a_bound_counts_in_that_bucket_and_an_unknown_op_is_ignored() {
        let table = RequestTable::default();
        table.observe(0, None, Duration::from_nanos(BUCKET_FIRST_NS));
        table.observe(0, None, Duration::from_nanos(BUCKET_FIRST_NS + 1));
        table.observe(0, Some(ErrorCode::Unknown), Duration::from_nanos(bound_ns(BUCKETS - 1)));
        table.observe(0, Some(ErrorCode::Timeout), Duration::from_secs(3600));
        table.observe(OP_NAMES.len(), None, Duration::ZERO);
        let row = &table.rows[0];
        let buckets: Vec<u64> = row.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!((buckets[0], buckets[1], buckets[BUCKETS - 1], buckets[BUCKETS]), (1, 1, 1, 1));
        assert_eq!(buckets.iter().sum::<u64>(), 4, "the request of an unknown operation is not counted");
        let outcomes: Vec<u64> = row.outcomes.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(outcomes[0], 2);
        assert_eq!(outcomes[1 + ErrorCode::Timeout.index()], 1);
        assert_eq!(outcomes[OUTCOMES - 1], 1, "the last code has the last column");
        assert_eq!(outcome_name(OUTCOMES - 1), "unknown");
        assert_eq!(outcome_name(1 + ErrorCode::NotOwner.index()), "not_owner");
    }
}
