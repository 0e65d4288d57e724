use super::*;
use crate::rng::WyRand;

const MS: u64 = 1_000_000;

fn p2c_default() -> Balance {
    Balance::new(
        BalancePolicy::P2cPeakEwma,
        Balance::DEFAULT_RTT,
        Balance::DEFAULT_DECAY,
    )
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= expected * 1e-9 + 1e-6
}

#[test]
fn defaults_are_round_robin_with_linkerds_ewma_parameters() {
    let balance = Balance::default();
    assert_eq!(balance.policy, BalancePolicy::RoundRobin);
    assert_eq!(balance.default_rtt(), Duration::from_millis(30));
    assert_eq!(balance.decay(), Duration::from_secs(10));
}

#[test]
fn route_fields_win_over_global_ones_field_by_field() {
    let global = BalanceConfig {
        policy: Some(BalancePolicy::RoundRobin),
        default_rtt: Some(Duration::from_millis(5)),
        decay: Some(Duration::from_secs(3)),
    };
    let route = BalanceConfig {
        default_rtt: Some(Duration::from_millis(100)),
        ..BalanceConfig::default()
    };
    let balance = Balance::resolve(Some(&route), &global);
    assert_eq!(balance.policy, BalancePolicy::RoundRobin);
    assert_eq!(balance.default_rtt(), Duration::from_millis(100));
    assert_eq!(balance.decay(), Duration::from_secs(3));
}

#[test]
fn a_fresh_endpoint_starts_at_the_default_rtt_and_decays_toward_zero() {
    let balance = p2c_default();
    let load = EndpointLoad::new(5 * MS);
    assert!(close(load.rtt_ns(&balance, 5 * MS), 30.0 * MS as f64));
    // One time constant later, 1/e of it is left (tower's `default_decay` test).
    let later = 5 * MS + 10_000 * MS;
    let expected = 30.0 * MS as f64 / std::f64::consts::E;
    assert!(close(load.rtt_ns(&balance, later), expected));
}

#[test]
fn a_peak_takes_effect_at_once_and_fades_with_the_decay() {
    let balance = p2c_default();
    let load = EndpointLoad::new(0);
    // Steady 10 ms responses, one every millisecond for 100 s: the estimate settles at 10 ms.
    let mut now = 0;
    for _ in 0..100_000 {
        now += MS;
        load.observe(&balance, 10 * MS, now);
    }
    let settled = load.rtt_ns(&balance, now);
    assert!(
        (settled - 10.0 * MS as f64).abs() < 0.01 * MS as f64,
        "{settled}"
    );
    // One 200 ms response: the estimate is 200 ms at once.
    now += MS;
    load.observe(&balance, 200 * MS, now);
    assert!(close(load.rtt_ns(&balance, now), 200.0 * MS as f64));
    // 10 ms responses again: after one decay time constant (10 s) about 1/e of the excess is
    // left, and after ten of them, nothing that matters.
    let peak_at = now;
    while now < peak_at + 10_000 * MS {
        now += MS;
        load.observe(&balance, 10 * MS, now);
    }
    let excess = load.rtt_ns(&balance, now) - 10.0 * MS as f64;
    let expected = 190.0 * MS as f64 / std::f64::consts::E;
    assert!(
        (excess - expected).abs() < 0.01 * expected,
        "{excess} vs {expected}"
    );
    while now < peak_at + 100_000 * MS {
        now += MS;
        load.observe(&balance, 10 * MS, now);
    }
    let settled = load.rtt_ns(&balance, now);
    assert!(
        (settled - 10.0 * MS as f64).abs() < 0.01 * MS as f64,
        "{settled}"
    );
}

#[test]
fn cost_is_rtt_times_pending_plus_one_and_pending_ends_with_the_guard() {
    let balance = p2c_default();
    let load = EndpointLoad::new(0);
    let rtt = load.rtt_ns(&balance, 0);
    let first = load.dispatch(&balance);
    let second = load.dispatch(&balance);
    assert_eq!(load.pending(), 2);
    assert!(close(load.cost(&balance, 0), 3.0 * rtt));
    first.responded(20 * MS, 20 * MS);
    assert_eq!(load.pending(), 1);
    drop(second); // cancelled: no sample, no longer pending
    assert_eq!(load.pending(), 0);
    assert!(close(
        load.cost(&balance, 20 * MS),
        load.rtt_ns(&balance, 20 * MS)
    ));
}

