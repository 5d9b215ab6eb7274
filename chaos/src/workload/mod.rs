//! The workloads: concurrent clients doing checkable operations and recording them, then
//! reading the final state once the faults are healed.

pub mod bank;
pub mod counter;
pub mod list;
pub mod queue;
pub mod register;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ampstore_client::{Client, Error};
use ampstore_common::Key;

use crate::history::Outcome;
use crate::recorder::Recorder;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Workload {
    Register,
    ListAppend,
    Bank,
    Queue,
    Counter,
}

impl Workload {
    pub const ALL: [Workload; 5] =
        [Workload::Register, Workload::ListAppend, Workload::Bank, Workload::Queue, Workload::Counter];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::ListAppend => "list-append",
            Workload::Bank => "bank",
            Workload::Queue => "queue",
            Workload::Counter => "counter",
        }
    }

    /// What a recovery probe reads: one key of each of this workload's key families. (The
    /// queue's tasks are not probed: a probe would have to lease them.)
    pub fn probes(self) -> Vec<Probe> {
        match self {
            Workload::Register => (0..register::KEYS).map(|i| Probe::Get(register::key(i))).collect(),
            Workload::ListAppend => (0..list::KEYS).map(|i| Probe::List(list::key(i))).collect(),
            Workload::Bank => (0..bank::ACCOUNTS).map(|i| Probe::Get(bank::account(i))).collect(),
            Workload::Queue => vec![],
            Workload::Counter => (0..counter::KEYS).map(|i| Probe::Get(counter::key(i))).collect(),
        }
    }
}

/// A read that shows whether the range behind it is served.
#[derive(Clone, Debug)]
pub enum Probe {
    Get(Key),
    /// The first element of a list.
    List(Key),
}

impl Probe {
    pub async fn read(&self, client: &Client) -> Result<(), Error> {
        match self {
            Probe::Get(k) => client.get(k.clone()).await.map(|_| ()),
            Probe::List(k) => client.list(k.clone(), None, 1).await.map(|_| ()),
        }
    }

    /// A key inside the range the probe reads.
    pub fn key(&self) -> Key {
        match self {
            Probe::Get(k) => k.clone(),
            Probe::List(k) => ampstore_common::lists::element_key(k, Default::default()),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown workload {s:?}; choose from register, list-append, bank, queue, counter"))
    }
}

/// What every worker shares.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub rec: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How a failed write ended, as far as the client can tell: refused before it could take
/// effect, or possibly applied (a timeout, a lost connection, a busy cluster after retries).
pub fn write_outcome(e: &Error) -> Outcome {
    match e {
        Error::Invalid { .. } | Error::TooLarge { .. } | Error::Conflict { .. } | Error::Unauthorized { .. } => {
            Outcome::Fail
        }
        _ => Outcome::Unknown,
    }
}

/// A short random pause between operations, so workers interleave.
pub async fn breathe(rng: &mut crate::rng::Rng) {
    tokio::time::sleep(Duration::from_millis(rng.between(0, 8))).await;
}

/// Retries `f` until it succeeds or `budget` runs out (for setup and final reads).
pub async fn until_ok<T, F, Fut>(budget: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
