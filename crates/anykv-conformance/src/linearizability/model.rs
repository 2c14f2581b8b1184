//! The model of one key: a revisioned register, and the states a call can
//! lead to from a given state.

use super::Outcome;

/// The revision of a key, as far as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Rev {
    Known(u64),
    /// Written by a call with an unknown outcome: some revision above this.
    Above(u64),
}

/// One key's state: absent, or a value (by its index in the key's value
/// table) at a revision; and the lowest the key's highest revision ever can
/// be, which every new write must exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyState {
    pub(super) value: Option<(u32, Rev)>,
    pub(super) floor: u64,
}

impl KeyState {
    pub(super) const ABSENT: KeyState = KeyState {
        value: None,
        floor: 0,
    };

    /// The state if the key is present at revision `r`, pinning an unknown
    /// revision to `r`; `None` if it is not.
    pub(super) fn at(self, r: u64) -> Option<KeyState> {
        match self.value {
            Some((_, Rev::Known(x))) if x == r => Some(self),
            Some((v, Rev::Above(lb))) if r > lb => Some(KeyState {
                value: Some((v, Rev::Known(r))),
                floor: self.floor.max(r),
            }),
            _ => None,
        }
    }

    /// The state if the key holds value `v` at revision `r`.
    pub(super) fn holds(self, v: u32, r: u64) -> Option<KeyState> {
        match self.value {
            Some((x, _)) if x == v => self.at(r),
            _ => None,
        }
    }

    /// After a write of `v` at revision `r`, if `r` is new for the key.
    pub(super) fn write(self, v: u32, r: u64) -> Option<KeyState> {
        (r > self.floor).then_some(KeyState {
            value: Some((v, Rev::Known(r))),
            floor: r,
        })
    }

    /// After a write of `v` at a revision nobody saw.
    pub(super) fn write_unknown(self, v: u32) -> KeyState {
        KeyState {
            value: Some((v, Rev::Above(self.floor))),
            floor: self.floor.saturating_add(1),
        }
    }

    pub(super) fn cleared(self) -> KeyState {
        KeyState {
            value: None,
            floor: self.floor,
        }
    }

    pub(super) fn present(self) -> bool {
        self.value.is_some()
    }
}

/// A successful or failed conditional write, as the model needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cond {
    Applied(u64),
    Exists,
    Modified(u64),
    NotFound,
    Unknown,
}

/// One call projected onto one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyOp {
    /// `get` or a `list` projection: absent, or value and revision.
    Read(Option<(u32, u64)>),
    Exists(bool),
    /// `put`: its revision, `None` when unknown.
    Put(u32, Option<u64>),
    /// `delete`: what it returned, `None` when unknown.
    Delete(Option<bool>),
    Create(u32, Cond),
    Swap(u32, u64, Cond),
    SwapDelete(u64, Cond),
}

pub(super) type Successors = [Option<KeyState>; 2];

/// The states a call can lead to from `s`: none if it cannot take effect
/// there, two for a write with an unknown outcome (applied, or not).
pub(super) fn step(s: KeyState, op: KeyOp) -> Successors {
    let one = |x: Option<KeyState>| [x, None];
    let either = |applied: Option<KeyState>| [applied, Some(s)];
    match op {
        KeyOp::Read(None) => one((!s.present()).then_some(s)),
        KeyOp::Read(Some((v, r))) => one(s.holds(v, r)),
        KeyOp::Exists(b) => one((s.present() == b).then_some(s)),
        KeyOp::Put(v, Some(r)) => one(s.write(v, r)),
        KeyOp::Put(v, None) => either(Some(s.write_unknown(v))),
        KeyOp::Delete(Some(b)) => one((s.present() == b).then_some(s.cleared())),
        KeyOp::Delete(None) => either(Some(s.cleared())),
        KeyOp::Create(v, c) => match c {
            Cond::Applied(r) if !s.present() => one(s.write(v, r)),
            Cond::Exists if s.present() => one(Some(s)),
            Cond::Unknown if !s.present() => either(Some(s.write_unknown(v))),
            Cond::Unknown => one(Some(s)),
            _ => one(None),
        },
        KeyOp::Swap(v, e, c) => match c {
            Cond::Applied(r) => one(s.at(e).and_then(|p| p.write(v, r))),
            Cond::Modified(a) if a != e => one(s.at(a)),
            Cond::NotFound if !s.present() => one(Some(s)),
            Cond::Unknown => match s.at(e) {
                Some(p) => either(Some(p.write_unknown(v))),
                None => one(Some(s)),
            },
            _ => one(None),
        },
        KeyOp::SwapDelete(e, c) => match c {
            Cond::Applied(_) => one(s.at(e).map(KeyState::cleared)),
            Cond::Modified(a) if a != e => one(s.at(a)),
            Cond::NotFound if !s.present() => one(Some(s)),
            Cond::Unknown => either(s.at(e).map(KeyState::cleared)),
            _ => one(None),
        },
    }
}

pub(super) fn cond(outcome: &Outcome) -> Cond {
    match outcome {
        Outcome::Revision(r) => Cond::Applied(*r),
        Outcome::Done => Cond::Applied(0),
        Outcome::KeyExists => Cond::Exists,
        Outcome::KeyModified { actual } => Cond::Modified(*actual),
        Outcome::KeyNotFound => Cond::NotFound,
        _ => Cond::Unknown,
    }
}
