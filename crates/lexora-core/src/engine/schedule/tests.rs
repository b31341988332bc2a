//! The scheduling policy on its own: a [`Board`] driven with explicit
//! times, no engines, no runtime.

use std::sync::Weak;

use super::*;
use crate::engine::Variant;

fn model(name: &str, variants: &[(u32, u64)]) -> EngineModel {
    EngineModel {
        name: name.into(),
        variants: variants
            .iter()
            .enumerate()
            .map(|(i, (context, memory))| Variant {
                name: format!("v{i}"),
                binary: "llama-server".into(),
                args: Vec::new(),
                context: *context,
                memory_mb: Some(*memory),
            })
            .collect(),
    }
}

struct Sim {
    board: Board,
    t0: Instant,
    /// Granted claims not yet released: (slot, epoch).
    claims: Vec<(SlotId, u64)>,
    receivers: Vec<oneshot::Receiver<Claim>>,
}

impl Sim {
    fn new(budget: Option<u64>, min_loaded_s: u64) -> Self {
        let board = Board {
            settings: ScheduleSettings {
                memory_budget_mb: budget,
                min_loaded: Duration::from_secs(min_loaded_s),
            },
            ..Board::default()
        };
        Self {
            board,
            t0: Instant::now(),
            claims: Vec::new(),
            receivers: Vec::new(),
        }
    }

