//! Ampstore errors as Redis error replies, and the fixed Redis error texts.

use ampstore_common::counter::{NOT_AN_INTEGER, OVERFLOW};
use ampstore_common::error::Error;

use crate::reply::Reply;

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

pub fn arity(name: &str) -> Reply {
    Reply::err(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

pub fn invalid_expire(name: &str) -> Reply {
    Reply::err(format!("ERR invalid expire time in '{}' command", name.to_ascii_lowercase()))
}

/// An Ampstore error as a Redis error reply: counter errors in Redis's words, the rest as
/// `ERR` with Ampstore's own text (a timeout says the outcome is unknown).
pub fn from_error(e: &Error) -> Reply {
    match e {
        Error::Invalid { reason } if reason.contains(NOT_AN_INTEGER) => Reply::err(NOT_INTEGER),
        Error::Invalid { reason } if reason.contains(OVERFLOW) => Reply::err(format!("ERR {OVERFLOW}")),
        Error::Timeout => Reply::err("ERR timed out: the command may or may not have taken effect"),
        Error::Unauthorized { reason } => Reply::err(format!("NOPERM {reason}")),
        other => Reply::err(format!("ERR {other}")),
    }
}
