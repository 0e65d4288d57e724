//! The rule of `routes[].fail_open` on health views alone ([`fail_open`], [`fails_open_now`],
//! [`pick_endpoint_failing_open`]); over real sockets in `tests/it/fail_open.rs`.

use std::net::SocketAddr;

use super::*;
use crate::config::{BackendConfig, HealthConfig};
use crate::table::RoutingTable;
use crate::weight::Percent;

type Table = RoutingTable<Arc<BackendHealth>>;

/// Route `web` with active checks: blue (active) at `blue_bp` on 2 endpoints, green on 2.
fn route_table(registry: &HealthRegistry, blue_bp: u32, fail_open: bool) -> Table {
    let backend = |base: u16, bp: u32| BackendConfig {
        endpoints: (0..2)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
            .collect(),
        weight: Some(Percent(bp)),
        ..BackendConfig::default()
    };
    let config = RouteConfig {
        name: "web".into(),
        blue: backend(30_000, blue_bp),
        green: backend(40_000, 10_000 - blue_bp),
        health: Some(HealthConfig::default()),
        fail_open,
        ..RouteConfig::default()
    };
    RoutingTable::build(1, vec![config], |route, slot, _| {
        registry.backend(route, slot, Balance::default())
    })
}

/// Endpoint `i` of `slot`: its first probe passed, then its checks failed (`passed`), or its
/// first probe failed (never passed).
fn down(table: &Table, slot: Slot, i: usize, passed: bool) {
    let endpoint = &table.routes()[0].backend(slot).upstream().endpoints()[i];
    if passed {
        endpoint.pass_first_check();
        endpoint.set_checked(false);
    } else {
        endpoint.fail_first_check();
    }
}

fn fails_open_to(table: &Table, picked: Slot) -> Option<Slot> {
    let route = &table.routes()[0];
    let picked = route.backend(picked);
    assert!(choose(route, picked).is_none(), "a backend can serve");
    fail_open(route, picked).map(|b| b.slot())
}

#[test]
fn each_request_fails_open_to_its_weighted_pick_and_only_to_endpoints_that_passed_a_check() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 9_000, true);
    down(&table, Slot::Blue, 0, true);
    down(&table, Slot::Blue, 1, false);
    down(&table, Slot::Green, 0, true);
    down(&table, Slot::Green, 1, true);
    assert!(fails_open_now(&table.routes()[0]));
    assert_eq!(fails_open_to(&table, Slot::Blue), Some(Slot::Blue));
    assert_eq!(fails_open_to(&table, Slot::Green), Some(Slot::Green));
    let blue = table.routes()[0].backend(Slot::Blue);
    for _ in 0..10 {
        assert_eq!(pick_endpoint(blue, None), None, "nothing is up");
        assert_eq!(
            pick_endpoint_failing_open(blue, None),
            Some(0),
            "C02: never endpoint 1"
        );
    }
    assert_eq!(
        pick_endpoint_failing_open(blue, Some(0)),
        Some(0),
        "the only one"
    );
    // Green's endpoints both passed once: round-robin over both, one turn per request.
    let green = table.routes()[0].backend(Slot::Green);
    let picks: Vec<_> = (0..4)
        .map(|_| pick_endpoint_failing_open(green, None).unwrap())
        .collect();
    assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2, "{picks:?}");
}

#[test]
fn a_backend_whose_endpoints_never_passed_a_check_gives_its_requests_to_the_other() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 5_000, true);
    for i in 0..2 {
        down(&table, Slot::Blue, i, true);
        down(&table, Slot::Green, i, false);
    }
    assert_eq!(fails_open_to(&table, Slot::Green), Some(Slot::Blue));
}

#[test]
fn a_weight_0_preview_never_fails_open() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 10_000, true);
    for i in 0..2 {
        down(&table, Slot::Blue, i, false);
        down(&table, Slot::Green, i, true);
    }
    assert_eq!(fails_open_to(&table, Slot::Blue), None, "C03");
    assert!(!fails_open_now(&table.routes()[0]));
}

#[test]
fn a_tripped_backend_never_fails_open_and_alone_leaves_503() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 5_000, true);
    for i in 0..2 {
        down(&table, Slot::Blue, i, true);
        down(&table, Slot::Green, i, true);
    }
    let green = table.routes()[0].backend(Slot::Green).upstream();
    assert!(green.state.trip());
    assert_eq!(fails_open_to(&table, Slot::Green), Some(Slot::Blue));
    // Blue with nothing that passed a check (a fresh table's endpoints): the tripped green alone.
    let table = route_table(&HealthRegistry::new(), 5_000, true);
    for i in 0..2 {
        down(&table, Slot::Blue, i, false);
        down(&table, Slot::Green, i, true);
    }
    table.routes()[0]
        .backend(Slot::Green)
        .upstream()
        .state
        .trip();
    assert_eq!(fails_open_to(&table, Slot::Green), None);
    assert_eq!(fails_open_to(&table, Slot::Blue), None);
    assert!(!fails_open_now(&table.routes()[0]));
}

