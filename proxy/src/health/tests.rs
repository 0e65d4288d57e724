use std::net::SocketAddr;
use std::time::Duration;

use super::checker::Streak;
use super::*;
use crate::config::{BackendConfig, HealthConfig, ProxyConfig};
use crate::table::RoutingTable;
use crate::weight::Percent;

impl HasHealth for Arc<BackendHealth> {
    fn health(&self) -> &BackendHealth {
        self
    }
}

fn addrs(base: u16, n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect()
}

/// Route `web`: blue 90 % on 2 endpoints, green 10 % on 2 endpoints.
fn route(blue_bp: u32) -> RouteConfig {
    RouteConfig {
        name: "web".into(),
        blue: BackendConfig {
            endpoints: addrs(10_000, 2),
            weight: Some(Percent(blue_bp)),
            ..BackendConfig::default()
        },
        green: BackendConfig {
            endpoints: addrs(20_000, 2),
            weight: Some(Percent(10_000 - blue_bp)),
            ..BackendConfig::default()
        },
        ..RouteConfig::default()
    }
}

fn table(registry: &HealthRegistry, config: RouteConfig) -> RoutingTable<Arc<BackendHealth>> {
    RoutingTable::build(1, vec![config], |route, slot, _| {
        registry.backend(route, slot, Balance::default())
    })
}

fn chosen(table: &RoutingTable<Arc<BackendHealth>>, r: u32) -> Option<Slot> {
    let route = &table.routes()[0];
    choose(route, route.pick(r)?).map(|b| b.slot())
}

