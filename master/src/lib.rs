//! The Ampstore master. So far: the lease election (`lease`); routing, placement and
//! failure handling follow (issue 4).

pub mod lease;
