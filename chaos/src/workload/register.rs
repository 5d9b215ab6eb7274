//! Register: reads and blind writes of unique values on a few keys (checked for per-key
//! linearizability); some writes carry a short TTL, so keys expire during the faults and
//! the checker sees them absent only after their expiry. After healing, one final read of
//! every key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ampstore_common::Key;

use super::{Ctx, breathe, until_ok, write_outcome};
use crate::history::{FINAL_PROCESS, Op, Outcome};
use crate::rng::Rng;

pub const KEYS: u64 = 8;
/// Every this long the workers move to fresh keys, so that no key gathers more operations
/// than the linearizability search takes on, however long the run.
const GENERATION_NS: u64 = 10_000_000_000;

fn name(generation: u64, i: u64) -> String {
    format!("reg-{generation}-{i}")
}

/// A key of the first generation (recovery probes read these).
pub fn key(i: u64) -> Key {
    Key::from(name(0, i))
}

/// A value that no write wrote, recorded when a read returns something unparsable (the
/// checker then reports the read).
const GARBAGE: u64 = u64::MAX;

/// Writes that carry a TTL, in percent, and the TTLs they carry: short enough that keys
/// expire while the nemesis works, long enough that reads see them first.
const TTL_WRITES_PERCENT: u64 = 30;
const TTL_MS_MIN: u64 = 50;
const TTL_MS_MAX: u64 = 2_000;

pub async fn worker(ctx: Ctx, mut rng: Rng, values: Arc<AtomicU64>) {
    let mut process = ctx.rec.process();
    while !ctx.stopped() {
        let name = name(ctx.rec.now_ns() / GENERATION_NS, rng.below(KEYS));
        let key = Key::from(name.as_str());
        let inv = ctx.rec.invoke(process);
        if rng.percent(50) {
            match ctx.client.get(key).await {
                Ok(v) => {
                    let value = v.map(|v| parse(&v.value));
                    ctx.rec.complete(inv, Outcome::Ok, Op::Read { key: name, value });
                }
                Err(_) => ctx.rec.complete(inv, Outcome::Fail, Op::Read { key: name, value: None }),
            }
        } else {
            let value = values.fetch_add(1, Ordering::Relaxed) + 1;
            let ttl_ms = rng.percent(TTL_WRITES_PERCENT).then(|| rng.between(TTL_MS_MIN, TTL_MS_MAX));
            let written = match ttl_ms {
                Some(ms) => ctx.client.put_with_ttl(key, value.to_string(), Duration::from_millis(ms)).await,
                None => ctx.client.put(key, value.to_string()).await,
            };
            let outcome = match written {
                Ok(_) => Outcome::Ok,
                Err(e) => write_outcome(&e),
            };
            ctx.rec.complete(inv, outcome, Op::Write { key: name, value, ttl_ms });
            if outcome == Outcome::Unknown {
                process = ctx.rec.process();
            }
        }
        breathe(&mut rng).await;
        // Few operations per key keep the search cheap; the faults do the damage.
        tokio::time::sleep(Duration::from_millis(rng.between(5, 25))).await;
    }
}

/// Reads every key of every generation the run reached (`generations`).
pub async fn final_reads(ctx: &Ctx, generations: u64) -> anyhow::Result<()> {
    for generation in 0..generations {
        for i in 0..KEYS {
            let name = name(generation, i);
            let inv = ctx.rec.invoke(FINAL_PROCESS);
            let v = until_ok(Duration::from_secs(30), || ctx.client.get(Key::from(name.as_str()))).await?;
            ctx.rec.complete(inv, Outcome::Ok, Op::Read { key: name, value: v.map(|v| parse(&v.value)) });
        }
    }
    Ok(())
}

/// How many generations of keys a run of `elapsed_ns` used.
pub fn generations(elapsed_ns: u64) -> u64 {
    elapsed_ns / GENERATION_NS + 1
}

fn parse(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(GARBAGE)
}
