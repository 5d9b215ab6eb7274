//! Records a history as it happens: each completed operation becomes an [`Event`] with
//! monotonic timestamps, appended to the history file as a JSON line (so a run that dies
//! still leaves what it did) and kept for the checkers.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::history::{Event, Op, Outcome};

pub struct Recorder {
    start: Instant,
    next_process: AtomicU32,
    tx: mpsc::UnboundedSender<Event>,
}

/// An operation under way: who invoked it and when.
pub struct Invocation {
    pub process: u32,
    pub invoked_ns: u64,
}

/// Collects the events; ends when every `Recorder` is dropped.
pub struct HistoryWriter {
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Event>>>,
}

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<(std::sync::Arc<Recorder>, HistoryWriter)> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let task = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            while let Some(e) = rx.blocking_recv() {
                serde_json::to_writer(&mut file, &e)?;
                file.write_all(b"\n")?;
                if rx.is_empty() {
                    file.flush()?;
                }
                events.push(e);
            }
            file.flush()?;
            Ok(events)
        });
        let rec = Recorder { start: Instant::now(), next_process: AtomicU32::new(0), tx };
        Ok((std::sync::Arc::new(rec), HistoryWriter { task }))
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A fresh process id: a client whose operation ended unknown continues as a new
    /// process, because the old one may still have that operation in flight.
    pub fn process(&self) -> u32 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    pub fn invoke(&self, process: u32) -> Invocation {
        Invocation { process, invoked_ns: self.now_ns() }
    }

    pub fn complete(&self, inv: Invocation, outcome: Outcome, op: Op) {
        let completed_ns = if outcome == Outcome::Unknown { u64::MAX } else { self.now_ns().max(inv.invoked_ns) };
        let _ = self.tx.send(Event { process: inv.process, invoked_ns: inv.invoked_ns, completed_ns, outcome, op });
    }
}

impl HistoryWriter {
    /// Waits for the last event to be written; the whole history.
    pub async fn finish(self) -> anyhow::Result<Vec<Event>> {
        self.task.await?
    }
}
