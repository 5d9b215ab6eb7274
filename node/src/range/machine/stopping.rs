//! Stopping the range: the one fencing reaction, a plain stop, and a stop on a broken
//! invariant. Each answers every waiter once and ends in one `Effect::Stop`.

use ampstore_common::Seq;
use ampstore_common::error::Error;

use super::{Effect, Ending, Phase, RangeMachine, StopHow, not_owner, reply_all};

impl<W, M> RangeMachine<W, M> {
    /// The one fencing reaction: a newer owner took a slot of ours (or the descriptor names
    /// another owner). Every waiter is answered (writers `Fenced`: nothing of theirs was
    /// written), and the range stops.
    pub(super) fn fence(&mut self, taken_seq: Option<Seq>, out: &mut Vec<Effect<W, M>>) {
        reply_all(self.core.on_fenced(), out);
        self.answer_waiters(Ending::Fenced, out);
        if let Some(seq) = taken_seq {
            out.push(Effect::LearnNewOwner { seq });
        }
        self.stop_serving(out);
    }

    /// Stops the range: an append still in flight may land after it, so its writers learn
    /// "unknown" (`Timeout`); everything else waiting learns the range is gone.
    pub(super) fn stop_serving(&mut self, out: &mut Vec<Effect<W, M>>) {
        reply_all(self.core.abandon_in_flight(), out);
        reply_all(self.core.refuse_pending(not_owner()), out);
        self.answer_waiters(Ending::Departed, out);
        self.phase = Phase::Stopped;
        out.push(Effect::Stop(StopHow::Departed));
    }

    /// A safety invariant did not hold (`RangeCore::broken`): stop the range with the reason
    /// (requests are told it; the directory shows it), never panic.
    pub(super) fn stop_if_broken(&mut self, out: &mut Vec<Effect<W, M>>) -> bool {
        let Some(reason) = self.core.broken().map(str::to_string) else { return false };
        self.stop_broken(reason, out);
        true
    }

    /// A lifecycle invariant of the machine itself did not hold (an input that cannot come in
    /// this phase: a bug in the driver or here): stop with it rather than guess.
    pub(super) fn broken_invariant(&mut self, why: String, out: &mut Vec<Effect<W, M>>) {
        let reason = format!("{}: lifecycle invariant violated: {why}", self.core.range_id());
        tracing::error!(%reason, "range stopped");
        self.stop_broken(reason, out);
    }

    /// The append in flight may still land, so its writers learn "unknown"; the rest learn
    /// the reason.
    fn stop_broken(&mut self, reason: String, out: &mut Vec<Effect<W, M>>) {
        reply_all(self.core.abandon_in_flight(), out);
        reply_all(self.core.refuse_pending(Error::internal(reason.clone())), out);
        self.answer_waiters(Ending::Broken(reason.clone()), out);
        self.phase = Phase::Stopped;
        out.push(Effect::Stop(StopHow::Failed { reason }));
    }

    /// Answers every lifecycle waiter at once. Each gets what its caller would have made of a
    /// range that stopped without answering (a closed channel): `NotOwner` for snapshot,
    /// release and merge callers and remote prepares, `Timeout` ("outcome unknown") for
    /// transaction callers whose entry may be on its way; a fence and a broken invariant are
    /// named where they decide the answer.
    pub(super) fn answer_waiters(&mut self, ending: Ending, out: &mut Vec<Effect<W, M>>) {
        let gone = match &ending {
            Ending::Broken(reason) => Error::internal(reason.clone()),
            Ending::Fenced | Ending::Departed => not_owner(),
        };
        match std::mem::replace(&mut self.phase, Phase::Serving) {
            Phase::Releasing { waiters, .. } | Phase::Splitting { release: Some(waiters), .. } => {
                out.extend(waiters.into_iter().map(|w| Effect::Reply(w, Err(gone.clone()))));
            }
            Phase::MergeClosing { reply, .. } | Phase::MergeAppending { reply, .. } => {
                let err = if matches!(ending, Ending::Fenced) { Error::Fenced } else { not_owner() };
                out.push(Effect::ReplyMerge(reply, Err(err)));
            }
            other => self.phase = other,
        }
        for (_, w) in self.snapshots.waiters.drain(..) {
            out.push(Effect::Reply(w, Err(gone.clone())));
        }
        self.txns.answer_all(&ending, out);
    }
}
