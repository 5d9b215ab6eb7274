//! Counter: increments of a few counters by distinct-looking amounts, each one `incr` (a
//! read-modify-write inside the range, idempotent by write id), and reads of them; after
//! healing, one final read of every counter. The checker counts every acknowledged
//! increment exactly once.

use std::time::Duration;

use ampstore_common::Key;

use super::{Ctx, breathe, until_ok, write_outcome};
use crate::history::{FINAL_PROCESS, Op, Outcome};
use crate::rng::Rng;

pub const KEYS: u64 = 4;
/// The largest increment. Amounts are drawn from `1..=BY_MAX`, so the sums of the few
/// increments whose outcome is unknown rarely hide an increment counted twice.
const BY_MAX: u64 = 1_000;
/// What a counter read as something other than a decimal integer counts as (the checker
/// then reports the read).
const GARBAGE: i64 = i64::MAX;

fn name(i: u64) -> String {
    format!("ctr-{i}")
}

pub fn key(i: u64) -> Key {
    Key::from(name(i))
}

pub async fn worker(ctx: Ctx, mut rng: Rng) {
    let mut process = ctx.rec.process();
    while !ctx.stopped() {
        let i = rng.below(KEYS);
        let inv = ctx.rec.invoke(process);
        if rng.percent(25) {
            match ctx.client.get(key(i)).await {
                Ok(v) => {
                    let value = v.map_or(0, |v| parse(&v.value));
                    ctx.rec.complete(inv, Outcome::Ok, Op::ReadCounter { key: name(i), value });
                }
                Err(_) => ctx.rec.complete(inv, Outcome::Fail, Op::ReadCounter { key: name(i), value: 0 }),
            }
        } else {
            let by = rng.between(1, BY_MAX) as i64;
            let (outcome, result) = match ctx.client.incr(key(i), by).await {
                Ok(v) => (Outcome::Ok, Some(v)),
                Err(e) => (write_outcome(&e), None),
            };
            ctx.rec.complete(inv, outcome, Op::Incr { key: name(i), by, result });
            if outcome == Outcome::Unknown {
                process = ctx.rec.process();
            }
        }
        breathe(&mut rng).await;
    }
}

/// Reads every counter once the cluster is healed.
pub async fn final_reads(ctx: &Ctx) -> anyhow::Result<()> {
    for i in 0..KEYS {
        let inv = ctx.rec.invoke(FINAL_PROCESS);
        let v = until_ok(Duration::from_secs(30), || ctx.client.get(key(i))).await?;
        ctx.rec.complete(inv, Outcome::Ok, Op::ReadCounter { key: name(i), value: v.map_or(0, |v| parse(&v.value)) });
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(GARBAGE)
}
