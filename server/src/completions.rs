//! Answers that reach a connection from other threads without a future of their own.
//!
//! A write handed to its range used to be a future per request in the connection's
//! `FuturesUnordered`: a boxed handler future, a task cell, a oneshot channel, a timer for
//! its deadline, and a wake-up of the connection per answer. With `Service::start` (in
//! `rpc`), the service hands the request on with a [`ConnReply`] instead, and whoever
//! finishes it pushes
//! the answer into the connection's [`Sink`]: the first answer of a burst wakes the
//! connection, the others only join the queue, and the connection takes them all at once
//! (a range's batch answers its writes to one connection with one wake-up).
//!
//! The connection keeps, for each request handed on, a [`Slots`] entry (its id, when it was
//! read, its deadline). An answer for a slot that is no longer the one it was given for
//! (its deadline passed and `Timeout` went out; the slot was reused) is dropped. A
//! `ConnReply` dropped unanswered (its range stopped with the write on its way to the log)
//! answers `Timeout`: the outcome is unknown.

use std::sync::Arc;
use std::time::Instant;

use ampstore_common::error::Error;
use ampstore_common::ids::RequestId;
use ampstore_common::protocol::Reply;
use futures_util::task::AtomicWaker;

/// One finished request: its slot, the slot's generation when handed on, its result.
pub(crate) type Finished = (u32, u32, Result<Reply, Error>);

/// Where the answers of one connection's handed-on requests wait for it.
#[derive(Default)]
pub(crate) struct Sink {
    done: parking_lot::Mutex<Vec<Finished>>,
    waker: AtomicWaker,
}

impl Sink {
    fn push(&self, finished: Finished) {
        let first = {
            let mut done = self.done.lock();
            done.push(finished);
            done.len() == 1
        };
        // Only the first answer of a burst wakes the connection: it takes them all.
        if first {
            self.waker.wake();
        }
    }

    /// Moves every waiting answer into `into` (emptied first).
    pub(crate) fn take(&self, into: &mut Vec<Finished>) {
        into.clear();
        std::mem::swap(&mut *self.done.lock(), into);
    }

    /// Ready once an answer waits (the connection's task is woken when the first comes).
    pub(crate) fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.done.lock().is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    }
}

/// The answer of one request a connection handed on (`Service::start`): send it once.
/// Dropped unsent, it answers `Timeout` (the outcome is unknown to whoever dropped it).
pub struct ConnReply {
    sink: Arc<Sink>,
    slot: u32,
    generation: u32,
    sent: bool,
}

impl ConnReply {
    pub fn send(mut self, result: Result<Reply, Error>) {
        self.sent = true;
        self.sink.push((self.slot, self.generation, result));
    }
}

impl Drop for ConnReply {
    fn drop(&mut self) {
        if !self.sent {
            self.sink.push((self.slot, self.generation, Err(Error::Timeout)));
        }
    }
}

impl std::fmt::Debug for ConnReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnReply(slot {}, generation {})", self.slot, self.generation)
    }
}

/// A request handed on: what its answer needs.
pub(crate) struct Waiting {
    pub id: RequestId,
    /// `Op::index`, for the metrics.
    pub op_index: usize,
    pub started: Instant,
    pub deadline: Option<Instant>,
}

struct Slot {
    generation: u32,
    waiting: Option<Waiting>,
}

/// A connection's requests handed on, by slot (reused; a generation tells uses apart).
#[derive(Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    busy: usize,
    deadlines: usize,
}

impl Slots {
    /// Requests handed on and not answered yet.
    pub(crate) fn busy(&self) -> usize {
        self.busy
    }

    /// Whether any request handed on has a deadline.
    pub(crate) fn any_deadline(&self) -> bool {
        self.deadlines > 0
    }

