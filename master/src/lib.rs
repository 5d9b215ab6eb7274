pub use ampstore_common as common;
