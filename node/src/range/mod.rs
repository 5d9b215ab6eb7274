//! Range actors: one per loaded range (DESIGN section 5).

pub mod batch;
pub mod core;