#[test]
fn a_failure_never_makes_an_endpoint_cheaper() {
    let balance = p2c_default();
    let fast = EndpointLoad::new(0);
    fast.observe(&balance, MS, MS);
    // A connect refused after 0.1 ms: counted as a 30 ms peak (the default RTT), not 0.1 ms.
    fast.dispatch(&balance).failed(MS / 10, 2 * MS);
    assert!(close(fast.rtt_ns(&balance, 2 * MS), 30.0 * MS as f64));
    // On a slow endpoint, a fast failure leaves the estimate where it is.
    let slow = EndpointLoad::new(0);
    slow.observe(&balance, 500 * MS, 500 * MS);
    let before = slow.rtt_ns(&balance, 501 * MS);
    slow.dispatch(&balance).failed(MS, 501 * MS);
    assert!(close(slow.rtt_ns(&balance, 501 * MS), before));
    // A timeout is a peak like any slow answer.
    slow.dispatch(&balance).failed(2_000 * MS, 2_501 * MS);
    assert!(close(
        slow.rtt_ns(&balance, 2_501 * MS),
        2_000.0 * MS as f64
    ));
}

#[test]
fn p2c_takes_the_cheaper_of_two_and_never_an_ineligible_endpoint() {
    let mut rng = WyRand::new(3);
    let costs = [5.0, 1.0, 3.0, 2.0];
    let mut counts = [0u32; 4];
    for _ in 0..10_000 {
        let i = p2c(4, |i| i != 1, |i| costs[i], &mut rng).unwrap();
        counts[i] += 1;
    }
    assert_eq!(counts[1], 0, "ineligible");
    // Among {0, 2, 3}: pairs {0,2}→2, {0,3}→3, {2,3}→3, each a third of the time; 0 never wins.
    assert_eq!(counts[0], 0, "the most expensive never wins a pair");
    let third = f64::from(counts[2]) / 10_000.0;
    assert!(
        (third - 1.0 / 3.0).abs() < 4.0 * (2.0f64 / 9.0 / 10_000.0).sqrt(),
        "{third}"
    );
    assert_eq!(p2c(4, |_| false, |i| costs[i], &mut rng), None);
    assert_eq!(p2c(4, |i| i == 2, |i| costs[i], &mut rng), Some(2));
    assert_eq!(p2c(1, |_| true, |_| 1.0, &mut rng), Some(0));
    assert_eq!(p2c(0, |_| true, |_| 1.0, &mut rng), None);
}

#[test]
fn p2c_draws_every_pair_equally_often_on_ties() {
    let mut rng = WyRand::new(11);
    let n = 5;
    let draws = 50_000u32;
    let mut counts = vec![0u32; n];
    for _ in 0..draws {
        counts[p2c(n, |_| true, |_| 1.0, &mut rng).unwrap()] += 1;
    }
    assert_even(&counts, "equal costs");
}

/// Asserts every count is within 4 binomial standard deviations of an even share.
fn assert_even(counts: &[u32], what: &str) {
    let total: u32 = counts.iter().sum();
    let p = 1.0 / counts.len() as f64;
    let sigma = (f64::from(total) * p * (1.0 - p)).sqrt();
    for (i, &c) in counts.iter().enumerate() {
        let off = (f64::from(c) - f64::from(total) * p).abs();
        assert!(
            off <= 4.0 * sigma,
            "{what}: endpoint {i} got {c} of {total} (even {:.0} ± {:.0}): {counts:?}",
            f64::from(total) * p,
            4.0 * sigma
        );
    }
}

/// How a simulated load runs: a request every `gap` ns, `requests` of them, latencies spread
/// uniformly over ±`jitter_pct` % around each endpoint's own, drawn from `seed`.
#[derive(Clone, Copy)]
struct Load {
    requests: u32,
    gap: u64,
    jitter_pct: u64,
    seed: u64,
}

