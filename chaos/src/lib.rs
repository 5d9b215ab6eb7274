//! The chaos suite (DESIGN section 10): a cluster of real processes under a checked
//! workload while a nemesis kills, pauses and partitions them on a seeded schedule; the
//! recorded history is then checked for the anomalies that must never happen.
//!
//! Pure parts: the history format (`history`), the checkers (`check`, `verdicts`), the
//! availability rule (`availability`), the schedule (`schedule`, `rng`). Parts with I/O:
//! the network (`net`, `forward`), the processes (`cluster`), the faults (`nemesis`), the
//! clients (`workload`, `recorder`) and the run itself (`run`). `docs/chaos.md` tells how to use it.
//!
//! Rules of this crate: the cluster under test is real processes of the `ampstore` binary,
//! reached only through the client crate and the wire (it depends on `ampstore-common` and
//! `ampstore-client`, never on the node, master or store crates); the checkers are pure
//! functions of a recorded history, so a verdict can be re-checked from the history file.

pub use ampstore_common as common;

pub mod availability;
pub mod check;
pub mod cluster;
pub mod forward;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod recorder;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod verdicts;
pub mod workload;
