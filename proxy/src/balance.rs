//! Weighted least-connections selection, pure.
//!
//! Mirrors HAProxy's `balance leastconn` (`src/lb_fwlc.c`): a backend's load is
//! `(inflight + 1) / weight`; the lowest load wins and equal loads take turns (round-robin),
//! which HAProxy gets from re-inserting a picked server behind its equals. Here each backend
//! carries the sequence number of its last pick and the least recently picked wins a tie.
//! Weight 0 means "drain": never picked.

/// What the selector needs to know about one backend at the moment of choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Sessions currently held (leases).
    pub inflight: u32,
    /// Effective weight (after admin state and readiness percentage); 0 = not eligible.
    pub weight: u32,
    /// Sequence number of the last time this backend was picked (0 = never).
    pub last_pick: u64,
    /// Healthy, ready and under its connection limit.
    pub eligible: bool,
}

/// A selection policy over a snapshot of candidates.
pub trait Selector {
    /// The index of the chosen candidate, skipping ineligible ones and `excluded` indexes.
    fn select(&self, candidates: &[Candidate], excluded: &[usize]) -> Option<usize>;
}

/// Weighted least-connections with round-robin among equal loads.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastConn;

impl LeastConn {
    /// `a` is strictly less loaded than `b` (cross-multiplied: no rounding).
    fn lighter(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
        let la = (u64::from(a.inflight) + 1) * u64::from(b.weight);
        let lb = (u64::from(b.inflight) + 1) * u64::from(a.weight);
        la.cmp(&lb).then(a.last_pick.cmp(&b.last_pick))
    }
}

impl Selector for LeastConn {
    fn select(&self, candidates: &[Candidate], excluded: &[usize]) -> Option<usize> {
        candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| c.eligible && c.weight > 0 && !excluded.contains(i))
            .min_by(|(ia, a), (ib, b)| Self::lighter(a, b).then(ia.cmp(ib)))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(inflight: u32, weight: u32) -> Candidate {
        Candidate {
            inflight,
            weight,
            last_pick: 0,
            eligible: true,
        }
    }

    /// Runs `n` picks, updating counts and pick sequence as the runtime does.
    fn simulate(cands: &mut [Candidate], n: usize) -> Vec<usize> {
        let mut seq = 0;
        let mut picks = Vec::new();
        for _ in 0..n {
            let i = LeastConn.select(cands, &[]).unwrap();
            seq += 1;
            cands[i].inflight += 1;
            cands[i].last_pick = seq;
            picks.push(i);
        }
        picks
    }

    #[test]
    fn least_loaded_wins() {
        let c = [cand(3, 100), cand(1, 100), cand(2, 100)];
        assert_eq!(LeastConn.select(&c, &[]), Some(1));
    }

    #[test]
    fn equal_loads_take_turns() {
        let mut c = [cand(0, 100), cand(0, 100), cand(0, 100)];
        let picks = simulate(&mut c, 6);
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_scale_the_share() {
        let mut c = [cand(0, 300), cand(0, 100)];
        simulate(&mut c, 400);
        assert_eq!(c[0].inflight, 300);
        assert_eq!(c[1].inflight, 100);
    }

    #[test]
    fn weight_zero_ineligible_and_excluded_are_skipped() {
        let mut c = [cand(0, 0), cand(5, 100), cand(0, 100)];
        c[2].eligible = false;
        assert_eq!(LeastConn.select(&c, &[]), Some(1));
        assert_eq!(LeastConn.select(&c, &[1]), None);
    }

    #[test]
    fn a_returning_backend_gets_new_sessions_without_failback() {
        // Backend 0 was down: all 10 sessions live on 1. New sessions go to 0 until even.
        let mut c = [cand(0, 100), cand(10, 100)];
        let picks = simulate(&mut c, 10);
        assert!(picks.iter().all(|&i| i == 0));
    }

    proptest! {
        /// With equal weights, loads never differ by more than one after any number of picks.
        #[test]
        fn equal_weights_stay_balanced(n in 1usize..6, picks in 0usize..300) {
            let mut c = vec![cand(0, 100); n];
            simulate(&mut c, picks);
            let max = c.iter().map(|c| c.inflight).max().unwrap();
            let min = c.iter().map(|c| c.inflight).min().unwrap();
            prop_assert!(max - min <= 1);
        }

        /// The pick is always a least-loaded eligible candidate.
        #[test]
        fn pick_is_minimal(v in proptest::collection::vec((0u32..50, 0u32..300, any::<bool>()), 1..8)) {
            let c: Vec<Candidate> = v.iter().map(|&(i, w, e)| Candidate { inflight: i, weight: w, last_pick: 0, eligible: e }).collect();
            match LeastConn.select(&c, &[]) {
                None => prop_assert!(c.iter().all(|c| !c.eligible || c.weight == 0)),
                Some(p) => {
                    for o in c.iter().filter(|c| c.eligible && c.weight > 0) {
                        let lp = (u64::from(c[p].inflight) + 1) * u64::from(o.weight);
                        let lo = (u64::from(o.inflight) + 1) * u64::from(c[p].weight);
                        prop_assert!(lp <= lo);
                    }
                }
            }
        }
    }
}
