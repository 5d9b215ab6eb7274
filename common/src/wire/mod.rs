//! The wire: the frame codec, the protocol messages, one multiplexed [`Connection`], a
//! [`Pool`] of them by address, and [`ActiveMaster`], which finds and calls the active master.
//!
//! The bytes on the wire are the flat [`Op`] and [`Reply`] enums of [`protocol`]
//! (`docs/protocol.md`). On top of them every request has a struct of its own that knows its
//! reply type ([`Call`]), grouped by who sends it:
//! - [`data`]: what application servers send to nodes (get, put, scan, lists, queues,
//!   transactions);
//! - [`routing`]: what clients and operators ask a master (locate, status, drain, members);
//! - [`admin`]: what the master or an operator asks of a node (assign, release, snapshot,
//!   split, merge, stats);
//! - [`peer`]: the cluster's internal calls (node to node: transaction prepare and resolve;
//!   node to master: split and merge commits).
//!
//! `conn.call_typed(Put { key, value, write_id }, deadline)` answers `Result<Version, Error>`:
//! the reply's variant is checked in one place, [`Call::reply`], which turns any other
//! variant into `Internal` ("put answered with value").
//!
//! Each request's checks (the limits of [`crate::limits`] and its own rules) are written
//! next to its struct, in the `validate` clause of its `request!` definition, which makes
//! them the struct's `validate_fields` (e.g. `data::Put::validate_fields`). A client runs
//! them with [`Call::validate`] on the struct; the server, which decodes a flat `Op`, runs
//! them with [`Op::validate`](protocol::Op::validate), which only hands each variant's
//! fields to its struct's `validate_fields`. So both refuse the same requests with the same
//! error. The span check that data and routing requests share is in `span`.
//!
//! [`Connection`]: connection::Connection
//! [`Pool`]: pool::Pool
//! [`ActiveMaster`]: masters::ActiveMaster
//! [`Op`]: protocol::Op
//! [`Reply`]: protocol::Reply

use crate::error::Error;
use crate::wire::protocol::{Op, Reply};

pub mod connection;
pub mod frame;
pub mod hot;
pub mod local;
pub mod masters;
pub mod pool;
pub mod protocol;

pub mod admin;
pub mod data;
pub mod peer;
pub mod routing;
mod validate;

pub mod span;

/// A request with a typed reply: what it sends (an [`Op`]) and what it answers.
///
/// Named `Call` rather than `Request` because [`protocol::Request`] is the envelope every
/// operation travels in.
pub trait Call: Sized {
    /// What a successful answer carries.
    type Reply;
    /// The operation's name, as `Op::name` gives it (logs, errors).
    const NAME: &'static str;
    /// The operation sent on the wire: exactly the `Op` the untyped code built.
    fn into_op(self) -> Op;
    /// The answer's payload; any other reply variant is `Internal`.
    fn reply(reply: Reply) -> Result<Self::Reply, Error>;

    /// Checks the request's limits before it goes out, on the struct as it is (no `Op` is
    /// built). Every request's checks are its own `validate_fields`, which `Op::validate`
    /// runs too when the server decodes the same operation, so both refuse alike.
    fn validate(&self) -> Result<(), Error>;
}

/// The one error for a reply of the wrong variant: the server broke the protocol.
pub fn unexpected(name: &str, reply: &Reply) -> Error {
    Error::internal(format!("{name} answered with {}", reply.name()))
}

