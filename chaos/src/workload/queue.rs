//! Queue: producers enqueue unique ids, consumers lease, record and ack them; after
//! healing, a final drain that outlasts every lease, so a task whose consumer was lost is
//! delivered then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Ctx, breathe, write_outcome};
use crate::history::{FINAL_PROCESS, Op, Outcome};
use crate::rng::Rng;

pub const QUEUE: &str = "chaos-q";
const VISIBILITY: Duration = Duration::from_secs(2);
const DEQUEUE_MAX: u32 = 8;
/// The final drain ends after this long without finding a task (longer than a lease).
const DRAIN_QUIET: Duration = Duration::from_secs(4);
/// ... or after this long in all.
const DRAIN_MAX: Duration = Duration::from_secs(60);

pub async fn producer(ctx: Ctx, mut rng: Rng, ids: Arc<AtomicU64>) {
    let mut process = ctx.rec.process();
    while !ctx.stopped() {
        let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
        let inv = ctx.rec.invoke(process);
        let outcome = match ctx.client.enqueue(QUEUE, id.to_string()).await {
            Ok(_) => Outcome::Ok,
            Err(e) => write_outcome(&e),
        };
        ctx.rec.complete(inv, outcome, Op::Enqueue { id });
        if outcome == Outcome::Unknown {
            process = ctx.rec.process();
        }
        breathe(&mut rng).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn consumer(ctx: Ctx, mut rng: Rng) {
    let process = ctx.rec.process();
    while !ctx.stopped() {
        if deliver(&ctx, process).await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        breathe(&mut rng).await;
    }
}

/// One dequeue: records and acks what it got; how many tasks that was.
async fn deliver(ctx: &Ctx, process: u32) -> usize {
    let inv_ns = ctx.rec.now_ns();
    let Ok(tasks) = ctx.client.dequeue(QUEUE, DEQUEUE_MAX, VISIBILITY).await else { return 0 };
    for task in &tasks {
        // An unparsable payload shows as id 0, which no enqueue used.
        let id = std::str::from_utf8(&task.payload).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let inv = crate::recorder::Invocation { process, invoked_ns: inv_ns };
        ctx.rec.complete(inv, Outcome::Ok, Op::Deliver { id });
        // A failed ack only means the task comes again.
        let _ = ctx.client.ack(QUEUE, task.task).await;
    }
    tasks.len()
}

pub async fn final_drain(ctx: &Ctx) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let mut last_found = tokio::time::Instant::now();
    while last_found.elapsed() < DRAIN_QUIET {
        if start.elapsed() > DRAIN_MAX {
            anyhow::bail!("the queue did not drain in {} s", DRAIN_MAX.as_secs());
        }
        if deliver(ctx, FINAL_PROCESS).await > 0 {
            last_found = tokio::time::Instant::now();
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
