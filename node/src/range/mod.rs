//! Range actors: one per loaded range (DESIGN section 5).

pub mod actor;
pub mod batch;
pub mod core;
pub mod load;
pub mod merge;
pub mod reshape;
pub mod snapshot;
pub mod split;
pub mod write_ids;
