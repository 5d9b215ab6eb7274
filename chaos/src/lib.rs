//! The chaos suite (DESIGN section 10): histories of concurrent operations recorded under
//! injected faults, and the checkers that decide whether a history is allowed.
//!
//! This crate holds the pure parts so far: the history format (`history`) and one checker
//! per workload (`check`), each tested against hand-made histories with known anomalies.

pub use ampstore_common as common;

pub mod check;
pub mod history;