#[test]
fn one_failed_probe_below_fall_keeps_the_endpoint_up() {
    let config = HealthConfig::default(); // rise 2, fall 2
    let mut streak = Streak::default();
    assert_eq!(streak.observe(false, true, &config), None);
    assert_eq!(streak.observe(true, true, &config), None);
    assert_eq!(streak.observe(false, true, &config), None);
    assert_eq!(streak.observe(false, true, &config), Some(false));
    assert_eq!(streak.observe(true, false, &config), None);
    assert_eq!(streak.observe(false, false, &config), None);
    assert_eq!(streak.observe(true, false, &config), None);
    assert_eq!(streak.observe(true, false, &config), Some(true));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_for_the_base_times_the_ejection_count() {
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let green = table.routes()[0].backend(Slot::Green);
    let health = green.upstream();
    let mut events = registry.subscribe();
    for _ in 0..2 {
        health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    }
    assert!(
        health.endpoints()[0].is_up(health.hub.now_ms()),
        "2 < 3 failures"
    );
    health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    assert_eq!(
        health.endpoints()[0].ejected_for_ms(health.hub.now_ms()),
        Some(1_000)
    );
    assert!(matches!(
        events.try_recv(),
        Ok(ProxyEvent::EndpointDown {
            reason: EjectReason::UpstreamFailure,
            ..
        })
    ));
    // The endpoint pick skips the ejected endpoint.
    for _ in 0..10 {
        assert_eq!(pick_endpoint(green, None), Some(1));
    }
    // A retry avoids the endpoint it failed on, unless it is the only one up.
    assert_eq!(pick_endpoint(green, Some(1)), Some(1), "the only one up");
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert!(health.endpoints()[0].is_up(health.hub.now_ms()));
    for _ in 0..3 {
        health.record_failure(0, ErrorKind::Reset, Slot::Blue);
    }
    assert_eq!(
        health.endpoints()[0].ejected_for_ms(health.hub.now_ms()),
        Some(2_000)
    );
    assert_eq!(registry.slots()[1].2.ejections(), [2, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_success_after_readmission_keeps_the_count_and_quiet_time_lowers_it() {
    // Trial 11, L7: an endpoint failing 80 % always has a success among its next requests; the
    // count must grow anyway (Envoy: it decays only with time re-admitted without an ejection).
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let health = table.routes()[0].backend(Slot::Green).upstream();
    let endpoint = &health.endpoints()[0];
    let eject = || {
        for _ in 0..3 {
            health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
        }
        endpoint.ejected_for_ms(health.hub.now_ms())
    };
    for n in 1..=3u64 {
        assert_eq!(eject(), Some(n * 1_000), "ejection {n}");
        tokio::time::advance(Duration::from_millis(n * 1_000 + 1)).await;
        health.record_status(0, StatusCode::OK, Slot::Blue);
        assert_eq!(u64::from(health.status()[0].ejections), n);
    }
    // 9.999 s re-admitted: not yet one decay_interval (10 s) since the ejection ended.
    tokio::time::advance(Duration::from_millis(9_998)).await;
    assert_eq!(health.status()[0].ejections, 3);
    // Two intervals quiet: 3 − 2 = 1, so the next ejection is the second: 2 s.
    tokio::time::advance(Duration::from_millis(10_001)).await;
    assert_eq!(health.status()[0].ejections, 1);
    assert_eq!(eject(), Some(2_000));
    assert_eq!(health.status()[0].ejections, 2);
}

#[tokio::test(start_paused = true)]
async fn the_ejection_count_stops_where_max_ejection_is_reached() {
    let registry = HealthRegistry::new();
    let mut config = route(9_000);
    config.outlier.max_ejection = Duration::from_millis(2_500);
    let table = table(&registry, config);
    let health = table.routes()[0].backend(Slot::Green).upstream();
    let mut lengths = Vec::new();
    for _ in 0..5 {
        for _ in 0..3 {
            health.record_failure(0, ErrorKind::Reset, Slot::Blue);
        }
        let now = health.hub.now_ms();
        let left = health.endpoints()[0].ejected_for_ms(now).unwrap_or(0);
        lengths.push(left);
        tokio::time::advance(Duration::from_millis(left + 1)).await;
    }
    assert_eq!(lengths, [1_000, 2_000, 2_500, 2_500, 2_500]);
    // ⌈2.5 s / 1 s⌉ = 3: three quiet intervals bring it back to the base.
    assert_eq!(health.status()[0].ejections, 3);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(health.status()[0].ejections, 0);
}

#[test]
fn a_probe_readmits_only_an_endpoint_held_by_an_ejection_alone_and_after_its_backoff() {
    use super::checker::Hold;
    // held, ok, ejected → ...
    assert_eq!(Hold::of(true, true, false), Hold::Readmit);
    assert_eq!(Hold::of(true, true, true), Hold::Wait);
    assert_eq!(Hold::of(true, false, false), Hold::Checks);
    assert_eq!(Hold::of(false, true, false), Hold::Checks);
    assert_eq!(Hold::of(false, true, true), Hold::Checks);
}

#[tokio::test(start_paused = true)]
async fn with_checks_an_ejected_endpoint_waits_for_them_after_its_backoff() {
    let registry = HealthRegistry::new();
    let mut config = route(9_000);
    config.health = Some(HealthConfig::default());
    let table = table(&registry, config.clone());
    let health = table.routes()[0].backend(Slot::Green).upstream();
    for _ in 0..3 {
        health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    }
    tokio::time::advance(Duration::from_millis(1_001)).await;
    let endpoint = &health.endpoints()[0];
    assert!(
        !endpoint.is_up(health.hub.now_ms()),
        "the checks have not passed yet"
    );
    let mut streak = Streak::default();
    let rise = config.health.as_ref().map(|h| h.rise).unwrap_or_default();
    for _ in 0..rise {
        if let Some(up) = streak.observe(true, endpoint.checked_up(), &HealthConfig::default()) {
            endpoint.set_checked(up);
        }
    }
    assert!(endpoint.is_up(health.hub.now_ms()));
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_eject_only_when_configured() {
    let registry = HealthRegistry::new();
    let mut config = route(9_000);
    let off = table(&registry, config.clone());
    let health = off.routes()[0].backend(Slot::Green).upstream();
    for _ in 0..10 {
        health.record_status(0, StatusCode::INTERNAL_SERVER_ERROR, Slot::Blue);
    }
    assert!(health.endpoints()[0].is_up(health.hub.now_ms()));
    config.outlier.consecutive_5xx = 5;
    let on = table(&registry, config);
    let health = on.routes()[0].backend(Slot::Green).upstream();
    for _ in 0..5 {
        health.record_status(1, StatusCode::BAD_GATEWAY, Slot::Blue);
    }
    assert!(!health.endpoints()[1].is_up(health.hub.now_ms()));
    assert_eq!(registry.slots()[1].2.ejections(), [0, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_backend_without_healthy_endpoints_gives_its_share_back_and_gets_it_again() {
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let green = table.routes()[0].backend(Slot::Green).upstream();
    // Draws below 1000 pick green (10 %), the rest blue.
    assert_eq!(chosen(&table, 0), Some(Slot::Green));
    for i in 0..2 {
        green.endpoints()[i].set_checked(false);
    }
    for r in [0, 999, 1_000, 9_999] {
        assert_eq!(chosen(&table, r), Some(Slot::Blue), "draw {r}");
    }
    green.endpoints()[1].set_checked(true);
    assert_eq!(chosen(&table, 999), Some(Slot::Green));
    assert_eq!(chosen(&table, 1_000), Some(Slot::Blue));
    // The configured weights were never touched.
    assert_eq!(table.routes()[0].weights().green, 1_000);
}

#[tokio::test(start_paused = true)]
async fn a_preview_at_weight_0_never_takes_over_and_neither_serving_is_none() {
    let registry = HealthRegistry::new();
    let mut config = route(10_000);
    config.green.weight = Some(Percent(0));
    let table = table(&registry, config);
    let route = &table.routes()[0];
    for e in route.backend(Slot::Blue).upstream().endpoints() {
        e.set_checked(false);
    }
    assert_eq!(
        chosen(&table, 0),
        None,
        "green has weight 0: 503, not green"
    );
    // The active slot takes a dead preview's share even at weight 0.
    let mut config = self::route(0);
    config.active = Slot::Blue;
    let registry = HealthRegistry::new();
    let table = self::table(&registry, config);
    for e in table.routes()[0]
        .backend(Slot::Green)
        .upstream()
        .endpoints()
    {
        e.set_checked(false);
    }
    assert_eq!(chosen(&table, 5_000), Some(Slot::Blue));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_trips_on_the_preview_only_and_holds_until_weights_are_set() {
    let registry = HealthRegistry::new();
    let mut config = route(5_000);
    config.breaker = Some(BreakerConfig::default()); // 50 %, 1 s, 20 requests
    let table = table(&registry, config);
    let route = &table.routes()[0];
    let (blue, green) = (
        route.backend(Slot::Blue).upstream(),
        route.backend(Slot::Green).upstream(),
    );
    let mut events = registry.subscribe();
    for _ in 0..40 {
        blue.record_status(0, StatusCode::INTERNAL_SERVER_ERROR, Slot::Blue);
    }
    assert!(!blue.tripped(), "the active backend never trips");
    for i in 0..19 {
        green.record_status(i % 2, StatusCode::SERVICE_UNAVAILABLE, Slot::Blue);
    }
    assert!(!green.tripped(), "19 requests are below min_requests");
    green.record_status(0, StatusCode::SERVICE_UNAVAILABLE, Slot::Blue);
    assert!(green.tripped());
    match events.try_recv() {
        Ok(ProxyEvent::BreakerTripped {
            backend,
            requests,
            error_rate,
            ..
        }) => {
            assert_eq!((backend, requests), (Slot::Green, 20));
            assert!((error_rate - 1.0).abs() < 1e-9);
        }
        other => panic!("expected a trip, got {other:?}"),
    }
    assert_eq!(chosen(&table, 0), Some(Slot::Blue));
    assert_eq!(route.weights().green, 5_000, "configured weight unchanged");
    registry.reset_breaker("web");
    assert!(!green.tripped());
    assert_eq!(chosen(&table, 0), Some(Slot::Green));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_forgets_errors_older_than_its_window() {
    let registry = HealthRegistry::new();
    let mut config = route(5_000);
    config.breaker = Some(BreakerConfig::default());
    let table = table(&registry, config);
    let green = table.routes()[0].backend(Slot::Green).upstream();
    for _ in 0..15 {
        green.record_failure(0, ErrorKind::Protocol, Slot::Blue);
    }
    tokio::time::advance(Duration::from_millis(1_100)).await;
    for _ in 0..15 {
        green.record_failure(0, ErrorKind::Protocol, Slot::Blue);
    }
    assert!(!green.tripped(), "15 + 15 errors, but never 20 within 1 s");
}

#[tokio::test(start_paused = true)]
async fn checkers_follow_the_table_and_state_survives_it() {
    let registry = HealthRegistry::new();
    let mut config = route(9_000);
    config.health = Some(HealthConfig::default());
    registry.sync(std::slice::from_ref(&config));
    let first = registry.backend(&config, Slot::Green, Balance::default());
    first.endpoints()[0].set_checked(false);
    let running = HealthRegistry::running_checkers;
    assert_eq!(running(&registry), 4);
    config.green.endpoints.truncate(1);
    registry.sync(std::slice::from_ref(&config));
    assert_eq!(running(&registry), 3);
    let second = registry.backend(&config, Slot::Green, Balance::default());
    assert!(Arc::ptr_eq(&first.endpoints()[0], &second.endpoints()[0]));
    config.health = None;
    registry.sync(std::slice::from_ref(&config));
    assert_eq!(running(&registry), 0);
    assert!(
        second.endpoints()[0].checked_up(),
        "without checks an endpoint is up"
    );
}

#[test]
fn a_probe_host_must_be_a_host_with_an_optional_port() {
    let with_host = |host: &str| {
        let mut config = ProxyConfig {
            routes: vec![RouteConfig {
                name: "web".into(),
                blue: BackendConfig {
                    endpoints: vec!["127.0.0.1:9001".parse().unwrap()],
                    ..BackendConfig::default()
                },
                ..RouteConfig::default()
            }],
            ..ProxyConfig::default()
        };
        config.routes[0].health = Some(HealthConfig {
            host: Some(host.to_owned()),
            ..HealthConfig::default()
        });
        config.validate().map_err(|e| e.to_string())
    };
    for good in [
        "app.internal",
        "app.internal:8080",
        "10.0.0.7",
        "[::1]:9001",
        "a-b.c_d",
    ] {
        assert_eq!(with_host(good), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("user@app.internal", "userinfo"),
        ("app internal", "not a host with an optional port"),
        ("app.internal/healthz", "not a host with an optional port"),
        ("app.internal:", "empty port"),
        ("app.internal:http", "is not a number"),
        ("app.internal:70000", "port 70000 is outside 0 to 65535"),
        (":8080", "no host"),
    ] {
        let error = with_host(bad).expect_err(bad);
        assert!(
            error.contains("routes[0].health.host") && error.contains(why),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn health_settings_are_validated_with_field_paths() {
    let yaml = r#"
routes:
  - name: web
    blue: { endpoints: ["127.0.0.1:9001"] }
    health: { path: healthz, interval: 1s, timeout: 2s, rise: 0 }
    outlier: { base_ejection: 0s }
    breaker: { max_error_rate: 0, window: 10ms, min_requests: 0 }
"#;
    let error = ProxyConfig::from_yaml(yaml).expect_err("invalid");
    let paths: Vec<_> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].health.path",
            "routes[0].health.timeout",
            "routes[0].health.rise",
            "routes[0].outlier.base_ejection",
            "routes[0].breaker.max_error_rate",
            "routes[0].breaker.window",
            "routes[0].breaker.min_requests",
        ]
    );
    let ok = "routes: [{ name: web, blue: { endpoints: [\"127.0.0.1:9001\"] }, health: {}, breaker: { max_error_rate: 50% } }]";
    let config = ProxyConfig::from_yaml(ok).expect("defaults are valid");
    assert_eq!(config.routes[0].health, Some(HealthConfig::default()));
}

#[test]
fn a_retry_never_goes_back_to_the_endpoint_it_failed_on_while_another_is_up() {
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let blue = table.routes()[0].backend(Slot::Blue);
    for _ in 0..20 {
        // Whatever the costs or the round-robin position (other requests move them), never the
        // avoided one.
        assert_eq!(pick_endpoint(blue, Some(0)), Some(1));
        assert_eq!(pick_endpoint(blue, Some(1)), Some(0));
        let _ = pick_endpoint(blue, None);
    }
}

#[tokio::test(start_paused = true)]
async fn neither_balance_policy_ever_picks_an_ejected_endpoint() {
    use crate::config::BalancePolicy;
    for policy in [BalancePolicy::P2cPeakEwma, BalancePolicy::RoundRobin] {
        let registry = HealthRegistry::new();
        let mut config = route(9_000);
        config.blue.endpoints = addrs(10_000, 5);
        let balance = Balance::new(policy, Duration::from_millis(30), Duration::from_secs(10));
        let table: RoutingTable<Arc<BackendHealth>> =
            RoutingTable::build(1, vec![config], |route, slot, _| {
                registry.backend(route, slot, balance)
            });
        let blue = table.routes()[0].backend(Slot::Blue);
        let health = blue.upstream();
        for ejected in [1, 3] {
            for _ in 0..3 {
                health.record_failure(ejected, ErrorKind::ConnectRefused, Slot::Blue);
            }
        }
        let mut counts = [0u32; 5];
        for _ in 0..1_000 {
            counts[pick_endpoint(blue, None).unwrap()] += 1;
        }
        assert_eq!((counts[1], counts[3]), (0, 0), "{policy:?}: {counts:?}");
        assert!(
            [0, 2, 4].iter().all(|&i| counts[i] > 0),
            "{policy:?}: {counts:?}"
        );
    }
}

#[test]
fn concurrent_picks_always_find_the_endpoint_that_is_up() {
    // Two endpoints, one ejected: requests on other threads move the round-robin cursor between
    // this pick's looks, which once let a pick see only the ejected endpoint and answer 503.
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let blue = table.routes()[0].backend(Slot::Blue);
    for _ in 0..3 {
        blue.upstream()
            .record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    }
    std::thread::scope(|scope| {
        let pickers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..20_000)
                        .filter(|_| pick_endpoint(blue, None) != Some(1))
                        .count()
                })
            })
            .collect();
        let missed: usize = pickers.into_iter().map(|p| p.join().unwrap()).sum();
        assert_eq!(missed, 0, "picks that did not find the endpoint that is up");
    });
}

#[tokio::test(start_paused = true)]
async fn without_checks_the_first_look_after_the_backoff_says_the_readmission_once() {
    let registry = HealthRegistry::new();
    let table = table(&registry, route(9_000));
    let green = table.routes()[0].backend(Slot::Green);
    let health = green.upstream();
    let mut events = registry.subscribe();
    for _ in 0..3 {
        health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    }
    assert!(matches!(
        events.try_recv(),
        Ok(ProxyEvent::EndpointDown { .. })
    ));
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(pick_endpoint(green, Some(1)), Some(1), "still ejected");
    assert!(events.try_recv().is_err());
    tokio::time::advance(Duration::from_millis(5_000)).await;
    // The first pick that may choose it again says so, once.
    for _ in 0..4 {
        assert_eq!(pick_endpoint(green, Some(1)), Some(0));
    }
    assert!(health.can_serve());
    assert_eq!(health.healthy_endpoints(2), 2);
    assert_eq!(
        events.try_recv(),
        Ok(ProxyEvent::EndpointReadmitted {
            route: "web".into(),
            backend: Slot::Green,
            endpoint: health.endpoints()[0].addr(),
        })
    );
    assert!(events.try_recv().is_err(), "said once");
    // Re-admitted when its backoff ended, 5 s before the pick: the count decays from then, one
    // decay_interval (10 s) after it, though only 5.001 s after the pick.
    assert_eq!(health.status()[0].ejections, 1);
    tokio::time::advance(Duration::from_millis(5_001)).await;
    assert_eq!(health.status()[0].ejections, 0);
}

#[tokio::test(start_paused = true)]
async fn a_readmission_by_a_check_starts_the_decay_of_the_ejection_count() {
    let registry = HealthRegistry::new();
    let mut config = route(9_000);
    config.health = Some(HealthConfig::default());
    let table = table(&registry, config);
    let health = table.routes()[0].backend(Slot::Green).upstream();
    let mut events = registry.subscribe();
    for _ in 0..3 {
        health.record_failure(0, ErrorKind::ConnectRefused, Slot::Blue);
    }
    let endpoint = &health.endpoints()[0];
    // Held 30 s past its 1 s backoff (no probe passed): no decay, and nothing said.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(!health.status()[0].healthy);
    assert_eq!(health.status()[0].ejections, 1);
    endpoint.readmit_by_check(health.hub.now_ms());
    endpoint.set_checked(true);
    assert_eq!(health.status()[0].ejections, 1);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(health.status()[0].ejections, 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(health.status()[0].ejections, 0);
    // The checker says the re-admission; no endpoint pick says it again.
    assert!(matches!(
        events.try_recv(),
        Ok(ProxyEvent::EndpointDown { .. })
    ));
    assert!(events.try_recv().is_err());
}

/// Route `web` with active checks (`timeout` 500 ms), its table built without checkers: every
/// endpoint awaits its first probe, which the test gives by hand.
fn awaiting_table(registry: &HealthRegistry) -> RoutingTable<Arc<BackendHealth>> {
    let mut config = route(9_000);
    config.health = Some(HealthConfig {
        timeout: Duration::from_millis(500),
        ..HealthConfig::default()
    });
    table(registry, config)
}

#[tokio::test(start_paused = true)]
async fn endpoints_of_a_route_with_checks_take_nothing_before_their_first_probe_passes() {
    let registry = HealthRegistry::new();
    let table = awaiting_table(&registry);
    let route = &table.routes()[0];
    let (blue, green) = (route.backend(Slot::Blue), route.backend(Slot::Green));
    assert_eq!(chosen(&table, 0), None);
    assert!(awaits_first_probes(route, green, false));
    assert_eq!(
        registry.first_probes_pending(),
        ["route web: awaiting the first health probe of blue 127.0.0.1:10000 (0 of 4 endpoints probed)"]
    );
    let health = blue.upstream();
    assert!(health.endpoints()[0].pass_first_check());
    assert!(health.endpoints()[1].fail_first_check());
    assert!(
        !health.endpoints()[1].fail_first_check(),
        "the first result only"
    );
    // Green's share goes to blue while green awaits its probes; a blue pick avoids the failed one.
    assert_eq!(chosen(&table, 9_500), Some(Slot::Blue));
    assert_eq!(pick_endpoint(blue, None), Some(0));
    assert!(
        !awaits_first_probes(route, blue, true),
        "blue has its results"
    );
    assert_eq!(
        registry.first_probes_pending(),
        ["route web: awaiting the first health probe of green 127.0.0.1:20000 (2 of 4 endpoints probed)"]
    );
    for endpoint in green.upstream().endpoints() {
        endpoint.fail_first_check();
    }
    assert!(registry.first_probes_pending().is_empty());
    // Once the proxy serves, the start's round is over for good: an endpoint added later awaits
    // its own probe alone.
    registry.serving();
    let mut config = route_config(&table);
    config
        .green
        .endpoints
        .push(SocketAddr::from(([127, 0, 0, 1], 20_002)));
    let later = registry.backend(&config, Slot::Green, Balance::default());
    assert!(later.endpoints()[2].awaiting_first_probe());
    assert!(registry.first_probes_pending().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_first_probes_until_one_passes_or_its_timeout() {
    let registry = HealthRegistry::new();
    let table = awaiting_table(&registry);
    let route = &table.routes()[0];
    let green = route.backend(Slot::Green);
    let waiting = first_probes(route, green, false);
    tokio::pin!(waiting);
    let early = tokio::time::timeout(Duration::from_millis(100), waiting.as_mut()).await;
    assert!(early.is_err(), "no probe has a result yet");
    route.backend(Slot::Blue).upstream().endpoints()[1].pass_first_check();
    route
        .backend(Slot::Blue)
        .upstream()
        .hub
        .first_probes
        .notify_waiters();
    waiting.await;
    assert_eq!(chosen(&table, 9_500), Some(Slot::Blue));

    // Nothing passes: the wait ends at the probe timeout and the slack, not before.
    let registry = HealthRegistry::new();
    let table = awaiting_table(&registry);
    let route = &table.routes()[0];
    let started = Instant::now();
    first_probes(route, route.backend(Slot::Blue), false).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500) + FIRST_PROBE_SLACK
    );
    // A forced request looks at its own backend only: green failed, so it does not wait.
    for endpoint in route.backend(Slot::Green).upstream().endpoints() {
        endpoint.fail_first_check();
    }
    assert!(!awaits_first_probes(
        route,
        route.backend(Slot::Green),
        true
    ));
    assert!(awaits_first_probes(
        route,
        route.backend(Slot::Green),
        false
    ));
}

/// The route's config as `table` holds it.
fn route_config(table: &RoutingTable<Arc<BackendHealth>>) -> RouteConfig {
    table.configs()[0].clone()
}
