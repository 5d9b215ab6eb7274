//! The Ampstore master (DESIGN section 6).
//!
//! Modules, callers first (each imports only modules below it):
//! - `master`: `run`, the composition of the process (the one public entry point).
//! - `admin`: the admin HTTP port.
//! - `service`: the RPC service (locate, drain, status, split and merge commits).
//! - `control`: the lease loop, the control loop, assignments, moves and merges (I/O).
//! - `driver`: the `Master` object: meta writes, calls to nodes, the state lock.
//! - `state`, `commits`: the decisions, pure (time passed in, no I/O).
//! - `lease`, `routing`, `nodes`, `placement`, `merges`: the pure building blocks.
//!
//! Rule: decisions are pure, drivers do I/O, and the driver never awaits or calls out while
//! it holds the state lock (it reaches the state only through `Master::with_state`).

#![deny(clippy::await_holding_lock)]

mod admin;
mod commits;
mod control;
mod driver;
mod lease;
pub mod master;
mod merges;
mod nodes;
mod placement;
mod routing;
mod service;
mod state;

#[cfg(test)]
mod driver_tests;