#[test]
fn with_fail_open_off_nothing_fails_open() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 5_000, false);
    for i in 0..2 {
        down(&table, Slot::Blue, i, true);
        down(&table, Slot::Green, i, true);
    }
    assert_eq!(fails_open_to(&table, Slot::Blue), None);
    assert!(!fails_open_now(&table.routes()[0]));
}

#[test]
fn the_state_is_said_once_each_way_and_ends_with_the_routes_fail_open() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 5_000, true);
    for i in 0..2 {
        down(&table, Slot::Blue, i, true);
        down(&table, Slot::Green, i, true);
    }
    let route = &table.routes()[0];
    let state = |slot: Slot| route.backend(slot).upstream().failing_open();
    sent_failing_open(route, route.backend(Slot::Green));
    assert!(
        state(Slot::Blue) && state(Slot::Green),
        "one state per route"
    );
    sent_failing_open(route, route.backend(Slot::Blue));
    let sent = |slot: Slot| route.backend(slot).upstream().fail_open_requests();
    assert_eq!((sent(Slot::Blue), sent(Slot::Green)), (1, 1));
    // A blue endpoint back: the next request health routes ends the state.
    route.backend(Slot::Blue).upstream().endpoints()[0].set_checked(true);
    assert_eq!(
        choose(route, route.backend(Slot::Green)).map(|b| b.slot()),
        Some(Slot::Blue)
    );
    assert!(!state(Slot::Blue) && !state(Slot::Green));
    // Failing open again, then the route's fail_open goes off by reload: the state ends.
    route.backend(Slot::Blue).upstream().endpoints()[0].set_checked(false);
    sent_failing_open(route, route.backend(Slot::Blue));
    assert!(state(Slot::Blue));
    let mut off = route_config(&table);
    off.fail_open = false;
    registry.sync(&[off]);
    assert!(!state(Slot::Blue) && !state(Slot::Green));
}

/// The config `table`'s route was built from, as `route_table` makes it.
fn route_config(table: &Table) -> RouteConfig {
    let route = &table.routes()[0];
    let backend = |slot: Slot| BackendConfig {
        endpoints: route.backend(slot).endpoints().to_vec(),
        weight: Some(Percent(route.weights().of(slot))),
        ..BackendConfig::default()
    };
    RouteConfig {
        name: "web".into(),
        blue: backend(Slot::Blue),
        green: backend(Slot::Green),
        health: Some(HealthConfig::default()),
        ..RouteConfig::default()
    }
}

/// Trial 32, A: an endpoint withdrawn by what runs its server (a supervised process that
/// exited) takes no request, failing open included: whatever answers on its address is not the
/// backend. The withdrawal lasts across table rebuilds, and restoring it lets requests back.
#[test]
fn a_withdrawn_endpoint_takes_no_request_failing_open_included_until_restored() {
    let registry = HealthRegistry::new();
    let table = route_table(&registry, 10_000, true);
    for slot in [Slot::Blue, Slot::Green] {
        for endpoint in table.routes()[0].backend(slot).upstream().endpoints() {
            endpoint.pass_first_check();
        }
    }
    let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 30_000 + i));
    assert_eq!(
        registry.set_withdrawn("web", Slot::Blue, addr(0), true),
        Some(true)
    );
    assert_eq!(
        registry.set_withdrawn("web", Slot::Blue, addr(0), true),
        Some(false)
    );
    assert_eq!(
        registry.set_withdrawn("web", Slot::Blue, addr(9), true),
        None
    );
    let blue = table.routes()[0].backend(Slot::Blue);
    for _ in 0..10 {
        assert_eq!(
            pick_endpoint(blue, None),
            Some(1),
            "only the other endpoint"
        );
    }
    assert!(blue.upstream().status()[0].withdrawn);
    assert!(!blue.upstream().status()[0].healthy);

    // Both withdrawn: blue cannot serve, and does not fail open to either.
    registry.set_withdrawn("web", Slot::Blue, addr(1), true);
    assert!(!blue.upstream().may_fail_open());
    assert_eq!(pick_endpoint_failing_open(blue, None), None);
    // The green (weight 0, not the active slot) takes nothing either: the route has no backend.
    down(&table, Slot::Green, 0, true);
    down(&table, Slot::Green, 1, true);
    let route = &table.routes()[0];
    assert!(choose(route, route.backend(Slot::Blue)).is_none());

    // A rebuilt table keeps the withdrawal; restoring lets requests back.
    let rebuilt = route_table(&registry, 10_000, true);
    let blue = rebuilt.routes()[0].backend(Slot::Blue);
    assert_eq!(pick_endpoint(blue, None), None);
    registry.set_withdrawn("web", Slot::Blue, addr(1), false);
    assert_eq!(pick_endpoint(blue, None), Some(1));
}
