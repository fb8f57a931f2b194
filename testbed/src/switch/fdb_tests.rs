//! FDB rules with a virtual clock and a model database that executes plans
//! the way the OVSDB transaction does (clears by logical switch, deletes by
//! row, inserts with fresh UUIDs).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const S: Duration = Duration::from_secs(1);

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn ls(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

/// Rows as the database would hold them; `foreign` rows are someone else's.
#[derive(Default, Debug)]
struct Model {
    ucast: HashMap<Uuid, (Mac, Uuid, bool)>,
    mcast: HashMap<Uuid, Uuid>,
    next: u128,
    transactions: usize,
}

impl Model {
    fn fresh(&mut self) -> Uuid {
        self.next += 1;
        Uuid::from_u128(0xabc0_0000 + self.next)
    }

    /// Runs plans in parts of `part` changes until the FDB is satisfied.
    fn sync(&mut self, fdb: &mut Fdb, now: Duration, part: usize) {
        for _ in 0..10 {
            if !fdb.has_work() {
                return;
            }
            let plan = fdb.plan();
            for p in plan.split(part) {
                self.transactions += 1;
                for l in &p.clear {
                    self.ucast.retain(|_, r| r.1 != *l);
                    self.mcast.retain(|_, m| m != l);
                }
                for (_, row) in &p.delete {
                    assert!(self.ucast.remove(row).is_some(), "deleting a missing row");
                }
                let ucast: Vec<Uuid> = p
                    .insert
                    .iter()
                    .map(|(m, l)| {
                        let u = self.fresh();
                        self.ucast.insert(u, (*m, *l, false));
                        u
                    })
                    .collect();
                let mcast: Vec<Uuid> = p
                    .mcast_insert
                    .iter()
                    .map(|l| {
                        let u = self.fresh();
                        self.mcast.insert(u, *l);
                        u
                    })
                    .collect();
                fdb.applied(&p, &ucast, &mcast, now);
            }
        }
        panic!("the FDB never settles");
    }

    /// Our rows as (MAC → logical switch).
    fn local(&self) -> BTreeMap<Mac, Uuid> {
        let mut out = BTreeMap::new();
        for (m, l, foreign) in self.ucast.values() {
            if !foreign {
                assert!(out.insert(*m, *l).is_none(), "two local rows for {m}");
            }
        }
        out
    }

    fn mcast_of(&self, l: Uuid) -> usize {
        self.mcast.values().filter(|m| **m == l).count()
    }
}

fn ports(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn view(name: &str, bindings: &[(u16, Uuid)]) -> PortView {
    PortView {
        name: name.into(),
        bindings: bindings.to_vec(),
    }
}

fn population(count: u32) -> Population {
    Population {
        base: mac("02:00:00:00:10:00"),
        count,
        placement: Placement::Spread,
    }
}

#[test]
fn entries_stay_small() {
    // The scale target is a million hosts in one process.
    assert!(std::mem::size_of::<Entry>() <= 40);
}

#[test]
fn population_waits_for_bindings_then_spreads_over_bound_port_vlans() {
    let mut f = Fdb::new(&ports(&["p0", "p1", "p2"]), population(7), None).unwrap();
    let mut db = Model::default();
    db.sync(&mut f, S, 100);
    assert!(db.ucast.is_empty() && db.mcast.is_empty());
    assert_eq!(f.stats().hosts, 7);

    // Bind p2/20 → ls1 and p0/300, p0/10 → ls2 (given out of order).
    f.set_ports(&[
        view("p0", &[(300, ls(2)), (10, ls(2))]),
        view("p1", &[]),
        view("p2", &[(20, ls(1))]),
    ]);
    db.sync(&mut f, 2 * S, 100);
    // Slots in port order then VLAN: p0/10 (ls2), p0/300 (ls2), p2/20 (ls1).
    let slots = [("p0", 10, ls(2)), ("p0", 300, ls(2)), ("p2", 20, ls(1))];
    let local = db.local();
    assert_eq!(local.len(), 7);
    for i in 0..7u32 {
        let m = population(7).mac(i).unwrap();
        let (port, vlan, l) = slots[i as usize % 3];
        assert_eq!(local.get(&m), Some(&l), "host {i}");
        let v = f.mac(m).unwrap();
        assert_eq!((v.port.as_deref(), v.vlan), (Some(port), Some(vlan)));
        assert!(v.population);
    }
    assert_eq!(db.mcast_of(ls(1)), 1);
    assert_eq!(db.mcast_of(ls(2)), 1);
    assert_eq!(db.mcast.len(), 2);
}

#[test]
fn per_port_placement_keeps_hosts_on_their_ports() {
    let pop = Population {
        placement: Placement::PerPort,
        ..population(8)
    };
    let mut f = Fdb::new(&ports(&["p0", "p1"]), pop, None).unwrap();
    let mut db = Model::default();
    // Only p1 is bound: only its hosts (1, 3, 5, 7) are learnt.
    f.set_ports(&[view("p0", &[]), view("p1", &[(20, ls(1)), (10, ls(2))])]);
    db.sync(&mut f, S, 100);
    let local = db.local();
    assert_eq!(local.len(), 4);
    for i in [1u32, 3, 5, 7] {
        // Host i is the (i div 2)-th on p1, over VLANs 10 (ls2) and 20 (ls1).
        let want = if (i / 2) % 2 == 0 { ls(2) } else { ls(1) };
        assert_eq!(local.get(&pop.mac(i).unwrap()), Some(&want), "host {i}");
    }
    // Binding p0 moves none of p1's hosts.
    let before = db.local();
    f.set_ports(&[
        view("p0", &[(30, ls(3))]),
        view("p1", &[(20, ls(1)), (10, ls(2))]),
    ]);
    let plan = f.plan();
    assert!(plan.delete.is_empty(), "{plan:?}");
    assert_eq!(plan.insert.len(), 4);
    f.failed();
    db.sync(&mut f, 2 * S, 100);
    let after = db.local();
    assert_eq!(after.len(), 8);
    for (m, l) in &before {
        assert_eq!(after.get(m), Some(l));
    }
    let v = f.mac(pop.mac(2).unwrap()).unwrap();
    assert_eq!((v.port.as_deref(), v.vlan), (Some("p0"), Some(30)));
}

#[test]
fn rebinding_moves_rows_and_losing_the_last_binding_clears_the_logical_switch() {
    let mut f = Fdb::new(&ports(&["p0", "p1"]), population(4), None).unwrap();
    let mut db = Model::default();
    f.set_ports(&[view("p0", &[(100, ls(1))]), view("p1", &[(200, ls(2))])]);
    db.sync(&mut f, S, 100);
    assert_eq!(db.local().values().filter(|l| **l == ls(1)).count(), 2);
    // Someone else's local row in ls2, as vtep-ctl add-ucast-local makes.
    let foreign = db.fresh();
    db.ucast
        .insert(foreign, (mac("02:ff:00:00:00:01"), ls(2), true));

    // p1/200 moves to ls1: ls2 loses its last binding.
    f.set_ports(&[view("p0", &[(100, ls(1))]), view("p1", &[(200, ls(1))])]);
    db.sync(&mut f, 2 * S, 100);
    let local = db.local();
    assert_eq!(local.len(), 4);
    assert!(local.values().all(|l| *l == ls(1)));
    assert!(
        !db.ucast.contains_key(&foreign),
        "clear-local-macs removes every local row"
    );
    assert_eq!(db.mcast_of(ls(2)), 0);
    assert_eq!(db.mcast_of(ls(1)), 1);

    // Unbind everything: no local rows and no unknown-dst remain, hosts stay known.
    f.set_ports(&[view("p0", &[]), view("p1", &[])]);
    db.sync(&mut f, 3 * S, 100);
    assert!(db.ucast.is_empty() && db.mcast.is_empty());
    assert_eq!(f.stats().hosts, 4);
    assert_eq!(f.stats().local_rows, 0);

    // Binding again relearns them, with a fresh unknown-dst.
    f.set_ports(&[view("p0", &[(100, ls(3))]), view("p1", &[])]);
    db.sync(&mut f, 4 * S, 100);
    assert_eq!(db.local().len(), 4);
    assert_eq!(db.mcast_of(ls(3)), 1);
}

#[test]
fn remote_mac_in_the_same_logical_switch_withdraws_the_local_row_and_relearning_moves_it_back() {
    let mut f = Fdb::new(&ports(&["p0"]), Population::NONE, None).unwrap();
    let mut db = Model::default();
    f.set_ports(&[view("p0", &[(10, ls(1)), (20, ls(2))])]);
    let m = mac("02:00:00:00:00:aa");
    f.learn(m, "p0", 10, S).unwrap();
    db.sync(&mut f, S, 100);
    assert_eq!(db.local().get(&m), Some(&ls(1)));

    // A remote row for the MAC in another logical switch changes nothing.
    assert!(!f.remote_written(ls(2), m));
    // In its own logical switch, the host has moved away.
    assert!(f.remote_written(ls(1), m));
    db.sync(&mut f, 2 * S, 100);
    assert!(db.local().is_empty());
    assert_eq!(f.mac(m), None);
    assert_eq!(f.move_to(m, "p0", 10, 3 * S), Err(FdbError::UnknownMac(m)));

    // Seen locally again: a move back.
    f.learn(m, "p0", 10, 3 * S).unwrap();
    db.sync(&mut f, 3 * S, 100);
    assert_eq!(db.local().get(&m), Some(&ls(1)));
}

#[test]
fn aging_with_a_virtual_clock() {
    let mut f = Fdb::new(&ports(&["p0"]), Population::NONE, Some(10 * S)).unwrap();
    let mut db = Model::default();
    f.set_ports(&[view("p0", &[(1, ls(1))])]);
    let (a, b) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"));
    f.learn(a, "p0", 1, Duration::ZERO).unwrap();
    f.learn(b, "p0", 1, Duration::ZERO).unwrap();
    db.sync(&mut f, Duration::ZERO, 100);
    assert_eq!(f.next_wakeup(), Some(10 * S));

    // b talks again at 5 s: it now expires at 15 s.
    f.learn(b, "p0", 1, 5 * S).unwrap();
    assert_eq!(f.tick(Duration::from_millis(9_999)).aged, 0);
    assert_eq!(f.tick(10 * S).aged, 1);
    db.sync(&mut f, 10 * S, 100);
    assert_eq!(db.local().keys().copied().collect::<Vec<_>>(), vec![b]);
    assert_eq!(f.next_wakeup(), Some(15 * S));
    assert_eq!(f.tick(15 * S).aged, 1);
    db.sync(&mut f, 15 * S, 100);
    assert!(db.local().is_empty());
    assert_eq!(f.next_wakeup(), None);

    // Disabled aging never expires anything.
    f.set_aging(None);
    f.learn(a, "p0", 1, 20 * S).unwrap();
    db.sync(&mut f, 20 * S, 100);
    assert_eq!(f.next_wakeup(), None);
    assert_eq!(f.tick(Duration::from_secs(1_000_000)).aged, 0);
    assert_eq!(db.local().len(), 1);
}

#[test]
fn aging_starts_when_the_host_is_learnt_into_a_logical_switch() {
    // A host on an unbound VLAN is not in any bridge domain yet.
    let mut f = Fdb::new(&ports(&["p0"]), population(2), Some(10 * S)).unwrap();
    let mut db = Model::default();
    db.sync(&mut f, Duration::ZERO, 100);
    assert_eq!(f.tick(100 * S).aged, 0);
    f.set_ports(&[view("p0", &[(1, ls(1))])]);
    db.sync(&mut f, 100 * S, 100);
    assert_eq!(f.tick(105 * S).aged, 0);
    assert_eq!(f.tick(110 * S).aged, 2);
    db.sync(&mut f, 110 * S, 100);
    assert!(db.local().is_empty());
    // Aged population hosts are gone until learnt again.
    f.set_ports(&[view("p0", &[(1, ls(1)), (2, ls(1))])]);
    db.sync(&mut f, 111 * S, 100);
    assert!(db.local().is_empty());
}

#[test]
fn rows_deleted_by_someone_else_are_not_rewritten() {
    let mut f = Fdb::new(&ports(&["p0"]), population(3), None).unwrap();
    let mut db = Model::default();
    f.set_ports(&[view("p0", &[(1, ls(1))])]);
    db.sync(&mut f, S, 100);
    let m0 = population(3).mac(0).unwrap();
    let (row, _) = db
        .ucast
        .iter()
        .find(|(_, r)| r.0 == m0)
        .map(|(u, r)| (*u, *r))
        .unwrap();
    db.ucast.remove(&row);
    // A deletion of a row that is not ours (wrong UUID) changes nothing.
    assert!(!f.local_row_deleted(m0, Uuid::from_u128(1)));
    assert!(f.local_row_deleted(m0, row));
    let mrow = *db.mcast.keys().next().unwrap();
    db.mcast.remove(&mrow);
    assert!(f.mcast_row_deleted(ls(1), mrow));
    db.sync(&mut f, 2 * S, 100);
    assert_eq!(db.local().len(), 2);
    assert!(db.mcast.is_empty(), "a flushed unknown-dst stays flushed");
    assert_eq!(f.mac(m0), None);

    // A new binding epoch writes unknown-dst again.
    f.set_ports(&[view("p0", &[])]);
    db.sync(&mut f, 3 * S, 100);
    f.set_ports(&[view("p0", &[(1, ls(1))])]);
    db.sync(&mut f, 4 * S, 100);
    assert_eq!(db.mcast_of(ls(1)), 1);
}

#[test]
fn flap_moves_back_and_forth_at_the_interval_then_stops() {
    let mut f = Fdb::new(&ports(&["p0", "p1"]), Population::NONE, None).unwrap();
    let mut db = Model::default();
    f.set_ports(&[view("p0", &[(1, ls(1))]), view("p1", &[(2, ls(2))])]);
    let m = mac("02:00:00:00:00:0f");
    let spec = FlapSpec {
        mac: m,
        port: "p0".into(),
        vlan: 1,
        to: Some(("p1".into(), 2)),
        moves: 3,
        interval: 2 * S,
    };
    f.flap(&spec, Duration::ZERO).unwrap();
    db.sync(&mut f, Duration::ZERO, 100);
    let mut seen = vec![db.local().get(&m).copied()];
    let mut t = Duration::ZERO;
    while let Some(next) = f.next_wakeup() {
        t = next;
        assert_eq!(f.tick(t).flap_moves, 1);
        db.sync(&mut f, t, 100);
        seen.push(db.local().get(&m).copied());
    }
    assert_eq!(t, 6 * S);
    assert_eq!(
        seen,
        vec![Some(ls(1)), Some(ls(2)), Some(ls(1)), Some(ls(2))]
    );

    // Flapping to nowhere: the MAC appears and disappears.
    let spec = FlapSpec {
        to: None,
        moves: 2,
        ..spec
    };
    f.flap(&spec, 10 * S).unwrap();
    db.sync(&mut f, 10 * S, 100);
    assert!(db.local().contains_key(&m));
    f.tick(12 * S);
    db.sync(&mut f, 12 * S, 100);
    assert!(!db.local().contains_key(&m));
    f.tick(14 * S);
    db.sync(&mut f, 14 * S, 100);
    assert!(db.local().contains_key(&m));
    assert_eq!(f.next_wakeup(), None);
}

#[test]
fn a_failed_plan_is_planned_again() {
    let mut f = Fdb::new(&ports(&["p0"]), population(5), None).unwrap();
    f.set_ports(&[view("p0", &[(1, ls(1))])]);
    let first = f.plan();
    assert_eq!(first.insert.len(), 5);
    f.failed();
    let again = f.plan();
    let mut a = first.insert.clone();
    let mut b = again.insert.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn split_keeps_a_move_in_one_part_and_bounds_the_size() {
    let mv = mac("02:00:00:00:00:01");
    let plan = Plan {
        clear: vec![ls(9)],
        delete: vec![
            (mv, Uuid::from_u128(1)),
            (mac("02:00:00:00:00:02"), Uuid::from_u128(2)),
        ],
        insert: (0..7)
            .map(|i| (Mac::from_u64(0x0200_0000_0001 + i).unwrap(), ls(1)))
            .collect(),
        mcast_insert: vec![ls(1)],
    };
    let total = plan.len();
    let parts = plan.clone().split(3);
    assert_eq!(parts.iter().map(Plan::len).sum::<usize>(), total);
    assert!(parts.iter().all(|p| p.len() <= 3));
    let with_move = parts
        .iter()
        .find(|p| p.delete.iter().any(|d| d.0 == mv))
        .unwrap();
    assert!(with_move.insert.iter().any(|i| i.0 == mv));
    assert_eq!(parts[0].clear, vec![ls(9)]);
}

#[test]
fn bad_requests_are_errors() {
    let mut f = Fdb::new(&ports(&["p0"]), Population::NONE, None).unwrap();
    let m = mac("02:00:00:00:00:01");
    assert_eq!(
        f.learn(m, "nope", 1, S),
        Err(FdbError::UnknownPort("nope".into()))
    );
    assert_eq!(f.learn(m, "p0", 4096, S), Err(FdbError::BadVlan(4096)));
    let group = mac("01:00:5e:00:00:01");
    assert_eq!(
        f.learn(group, "p0", 1, S),
        Err(FdbError::NotLearnable(group))
    );
    assert_eq!(f.unlearn(m), Err(FdbError::UnknownMac(m)));
    assert_eq!(f.move_to(m, "p0", 1, S), Err(FdbError::UnknownMac(m)));
    // A population that would run into the group bit of the next octet.
    let bad = Population {
        base: mac("02:ff:ff:ff:ff:ff"),
        count: 2,
        placement: Placement::Spread,
    };
    assert!(Fdb::new(&ports(&["p0"]), bad, None).is_err());
}

#[test]
fn learning_on_an_unbound_vlan_waits_for_the_binding() {
    let mut f = Fdb::new(&ports(&["p0"]), Population::NONE, None).unwrap();
    let mut db = Model::default();
    let m = mac("02:00:00:00:00:01");
    f.learn(m, "p0", 7, S).unwrap();
    db.sync(&mut f, S, 100);
    assert!(db.local().is_empty());
    assert_eq!(f.mac(m).unwrap().row, None);
    f.set_ports(&[view("p0", &[(7, ls(1))])]);
    db.sync(&mut f, 2 * S, 100);
    assert_eq!(db.local().get(&m), Some(&ls(1)));
}

#[derive(Clone, Debug)]
enum Op {
    Bind(usize, u16, u128),
    Unbind(usize, u16),
    Learn(u64, usize, u16),
    Move(u64, usize, u16),
    Unlearn(u64),
    Remote(u64, u128),
    Flush(u64),
    AgeAll,
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let port = 0usize..3;
    let vlan = 1u16..4;
    let lsn = 0u128..3;
    let host = 0u64..12;
    prop_oneof![
        3 => (port.clone(), vlan.clone(), lsn.clone()).prop_map(|(p, v, l)| Op::Bind(p, v, l)),
        2 => (port.clone(), vlan.clone()).prop_map(|(p, v)| Op::Unbind(p, v)),
        3 => (host.clone(), port.clone(), vlan.clone()).prop_map(|(h, p, v)| Op::Learn(h, p, v)),
        1 => (host.clone(), port, vlan).prop_map(|(h, p, v)| Op::Move(h, p, v)),
        1 => host.clone().prop_map(Op::Unlearn),
        1 => (host.clone(), lsn).prop_map(|(h, l)| Op::Remote(h, l)),
        1 => host.prop_map(Op::Flush),
        1 => Just(Op::AgeAll),
        1 => (0u64..4000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After any sequence of bindings, learns, moves, remote MACs, flushes
    /// and aging, the database holds exactly the rows an independent model
    /// of the hosts implies (the test keeps its own hosts, places, learn
    /// times and bindings), each bound logical switch has one unknown-dst,
    /// and unbound ones have no local rows at all.
    #[test]
    fn rows_follow_hosts_and_bindings(
        ops in proptest::collection::vec(op(), 1..60),
        part in 2usize..8,
        per_port in proptest::bool::ANY,
    ) {
        const AGING_MS: u64 = 2500;
        let names = ["p0", "p1", "p2"];
        // hosts 0..4 are the population
        let placement = if per_port { Placement::PerPort } else { Placement::Spread };
        let pop = Population { placement, ..population(4) };
        let mut f = Fdb::new(&ports(&names), pop, Some(Duration::from_millis(AGING_MS))).unwrap();
        let mut db = Model::default();
        let mut bindings: BTreeMap<(usize, u16), Uuid> = BTreeMap::new();
        // host → (fixed place or None for the population's spread, last seen)
        let mut hosts: BTreeMap<u64, (Option<(usize, u16)>, Duration)> =
            (0..4).map(|h| (h, (None, Duration::ZERO))).collect();
        let mut now = Duration::ZERO;
        let host_mac = |h: u64| Mac::from_u64(0x0200_0000_1000 + h).unwrap();
        for op in ops {
            let rows_before = db.local();
            let row_of = |h: u64| rows_before.get(&host_mac(h)).copied();
            match op {
                Op::Bind(p, v, l) => { bindings.insert((p, v), ls(l)); }
                Op::Unbind(p, v) => { bindings.remove(&(p, v)); }
                Op::Learn(h, p, v) => {
                    f.learn(host_mac(h), names[p], v, now).unwrap();
                    hosts.insert(h, (Some((p, v)), now));
                }
                Op::Move(h, p, v) => {
                    let known = hosts.contains_key(&h);
                    prop_assert_eq!(f.move_to(host_mac(h), names[p], v, now).is_ok(), known);
                    if known {
                        hosts.insert(h, (Some((p, v)), now));
                    }
                }
                Op::Unlearn(h) => {
                    prop_assert_eq!(f.unlearn(host_mac(h)).is_ok(), hosts.remove(&h).is_some());
                }
                Op::Remote(h, l) => {
                    let moved = row_of(h) == Some(ls(l));
                    prop_assert_eq!(f.remote_written(ls(l), host_mac(h)), moved);
                    if moved {
                        hosts.remove(&h);
                    }
                }
                Op::Flush(h) => {
                    let m = host_mac(h);
                    let row = db.ucast.iter().find(|(_, r)| r.0 == m && !r.2).map(|(u, _)| *u);
                    if let Some(row) = row {
                        db.ucast.remove(&row);
                        prop_assert!(f.local_row_deleted(m, row));
                        hosts.remove(&h);
                    }
                }
                Op::AgeAll => {
                    let n = f.age_all();
                    let learnt: Vec<u64> = hosts.keys().copied().filter(|h| row_of(*h).is_some()).collect();
                    prop_assert_eq!(n, learnt.len());
                    for h in learnt {
                        hosts.remove(&h);
                    }
                }
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    f.tick(now);
                    let expired: Vec<u64> = hosts
                        .iter()
                        .filter(|(h, (_, seen))| row_of(**h).is_some() && *seen + Duration::from_millis(AGING_MS) <= now)
                        .map(|(h, _)| *h)
                        .collect();
                    for h in expired {
                        hosts.remove(&h);
                    }
                }
            }
            if matches!(op, Op::Bind(..) | Op::Unbind(..)) {
                let views: Vec<PortView> = names.iter().enumerate().map(|(p, n)| PortView {
                    name: n.to_string(),
                    bindings: bindings.range((p, 0)..(p + 1, 0)).map(|((_, v), l)| (*v, *l)).collect(),
                }).collect();
                f.set_ports(&views);
            }
            db.sync(&mut f, now, part);

            // What the model says the rows must be.
            let slots: Vec<Uuid> = bindings.values().copied().collect();
            let mut expected = BTreeMap::new();
            for (h, (place, _)) in &hosts {
                let h = *h as usize;
                let want = match place {
                    None if per_port => {
                        let port = h % names.len();
                        let vlans: Vec<Uuid> = bindings
                            .range((port, 0)..(port + 1, 0))
                            .map(|(_, l)| *l)
                            .collect();
                        (!vlans.is_empty()).then(|| vlans[(h / names.len()) % vlans.len()])
                    }
                    None if slots.is_empty() => None,
                    None => slots.get(h % slots.len()).copied(),
                    Some(pv) => bindings.get(pv).copied(),
                };
                if let Some(l) = want {
                    expected.insert(host_mac(h as u64), l);
                }
            }
            let local = db.local();
            prop_assert_eq!(&local, &expected);
            prop_assert_eq!(f.stats().local_rows, local.len());
            prop_assert_eq!(f.stats().hosts, hosts.len());
            // A row that appeared or changed logical switch was learnt now.
            for (m, l) in &local {
                if rows_before.get(m) != Some(l) {
                    let h = m.as_u64() - 0x0200_0000_1000;
                    if let Some(e) = hosts.get_mut(&h) {
                        e.1 = now;
                    }
                }
            }
            let bound: std::collections::BTreeSet<Uuid> = bindings.values().copied().collect();
            for l in 0..3 {
                let l = ls(l);
                if bound.contains(&l) {
                    prop_assert_eq!(db.mcast_of(l), 1);
                } else {
                    prop_assert_eq!(db.mcast_of(l), 0);
                    prop_assert!(db.ucast.values().all(|r| r.1 != l));
                }
            }
        }
    }
}