    /// Takes a slot for `waiting`; its answer goes to `sink`.
    pub(crate) fn hand_on(&mut self, sink: &Arc<Sink>, waiting: Waiting) -> ConnReply {
        self.busy += 1;
        self.deadlines += usize::from(waiting.deadline.is_some());
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, waiting: None });
                // Bounded by the requests a connection may have in flight.
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.waiting = Some(waiting);
        ConnReply { sink: sink.clone(), slot, generation: s.generation, sent: false }
    }

    /// The request an answer is for, when it still waits (freeing its slot); `None` for an
    /// answer that came too late (its deadline passed) or is not for this connection.
    pub(crate) fn finish(&mut self, slot: u32, generation: u32) -> Option<Waiting> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        let waiting = s.waiting.take()?;
        self.release(slot, &waiting);
        Some(waiting)
    }

    /// Every waiting request whose deadline is before `now` (freeing their slots).
    pub(crate) fn overdue(&mut self, now: Instant) -> Vec<Waiting> {
        let mut late = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].waiting.as_ref().is_some_and(|w| w.deadline.is_some_and(|d| d <= now))
                && let Some(w) = self.slots[i].waiting.take()
            {
                self.release(i as u32, &w);
                late.push(w);
            }
        }
        late
    }

    fn release(&mut self, slot: u32, waiting: &Waiting) {
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.busy -= 1;
        self.deadlines -= usize::from(waiting.deadline.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiting(id: u64, deadline: Option<Instant>) -> Waiting {
        Waiting { id: RequestId(id), op_index: 0, started: Instant::now(), deadline }
    }

    fn taken(sink: &Sink) -> Vec<Finished> {
        let mut v = Vec::new();
        sink.take(&mut v);
        v
    }

    #[test]
    fn an_answer_finds_its_request_once() {
        let sink = Arc::new(Sink::default());
        let mut slots = Slots::default();
        let reply = slots.hand_on(&sink, waiting(7, None));
        assert_eq!(slots.busy(), 1);
        reply.send(Ok(Reply::Pong));
        let done = taken(&sink);
        assert_eq!(done.len(), 1);
        let (slot, generation, result) = &done[0];
        assert_eq!(result, &Ok(Reply::Pong));
        assert_eq!(slots.finish(*slot, *generation).map(|w| w.id), Some(RequestId(7)));
        assert_eq!(slots.busy(), 0);
        assert!(slots.finish(*slot, *generation).is_none(), "answered once");
    }

    #[test]
    fn a_reply_dropped_unsent_answers_timeout() {
        let sink = Arc::new(Sink::default());
        let mut slots = Slots::default();
        drop(slots.hand_on(&sink, waiting(1, None)));
        let done = taken(&sink);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].2, Err(Error::Timeout));
    }

    /// A request past its deadline leaves; its late answer is not taken for the request
    /// that reuses the slot.
    #[test]
    fn an_answer_after_the_deadline_is_dropped_and_the_slot_reused() {
        let sink = Arc::new(Sink::default());
        let mut slots = Slots::default();
        let t0 = Instant::now();
        let late = slots.hand_on(&sink, waiting(1, Some(t0 + Duration::from_millis(10))));
        let on_time = slots.hand_on(&sink, waiting(2, Some(t0 + Duration::from_secs(60))));
        assert!(slots.any_deadline());
        assert!(slots.overdue(t0).is_empty());
        let gone: Vec<RequestId> = slots.overdue(t0 + Duration::from_millis(10)).into_iter().map(|w| w.id).collect();
        assert_eq!(gone, [RequestId(1)]);
        let reuse = slots.hand_on(&sink, waiting(3, None));
        late.send(Ok(Reply::Pong));
        reuse.send(Ok(Reply::Pong));
        on_time.send(Ok(Reply::Pong));
        let ids: Vec<Option<RequestId>> =
            taken(&sink).into_iter().map(|(s, g, _)| slots.finish(s, g).map(|w| w.id)).collect();
        assert_eq!(ids, [None, Some(RequestId(3)), Some(RequestId(2))]);
        assert_eq!((slots.busy(), slots.any_deadline()), (0, false));
    }

    /// The first answer of a burst wakes the connection; the rest only queue.
    #[test]
    fn only_the_first_answer_of_a_burst_wakes() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(count.clone());
        let sink = Arc::new(Sink::default());
        let mut slots = Slots::default();
        assert!(sink.poll_ready(&mut std::task::Context::from_waker(&waker)).is_pending());
        let replies: Vec<ConnReply> = (0..3).map(|i| slots.hand_on(&sink, waiting(i, None))).collect();
        for r in replies {
            r.send(Ok(Reply::Pong));
        }
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(sink.poll_ready(&mut std::task::Context::from_waker(&waker)).is_ready());
        assert_eq!(taken(&sink).len(), 3);
    }
}
