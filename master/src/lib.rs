//! The Ampstore master (DESIGN section 6): the lease election (`lease`), the routing table
//! (`routing`), node liveness and load (`nodes`), placement policy (`placement`), merge policy (`merges`)
//! and the process that drives them (`master`).

pub mod admin;
pub mod lease;
pub mod master;
pub mod merges;
pub mod nodes;
pub mod placement;
pub mod routing;