/// Defines one request struct named like its `Op` variant, with its fields, its checks and
/// its [`Call`] impl:
///
/// ```text
/// Name { fields } as "name" -> ReplyType { Reply pattern => value }
/// validate { body }
/// ```
///
/// The optional `validate` body sees every field by reference, under its own name, and
/// answers `Result<(), Error>`; without one, every value of the fields is valid. It becomes
/// the struct's associated function `validate_fields`, which both [`Call::validate`] (on
/// the struct) and `Op::validate` (on the decoded variant) call.
macro_rules! request {
    (@checks) => {
        Ok(())
    };
    (@checks $checks:block) => {
        $checks
    };
    (
        $(#[$meta:meta])*
        $name:ident as $wire:literal -> $rty:ty { $pat:pat => $out:expr }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            /// A request without fields has nothing to check; here so that `Op::validate`
            /// calls every request's checks alike.
            pub fn validate_fields() -> Result<(), $crate::error::Error> {
                Ok(())
            }
        }

        impl $crate::wire::Call for $name {
            type Reply = $rty;
            const NAME: &'static str = $wire;
            fn into_op(self) -> $crate::wire::protocol::Op {
                $crate::wire::protocol::Op::$name
            }
            fn reply(reply: $crate::wire::protocol::Reply) -> Result<$rty, $crate::error::Error> {
                #[allow(unused_imports)]
                use $crate::wire::protocol::Reply;
                match reply {
                    $pat => Ok($out),
                    other => Err($crate::wire::unexpected($wire, &other)),
                }
            }
            fn validate(&self) -> Result<(), $crate::error::Error> {
                Self::validate_fields()
            }
        }
    };
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$fmeta:meta])* $field:ident : $fty:ty),* $(,)? }
        as $wire:literal -> $rty:ty { $pat:pat => $out:expr }
        $(validate $checks:block)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $fty,)*
        }

        impl $name {
            /// This request's checks, on its fields: `Call::validate` runs them on the
            /// struct, `Op::validate` on the variant the server decoded.
            // One parameter per field, by reference to the field's own type, so the server
            // can pass a decoded variant's fields as they are: a check need not read every
            // field, a `Vec` or `String` field is a `&Vec` or `&String`, and the cluster's
            // commits have many fields.
            #[allow(unused_variables, clippy::ptr_arg, clippy::too_many_arguments)]
            pub fn validate_fields($($field: &$fty),*) -> Result<(), $crate::error::Error> {
                $crate::wire::request!(@checks $($checks)?)
            }
        }

        impl $crate::wire::Call for $name {
            type Reply = $rty;
            const NAME: &'static str = $wire;
            fn into_op(self) -> $crate::wire::protocol::Op {
                let $name { $($field),* } = self;
                $crate::wire::protocol::Op::$name { $($field),* }
            }
            fn reply(reply: $crate::wire::protocol::Reply) -> Result<$rty, $crate::error::Error> {
                #[allow(unused_imports)]
                use $crate::wire::protocol::Reply;
                match reply {
                    $pat => Ok($out),
                    other => Err($crate::wire::unexpected($wire, &other)),
                }
            }
            fn validate(&self) -> Result<(), $crate::error::Error> {
                let $name { $($field),* } = self;
                Self::validate_fields($($field),*)
            }
        }
    };
}
pub(crate) use request;

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Checks a typed request against the `Op` the untyped code sent, byte for byte, and its
    /// reply check: `right` is accepted, `Reply::Pong` (or `Reply::Released` for `Ping`)
    /// becomes the one typed error.
    pub fn check<C: Call + Clone>(req: C, old: Op, right: Reply) -> C::Reply {
        let op = req.clone().into_op();
        assert_eq!(op, old, "{} builds the op the old code sent", C::NAME);
        assert_eq!(op.name(), C::NAME, "NAME is the op's name");
        let bytes = |o: &Op| rmp_serde::to_vec(o).expect("encodes");
        assert_eq!(bytes(&op), bytes(&old), "{}: same bytes", C::NAME);
        let wrong =
            if matches!(right, Reply::Pong) { Reply::Released { range_id: crate::RangeId(1) } } else { Reply::Pong };
        let wrong_name = wrong.name();
        match C::reply(wrong) {
            Err(Error::Internal { reason }) => {
                assert_eq!(reason, format!("{} answered with {wrong_name}", C::NAME))
            }
            Err(e) => panic!("{}: a wrong reply is Internal, got {e:?}", C::NAME),
            Ok(_) => panic!("{}: a wrong reply is refused", C::NAME),
        }
        match C::reply(right) {
            Ok(r) => r,
            Err(e) => panic!("{}: the right reply is accepted, got {e:?}", C::NAME),
        }
    }
}

/// The untyped escape hatch: an `Op` is a call whose reply is the raw `Reply` (tests and
/// tools that send arbitrary operations).
impl Call for Op {
    type Reply = Reply;
    const NAME: &'static str = "op";
    fn into_op(self) -> Op {
        self
    }
    fn reply(reply: Reply) -> Result<Reply, Error> {
        Ok(reply)
    }
    fn validate(&self) -> Result<(), Error> {
        Op::validate(self)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;
