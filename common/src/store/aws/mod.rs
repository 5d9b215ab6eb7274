//! The AWS backend (placeholder while it is being written).
