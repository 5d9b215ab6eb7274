//! The checkers: each takes a history (and, where it needs it, the final state read after
//! healing) and says whether the history is allowed.

pub mod bank;
pub mod counter;
pub mod list;
pub mod queue;
pub mod register;

/// A checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// A violation, described.
    Invalid(String),
    /// The checker could not decide (a history too large to search); not a violation.
    Unknown(String),
}

impl Verdict {
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Invalid(_))
    }
}
