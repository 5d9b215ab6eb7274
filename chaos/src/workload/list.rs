//! List-append: pushes of unique ids to a few lists, and whole-list reads; after healing,
//! the final lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ampstore_client::{Client, Error};
use ampstore_common::Key;

use super::{Ctx, breathe, until_ok, write_outcome};
use crate::history::{FINAL_PROCESS, Op, Outcome};
use crate::rng::Rng;

pub const KEYS: u64 = 3;
const PAGE: usize = 1000;
/// Every this long the workers move to fresh lists, so reads of whole lists stay cheap
/// however long the run.
const GENERATION_NS: u64 = 20_000_000_000;

fn name(generation: u64, i: u64) -> String {
    format!("list-{generation}-{i}")
}

/// A list of the first generation (recovery probes read these).
pub fn key(i: u64) -> Key {
    Key::from(name(0, i))
}

/// How many generations of lists a run of `elapsed_ns` used.
pub fn generations(elapsed_ns: u64) -> u64 {
    elapsed_ns / GENERATION_NS + 1
}

pub async fn worker(ctx: Ctx, mut rng: Rng, ids: Arc<AtomicU64>) {
    let mut process = ctx.rec.process();
    while !ctx.stopped() {
        let name = name(ctx.rec.now_ns() / GENERATION_NS, rng.below(KEYS));
        let list = Key::from(name.as_str());
        let inv = ctx.rec.invoke(process);
        if rng.percent(60) {
            let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
            let outcome = match ctx.client.push(list, id.to_string()).await {
                Ok(_) => Outcome::Ok,
                Err(e) => write_outcome(&e),
            };
            ctx.rec.complete(inv, outcome, Op::Append { key: name, id });
            if outcome == Outcome::Unknown {
                process = ctx.rec.process();
            }
        } else {
            match read_all(&ctx.client, list).await {
                Ok(ids) => ctx.rec.complete(inv, Outcome::Ok, Op::ReadList { key: name, ids }),
                Err(_) => ctx.rec.complete(inv, Outcome::Fail, Op::ReadList { key: name, ids: vec![] }),
            }
        }
        breathe(&mut rng).await;
    }
}

/// The whole list, page by page. Lists only grow at their end, so pages read at different
/// moments still join into a prefix of the list.
async fn read_all(client: &Client, list: Key) -> Result<Vec<u64>, Error> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client.list(list.clone(), after, PAGE).await?;
        // An element that is not one of our ids shows as 0, which no push used.
        out.extend(
            page.elements.iter().map(|(_, e)| std::str::from_utf8(e).ok().and_then(|s| s.parse().ok()).unwrap_or(0)),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Reads every list of every generation the run reached (`generations`).
pub async fn final_reads(ctx: &Ctx, generations: u64) -> anyhow::Result<()> {
    for generation in 0..generations {
        for i in 0..KEYS {
            let name = name(generation, i);
            let inv = ctx.rec.invoke(FINAL_PROCESS);
            let ids = until_ok(Duration::from_secs(30), || read_all(&ctx.client, Key::from(name.as_str()))).await?;
            ctx.rec.complete(inv, Outcome::Ok, Op::ReadList { key: name, ids });
        }
    }
    Ok(())
}
