//! The Ampstore master (DESIGN section 6): the lease election (`lease`), the routing table
//! (`routing`), node liveness and load (`nodes`), placement policy (`placement`) and the
//! process that drives them (`master`).

pub mod admin;
pub mod lease;
pub mod master;
pub mod nodes;
pub mod placement;
pub mod routing;
