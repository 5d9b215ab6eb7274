//! The Ampstore client. So far: [`connection::Connection`], one multiplexed connection to a
//! node or master. The routing client (`Client`) follows in step 5 (issue 6).

pub use ampstore_common as common;

pub mod connection;
