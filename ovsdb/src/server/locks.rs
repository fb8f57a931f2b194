//! Named locks (RFC 7047 §4.1.8–4.1.10) as ovsdb-server implements them: a
//! queue of waiting sessions per lock, the owner at the front; `steal` puts
//! the thief in front and leaves the victim queued, so the victim gets the
//! lock back when the thief unlocks.

use std::collections::{HashMap, VecDeque};

pub type SessionId = u64;

#[derive(Debug, Default)]
pub struct LockTable {
    locks: HashMap<String, VecDeque<SessionId>>,
}

/// What a `lock` or `steal` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Locked {
    /// Whether the caller owns the lock now.
    pub owner: bool,
    /// The previous owner, when the caller stole the lock from it.
    pub victim: Option<SessionId>,
}

impl LockTable {
    /// Whether `session` holds or waits for `name`.
    pub fn has_waiter(&self, name: &str, session: SessionId) -> bool {
        self.locks.get(name).is_some_and(|q| q.contains(&session))
    }

    pub fn is_owner(&self, name: &str, session: SessionId) -> bool {
        self.locks.get(name).and_then(|q| q.front()) == Some(&session)
    }

    pub fn lock(&mut self, name: &str, session: SessionId, steal: bool) -> Locked {
        let q = self.locks.entry(name.to_string()).or_default();
        if steal {
            let victim = q.front().copied().filter(|v| *v != session);
            q.push_front(session);
            Locked {
                owner: true,
                victim,
            }
        } else {
            q.push_back(session);
            Locked {
                owner: q.front() == Some(&session),
                victim: None,
            }
        }
    }

    /// Removes the session's waiter; returns the new owner to notify.
    pub fn unlock(&mut self, name: &str, session: SessionId) -> Option<SessionId> {
        let q = self.locks.get_mut(name)?;
        let was_owner = q.front() == Some(&session);
        q.retain(|s| *s != session);
        let new_owner = if was_owner { q.front().copied() } else { None };
        if q.is_empty() {
            self.locks.remove(name);
        }
        new_owner
    }

    /// Drops everything a closing session held or waited for; returns
    /// (lock, new owner) pairs to notify.
    pub fn release_all(
        &mut self,
        names: &[String],
        session: SessionId,
    ) -> Vec<(String, SessionId)> {
        names
            .iter()
            .filter_map(|n| self.unlock(n, session).map(|o| (n.clone(), o)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_steal_and_hand_over() {
        let mut t = LockTable::default();
        assert_eq!(
            t.lock("a", 1, false),
            Locked {
                owner: true,
                victim: None
            }
        );
        assert_eq!(
            t.lock("a", 2, false),
            Locked {
                owner: false,
                victim: None
            }
        );
        assert_eq!(
            t.lock("a", 3, true),
            Locked {
                owner: true,
                victim: Some(1)
            }
        );
        assert!(t.is_owner("a", 3));
        // the thief unlocks: the victim is first in line again
        assert_eq!(t.unlock("a", 3), Some(1));
        assert_eq!(t.unlock("a", 2), None);
        assert_eq!(t.release_all(&["a".to_string()], 1), vec![]);
        assert!(!t.has_waiter("a", 1));
    }
}