    fn slot(&mut self, model: &EngineModel, idle_s: Option<u64>) -> SlotId {
        self.board.add_slot(
            Weak::new(),
            model,
            idle_s.map(Duration::from_secs),
            Duration::from_secs(60),
        )
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn ask(&mut self, slot: SlotId, min_variant: usize, priority: Priority, ms: u64) {
        let (_, rx) = self.board.enqueue(slot, min_variant, priority, self.at(ms));
        // Kept so the waiter counts as present (a closed receiver is a
        // request that went away).
        self.receivers.push(rx);
    }

    /// Plans at `ms`; returns the grants as (slot, variant) and the stops.
    fn plan(&mut self, ms: u64) -> (Vec<(SlotId, usize)>, Vec<Stop>, Option<Instant>) {
        let decisions = self.board.plan(self.at(ms));
        let grants = decisions
            .grants
            .iter()
            .map(|g| {
                self.claims.push((g.slot, g.epoch));
                (g.slot, g.variant)
            })
            .collect();
        (grants, decisions.stops, decisions.wake_at)
    }

    fn release_all(&mut self, slot: SlotId, ms: u64) {
        let now = self.at(ms);
        let (done, kept): (Vec<_>, Vec<_>) = self.claims.drain(..).partition(|(s, _)| *s == slot);
        self.claims = kept;
        for (s, epoch) in done {
            self.board.release(s, epoch, now);
        }
    }

    fn resident(&self, slot: SlotId) -> Option<usize> {
        self.board.slots[&slot].resident.as_ref().map(|r| r.variant)
    }
}

#[test]
fn without_a_budget_every_model_loads_at_once() {
    let mut sim = Sim::new(None, 10);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.ask(b, 0, Priority::Normal, 0);
    let (grants, stops, _) = sim.plan(0);
    assert_eq!(grants, vec![(a, 0), (b, 0)]);
    assert!(stops.is_empty());
}

#[test]
fn a_loaded_larger_variant_serves_small_requests_without_a_swap() {
    let mut sim = Sim::new(None, 10);
    let a = sim.slot(&model("a", &[(1024, 100), (8192, 200)]), None);
    sim.ask(a, 1, Priority::Normal, 0);
    assert_eq!(sim.plan(0).0, vec![(a, 1)]);
    sim.ask(a, 0, Priority::Normal, 5);
    assert_eq!(sim.plan(5).0, vec![(a, 1)], "served by the large variant");
    assert_eq!(sim.resident(a), Some(1));
}

#[test]
fn a_larger_context_swaps_the_variant_once_its_requests_drained() {
    let mut sim = Sim::new(None, 0);
    let a = sim.slot(&model("a", &[(1024, 100), (8192, 200)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    assert_eq!(sim.plan(0).0, vec![(a, 0)]);
    sim.ask(a, 1, Priority::Normal, 1);
    let (grants, stops, _) = sim.plan(1);
    assert!(
        grants.is_empty() && stops.is_empty(),
        "the small one is still running"
    );
    sim.ask(a, 0, Priority::Normal, 2);
    assert!(
        sim.plan(2).0.is_empty(),
        "a closing engine takes no new requests"
    );
    sim.release_all(a, 3);
    let (_, stops, _) = sim.plan(3);
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].reason, Reason::Evict);
    assert!(!stops[0].forced);
    sim.board.stopped(a, stops[0].epoch);
    let (grants, _, _) = sim.plan(4);
    assert_eq!(
        grants,
        vec![(a, 1), (a, 1)],
        "both waiters go to the large variant"
    );
}

#[test]
fn a_busy_engine_keeps_its_place_for_min_loaded_then_yields() {
    let mut sim = Sim::new(Some(100), 10);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    assert_eq!(sim.plan(0).0, vec![(a, 0)]);
    sim.ask(b, 0, Priority::Normal, 100);
    let (grants, stops, wake) = sim.plan(100);
    assert!(grants.is_empty() && stops.is_empty());
    assert_eq!(wake, Some(sim.at(10_000)), "plans again when `a` may yield");
    // Before then, `a` still takes its own newcomers.
    sim.ask(a, 0, Priority::Normal, 5_000);
    assert_eq!(sim.plan(5_000).0, vec![(a, 0)]);
    // After min_loaded, `a` closes: its newcomers wait behind `b`.
    sim.ask(a, 0, Priority::Normal, 10_000);
    let (grants, stops, _) = sim.plan(10_000);
    assert!(grants.is_empty() && stops.is_empty(), "`a` drains first");
    sim.release_all(a, 11_000);
    let (_, stops, _) = sim.plan(11_000);
    assert_eq!(stops.len(), 1);
    sim.board.stopped(stops[0].slot, stops[0].epoch);
    let (grants, _, _) = sim.plan(11_100);
    assert_eq!(grants, vec![(b, 0)]);
    assert_eq!(sim.resident(a), None);
}

#[test]
fn an_idle_engine_is_evicted_at_once() {
    let mut sim = Sim::new(Some(100), 3600);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.plan(0);
    sim.release_all(a, 10);
    sim.ask(b, 0, Priority::Normal, 20);
    let (_, stops, _) = sim.plan(20);
    assert_eq!(stops.len(), 1, "no demand: min_loaded does not hold it");
    assert_eq!(stops[0].slot, a);
}

#[test]
fn the_least_recently_used_engine_makes_room() {
    let mut sim = Sim::new(Some(200), 0);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    let c = sim.slot(&model("c", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.ask(b, 0, Priority::Normal, 1);
    sim.plan(1);
    sim.release_all(b, 5);
    sim.release_all(a, 9);
    sim.ask(c, 0, Priority::Normal, 10);
    let (_, stops, _) = sim.plan(10);
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].slot, b, "b was used least recently");
    assert_eq!(sim.board.memory_used(), 200);
    sim.board.stopped(b, stops[0].epoch);
    assert_eq!(sim.plan(11).0, vec![(c, 0)]);
    assert_eq!(sim.resident(a), Some(0));
}

#[test]
fn high_priority_decides_the_next_load() {
    let mut sim = Sim::new(Some(100), 0);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    let c = sim.slot(&model("c", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.plan(0);
    sim.ask(b, 0, Priority::Low, 1);
    sim.ask(c, 0, Priority::High, 2);
    sim.plan(2);
    sim.release_all(a, 3);
    let (_, stops, _) = sim.plan(3);
    sim.board.stopped(a, stops[0].epoch);
    assert_eq!(sim.plan(4).0, vec![(c, 0)], "high before low, though later");
}

#[test]
fn idle_engines_unload_after_their_ttl() {
    let mut sim = Sim::new(None, 10);
    let a = sim.slot(&model("a", &[(1024, 100)]), Some(60));
    sim.ask(a, 0, Priority::Normal, 0);
    sim.plan(0);
    sim.release_all(a, 1_000);
    let (_, stops, wake) = sim.plan(1_000);
    assert!(stops.is_empty());
    assert_eq!(wake, Some(sim.at(61_000)));
    let (_, stops, _) = sim.plan(61_000);
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].reason, Reason::Idle);
}

#[test]
fn a_drain_that_takes_too_long_is_forced() {
    let mut sim = Sim::new(Some(100), 0);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.plan(0);
    sim.ask(b, 0, Priority::Normal, 1);
    let (_, stops, wake) = sim.plan(1);
    assert!(stops.is_empty());
    assert_eq!(wake, Some(sim.at(60_001)), "the drain timeout");
    let (_, stops, _) = sim.plan(60_001);
    assert_eq!(stops.len(), 1);
    assert!(stops[0].forced);
}

#[test]
fn withdrawn_waiters_no_longer_hold_a_commitment() {
    let mut sim = Sim::new(Some(100), 3600);
    let a = sim.slot(&model("a", &[(1024, 100)]), None);
    let b = sim.slot(&model("b", &[(1024, 100)]), None);
    sim.ask(a, 0, Priority::Normal, 0);
    sim.plan(0);
    sim.ask(b, 0, Priority::Normal, 1);
    sim.plan(1);
    sim.receivers.pop(); // the request for `b` went away
    sim.ask(a, 0, Priority::Normal, 2);
    assert_eq!(sim.plan(2).0, vec![(a, 0)]);
}

/// A mixed burst for two models with room for one: requests alternate
/// between them, each runs 200 ms, up to four at a time per engine, and a
/// load takes 100 ms. Counts loads and the longest wait.
#[test]
fn a_mixed_burst_is_served_in_few_swaps_without_starvation() {
    let mut sim = Sim::new(Some(100), 2);
    let models = [
        sim.slot(&model("a", &[(1024, 100)]), None),
        sim.slot(&model("b", &[(1024, 100)]), None),
    ];
    // 120 requests over 6 s, alternating.
    let arrivals: Vec<(u64, SlotId)> = (0..120).map(|i| (i * 50, models[i as usize % 2])).collect();
    let mut next = 0;
    let mut waiting: Vec<(u64, SlotId)> = Vec::new();
    let mut running: Vec<(u64, SlotId, u64)> = Vec::new(); // (ends, slot, epoch)
    let mut stopping: Vec<(u64, SlotId, u64)> = Vec::new(); // (done at, slot, epoch)
    let mut loads = 0;
    let mut longest_wait = 0;
    let mut served = 0;
    let mut last_resident = [None, None];
    for ms in (0..60_000).step_by(10) {
        while next < arrivals.len() && arrivals[next].0 <= ms {
            let (at, slot) = arrivals[next];
            sim.ask(slot, 0, Priority::Normal, at);
            waiting.push((at, slot));
            next += 1;
        }
        for (end, slot, epoch) in std::mem::take(&mut running) {
            if end <= ms {
                sim.board.release(slot, epoch, sim.at(ms));
                served += 1;
            } else {
                running.push((end, slot, epoch));
            }
        }
        for (done, slot, epoch) in std::mem::take(&mut stopping) {
            if done <= ms {
                sim.board.stopped(slot, epoch);
            } else {
                stopping.push((done, slot, epoch));
            }
        }
        let decisions = sim.board.plan(sim.at(ms));
        for stop in decisions.stops {
            stopping.push((ms + 50, stop.slot, stop.epoch));
        }
        for (i, slot) in models.iter().enumerate() {
            let now = sim.board.slots[slot].resident.as_ref().map(|r| r.epoch);
            if now.is_some() && now != last_resident[i] {
                loads += 1;
            }
            last_resident[i] = now;
        }
        for grant in decisions.grants {
            let pos = waiting.iter().position(|(_, s)| *s == grant.slot).unwrap();
            let (at, _) = waiting.remove(pos);
            longest_wait = longest_wait.max(ms - at);
            // The first request after a load also waits for the start.
            running.push((ms + 100 + 200, grant.slot, grant.epoch));
        }
        if served == arrivals.len() {
            break;
        }
    }
    assert_eq!(served, 120, "every request was served");
    // One request per swap would be 120 loads; batches take a handful.
    assert!(loads <= 8, "{loads} loads");
    // Nobody waits much longer than min_loaded plus a drain and a load.
    assert!(longest_wait <= 4_000, "longest wait {longest_wait} ms");
    eprintln!("mixed burst: {served} served, {loads} loads, longest wait {longest_wait} ms");
}
