//! A range's write inbox: writes wait here for the actor, which takes them all at once
//! (`range::handle` pushes, and tells the actor only when the inbox was empty). Writes that
//! arrive while the actor is busy (a connection's pipelined writes, or many connections')
//! reach it in one message and go into one log entry, instead of a mailbox message each.

use ampstore_common::error::Error;
use ampstore_common::limits::RANGE_PENDING_WRITES_MAX;

use super::core::Write;
use super::host::Responder;

#[derive(Default)]
pub struct WriteInbox {
    queue: parking_lot::Mutex<Vec<(Write, Responder)>>,
}

/// What [`WriteInbox::push`] did.
pub enum Pushed {
    /// Queued, and the inbox was empty: the actor must be told.
    First,
    /// Queued behind others: the actor has been told already.
    Queued,
}

impl WriteInbox {
    /// Queues a write; refused when `RANGE_PENDING_WRITES_MAX` writes wait already (the
    /// range's own queue has the same bound).
    /// The refused write's responder comes back with the error.
    pub fn push(&self, write: Write, reply: Responder) -> Result<Pushed, (Error, Responder)> {
        let mut queue = self.queue.lock();
        if queue.len() >= RANGE_PENDING_WRITES_MAX {
            return Err((Error::unavailable("range write queue is full"), reply));
        }
        let first = queue.is_empty();
        queue.push((write, reply));
        Ok(if first { Pushed::First } else { Pushed::Queued })
    }

    /// Every waiting write, oldest first.
    pub fn take(&self) -> Vec<(Write, Responder)> {
        std::mem::take(&mut *self.queue.lock())
    }

    /// Answers every waiting write with `error` (the range is gone: nothing was written).
    pub fn refuse_all(&self, error: &Error) {
        for (_, reply) in self.take() {
            reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::batch::LoggedOp;
    use crate::range::core::Condition;
    use ampstore_common::Key;

    fn put() -> Write {
        Write { op: LoggedOp::Put { key: Key::from("k"), value: vec![1] }, condition: Condition::None, write_id: None }
    }

    #[test]
    fn the_first_write_wakes_the_actor_and_the_inbox_is_bounded() {
        let inbox = WriteInbox::default();
        let mut answers = Vec::new();
        for i in 0..RANGE_PENDING_WRITES_MAX {
            let (tx, rx) = Responder::once();
            answers.push(rx);
            let pushed = inbox.push(put(), tx).unwrap();
            assert_eq!(matches!(pushed, Pushed::First), i == 0, "write {i}");
        }
        let (tx, _rx) = Responder::once();
        assert!(inbox.push(put(), tx).is_err(), "one past the bound is refused");
        assert_eq!(inbox.take().len(), RANGE_PENDING_WRITES_MAX);
        let (tx, mut rx) = Responder::once();
        assert!(matches!(inbox.push(put(), tx).unwrap(), Pushed::First), "empty again: wakes again");
        inbox.refuse_all(&Error::NotOwner { hint: None });
        assert_eq!(rx.try_recv().unwrap(), Err(Error::NotOwner { hint: None }));
    }
}
