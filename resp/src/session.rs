//! One connection's state: who it authenticated as, its protocol, name, and its MULTI queue
//! and watched keys.

use std::time::Instant;

use ampstore_common::{Key, Version};
use bytes::Bytes;

/// What a connection has proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing yet: only `AUTH`, `HELLO`, `QUIT` (and `RESET`) are answered.
    None,
    /// The cluster credential: the data commands.
    Data,
    /// The admin credential: everything, `FLUSHDB` / `FLUSHALL` included.
    Admin,
}

pub struct Session {
    pub id: u64,
    pub peer: String,
    pub name: Option<String>,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
    /// 2 or 3 (`HELLO`).
    pub proto: u8,
    pub access: Access,
    pub started: Instant,
    /// Commands queued since `MULTI`; `None` outside one.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command was refused: `EXEC` answers `EXECABORT`.
    pub multi_failed: bool,
    /// Keys watched, with the version each had when watched (`None`: absent).
    pub watched: Vec<(Key, Option<Version>)>,
}

impl Session {
    pub fn new(id: u64, peer: String, open: bool) -> Session {
        Session {
            id,
            peer,
            name: None,
            lib_name: None,
            lib_ver: None,
            proto: 2,
            access: if open { Access::Admin } else { Access::None },
            started: Instant::now(),
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
        }
    }

    /// `RESET`: back to a fresh connection's state (keeping the id and the peer).
    pub fn reset(&mut self, open: bool) {
        *self = Session::new(self.id, std::mem::take(&mut self.peer), open);
    }
}