/// A discrete-event run on an injected clock: each request goes to the endpoint `balance` picks
/// and is answered after that endpoint's latency. Returns requests per endpoint.
fn simulate(balance: &Balance, latencies_ms: &[u64], run: Load) -> Vec<u32> {
    let Load {
        requests,
        gap,
        jitter_pct,
        seed,
    } = run;
    let n = latencies_ms.len();
    let loads: Vec<EndpointLoad> = (0..n).map(|_| EndpointLoad::new(0)).collect();
    let mut rng = WyRand::new(seed);
    let mut jitter = WyRand::new(seed ^ 0x5eed);
    let mut in_flight: Vec<(u64, u64, Pending<'_>)> = Vec::new();
    let mut counts = vec![0u32; n];
    let mut cursor = 0usize;
    for k in 0..u64::from(requests) {
        let now = k * gap;
        // Answers due by now arrive first, in time order.
        in_flight.sort_by_key(|(done, _, _)| std::cmp::Reverse(*done));
        while in_flight.last().is_some_and(|(done, _, _)| *done <= now) {
            if let Some((done, sent, pending)) = in_flight.pop() {
                pending.responded(done - sent, done);
            }
        }
        let i = match balance.policy {
            BalancePolicy::P2cPeakEwma => {
                p2c(n, |_| true, |i| loads[i].cost(balance, now), &mut rng).unwrap()
            }
            BalancePolicy::RoundRobin => {
                cursor += 1;
                cursor % n
            }
        };
        counts[i] += 1;
        let base = latencies_ms[i] * MS;
        let width = base * jitter_pct / 100;
        let spread = (u64::from(jitter.next_u32()) * (2 * width)) >> 32;
        let latency = base - width + spread;
        in_flight.push((now + latency, now, loads[i].dispatch(balance)));
    }
    counts
}

#[test]
fn equal_latencies_give_even_shares() {
    let balance = p2c_default();
    let cases: [(&[u64], Load); 4] = [
        // Constant 10 ms, a request every 0.5 ms (20 in flight).
        (&[10, 10], load(40_000, MS / 2, 0, 1)),
        (&[10, 10, 10, 10], load(40_000, MS / 2, 0, 2)),
        // 10 ms ± 20 %, a request every 0.1 ms (100 in flight): pending counts even it out.
        (&[10, 10, 10, 10], load(40_000, MS / 10, 20, 3)),
        (&[10; 7], load(40_000, MS / 10, 20, 4)),
    ];
    for (latencies, run) in cases {
        let counts = simulate(&balance, latencies, run);
        let what = format!("latencies {latencies:?}, jitter {}%", run.jitter_pct);
        assert_even(&counts, &what);
    }
}

#[test]
fn a_slow_endpoint_gets_a_smaller_share() {
    let balance = p2c_default();
    let rr = Balance::new(
        BalancePolicy::RoundRobin,
        Balance::DEFAULT_RTT,
        Balance::DEFAULT_DECAY,
    );
    for (gap, seed) in [(MS / 2, 1), (MS / 10, 2), (MS, 3)] {
        // Endpoint 1 answers in 50 ms, endpoint 0 in 10 ms (± 20 %).
        let run = load(40_000, gap, 20, seed);
        let counts = simulate(&balance, &[10, 50], run);
        let slow = f64::from(counts[1]) / 40_000.0;
        // Round-robin gives it half; p2c what its five-times cost leaves.
        assert!(slow < 0.25, "gap {gap} ns: slow share {slow}: {counts:?}");
        assert!(
            counts[1] > 0,
            "the slow endpoint still serves under load: {counts:?}"
        );
        let round_robin = simulate(&rr, &[10, 50], run);
        assert_eq!(round_robin, vec![20_000, 20_000]);
    }
    // Among four, one slow: it gets less than an even share, the three fast ones share the rest.
    let counts = simulate(&balance, &[10, 10, 50, 10], load(40_000, MS / 10, 20, 4));
    assert!(f64::from(counts[2]) / 40_000.0 < 0.15, "{counts:?}");
    assert_even(&[counts[0], counts[1], counts[3]], "the fast three");
}

fn load(requests: u32, gap: u64, jitter_pct: u64, seed: u64) -> Load {
    Load {
        requests,
        gap,
        jitter_pct,
        seed,
    }
}

#[test]
fn an_idle_slow_endpoint_is_tried_again_once_its_peak_faded() {
    let balance = p2c_default();
    let fast = EndpointLoad::new(0);
    let slow = EndpointLoad::new(0);
    fast.observe(&balance, 5 * MS, 5 * MS);
    slow.observe(&balance, 500 * MS, 500 * MS);
    let costs = |now| [fast.cost(&balance, now), slow.cost(&balance, now)];
    let pick = |now, rng: &mut WyRand| p2c(2, |_| true, |i| costs(now)[i], rng);
    let mut rng = WyRand::new(5);
    assert_eq!(pick(MS * 501, &mut rng), Some(0));
    // Both decay at the same rate while idle, so the order holds until the fast one is sampled
    // again; then the slow one's faded peak (500 ms × e^-6 ≈ 1.2 ms) is below the fast one's 5 ms.
    let later = 60_000 * MS;
    fast.observe(&balance, 5 * MS, later);
    assert_eq!(pick(later, &mut rng), Some(1));
}
