//! The Grafana dashboard and the alert rules against a real Prometheus scraping a real `crossfade run`:
//! a rollout that rolls back, then one that completes, under load; then every PromQL expression of
//! the dashboard (panels, variables, annotations) and of the rules is run through the HTTP API: with
//! every template variable at All, with one namespace, service, job, instance and route selected
//! (the test Prometheus labels its target as a Kubernetes scrape does), and with each variable
//! selecting nothing, which must empty every query that has to filter by it.
//! The "Client aborts" panel must show a request whose client went away, and the error rate
//! panel leave such requests out, as the analysis does. The rollouts start with a shadow step and
//! bound the p99 ratio, so that every judgement signal has its panel and data: the rolled-back
//! preview differs from blue at the shadow step, which its mismatch panels must show, and the
//! completed one gives the p99 ratio, measured and live. The sequential judge's evidence panel is
//! checked the same way over a rollout judged by it (`judge: sequential`), its only source.
//! A Prometheus that asks for the Prometheus text format 0.0.4 only reads the proxy's counters
//! right (`text_format`).
//! Also: the ConfigMap holds the dashboard as is, and `--log-format json` writes JSON lines (of
//! `run` and of a whole demo rollout, whose every transition names route, rollout, backend, version).

pub mod prometheus;
mod prometheus_source;
mod text_format;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use self::prometheus::{rules_file, series, unix_now, Prometheus};
use crate::rollout::wait_terminal;
use crate::support::{run_to_end, temp_dir, Admin, App, Crossfade, Load, LoadConfig, Spec};

/// What Grafana's interval macros become in a test query.
const MACROS: [(&str, &str); 3] = [
    ("$__rate_interval", "3s"),
    ("$__interval", "1s"),
    ("$__range", "5m"),
];

/// The dashboard's template variables, outermost first.
const VARIABLES: [&str; 5] = ["namespace", "service", "job", "instance", "route"];

/// Values for the dashboard's variables, as Grafana substitutes them into a query.
type Selection = Vec<(&'static str, String)>;

/// Every variable at `All` (the dashboard's `allValue`, `.*`).
fn all() -> Selection {
    VARIABLES.iter().map(|v| (*v, ".*".to_owned())).collect()
}

/// One value each: the test Prometheus' target labels, its job, the scraped instance, route `web`.
fn selected(instance: std::net::SocketAddr) -> Selection {
    let label = |name: &str| {
        let found = prometheus::TARGET_LABELS.iter().find(|(k, _)| *k == name);
        found.map(|(_, v)| (*v).to_owned()).unwrap_or_default()
    };
    vec![
        ("namespace", label("namespace")),
        ("service", label("service")),
        ("job", "crossfade".into()),
        ("instance", instance.to_string()),
        ("route", "web".into()),
    ]
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("deploy/grafana/crossfade-dashboard.json"))
        .expect("the dashboard is JSON")
}

/// Every `(where, expr)` of the dashboard: panel targets, annotation queries, and the variables'
/// `label_values(selector, label)` as `group by (label) (selector)`.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let nested = panels
        .iter()
        .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default());
    for panel in panels.iter().cloned().chain(nested) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let name = format!("panel {:?} target {}", panel["title"], target["refId"]);
            out.push((name, target["expr"].as_str().unwrap_or_default().to_owned()));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), expr.to_owned()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(query) = v["definition"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'));
        let (selector, label) = inner
            .and_then(|q| q.rsplit_once(','))
            .expect("label_values(selector, label)");
        let expr = format!("group by ({}) ({selector})", label.trim());
        out.push((format!("variable {:?}", v["name"]), expr));
    }
    out
}

/// Every `(alert, expr)` of the rules file.
fn rule_queries() -> Vec<(String, String)> {
    let rules: Value =
        serde_yaml_ng::from_str(&repo_file("deploy/prometheus/crossfade-rules.yaml"))
            .expect("the rules are YAML");
    let groups = rules["groups"].as_array().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .unwrap_or("?")
                .to_owned();
            (name, r["expr"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn substitute(expr: &str, selection: &Selection) -> String {
    let expr = MACROS
        .iter()
        .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value));
    selection.iter().fold(expr, |e, (var, value)| {
        e.replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value)
    })
}

/// Every dashboard query under `selection` must be valid and, when `expect_data`, return data; when
/// not, it must return none (the selection names something that is not there).
async fn check_dashboard(
    prom: &Prometheus,
    start: f64,
    queries: &[(String, String)],
    selection: &Selection,
    expect_data: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, expr) in queries {
        let query = substitute(expr, selection);
        let answer = prom.query_range(&query, start).await;
        if answer["status"] != "success" {
            problems.push(format!("{name}: {query}\n  invalid: {answer}"));
        } else if expect_data && series(&answer) == 0 {
            problems.push(format!("{name}: {query}\n  no data with {selection:?}"));
        } else if !expect_data && series(&answer) > 0 {
            problems.push(format!(
                "{name}: {query}\n  data although {selection:?} selects nothing"
            ));
        }
    }
    problems
}

/// The panels about a proxy, not a route (the routing table generation, the listener's limits and
/// protection): they have no `$route`.
const PER_PROXY_PANELS: [&str; 5] = [
    "Routing table generation",
    "Client connections and requests in flight",
    "Shed at listener limits",
    "Clients cut by timeouts and abuse bounds",
    KUBE_WATCH_PANEL,
];

/// The queries that must filter by `variable`: every panel and annotation (but `$route` in the
/// [`PER_PROXY_PANELS`]), and the variables after it.
fn filtered_by(queries: &[(String, String)], variable: &str) -> Vec<(String, String)> {
    let per_proxy = |name: &str| PER_PROXY_PANELS.iter().any(|title| name.contains(title));
    queries
        .iter()
        .filter(|(name, expr)| {
            if name.starts_with("variable") {
                return expr.contains(&format!("${variable}"));
            }
            !(variable == "route" && per_proxy(name))
        })
        .cloned()
        .collect()
}

/// Blue v1 serving; rollouts start over the admin API. A shadow step (0%, mirrored answers
/// compared by status and content type: the sample app's bodies name its version) and two live
/// steps (50%, 100%), 1 s each, with a p99 bound and a p99 ratio bound (loose: only its series
/// are wanted), so that every analysis value of the dashboard has data. A preview that fails 20%
/// of its requests fails the shadow step (5% allowed).
fn spec() -> Spec {
    let mut spec = Spec::new();
    spec.json["rollout"]["steps"] = json!([{ "weight": 0, "hold": "1s" }, 50, 100]);
    let analysis = &mut spec.json["rollout"]["analysis"];
    analysis["max_p99"] = json!("1s");
    analysis["max_p99_ratio"] = json!(100);
    analysis["shadow"] = json!({
        "max_mismatch_rate": "5%",
        "min_compared": 10,
        "mirror": { "ignore": { "body_paths": ["/"] } },
    });
    spec
}

async fn roll_out(admin: &Admin, green: App, phase: &str) {
    admin.start_rollout(&green.json).await;
    let rollout = wait_terminal(admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], phase, "{rollout:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_answer_on_a_real_prometheus_after_a_rollback_and_a_rollout() {
    let dir = temp_dir();
    let spec = spec();
    let admin = Admin::new(spec.admin());
    let Some(prom) = Prometheus::start(dir.path(), spec.admin()).await else {
        return;
    };
    let start = unix_now();
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    // The rollback counter must be scraped at 0 before it rises, or increase() cannot see it.
    let zero = r#"crossfade_rollouts_total{outcome="rolled_back"} == 0"#;
    prom.wait_for(zero, Duration::from_secs(15)).await;

    roll_out(
        &admin,
        App::version("v2").flags(["--error-rate", "0.2"]),
        "RolledBack",
    )
    .await;
    // It failed at the shadow step: its mismatch rate above the bound, scraped before the next
    // rollout's start removes the series.
    let failed = r#"crossfade_analysis_value{metric="shadow_mismatch_rate"} > on (route) crossfade_analysis_threshold{metric="shadow_mismatch_rate"}"#;
    prom.wait_for(failed, Duration::from_secs(10)).await;
    roll_out(&admin, App::version("v3"), "Completed").await;
    let completed = r#"crossfade_rollouts_total{outcome="completed"} == 1"#;
    prom.wait_for(completed, Duration::from_secs(10)).await;
    // The rollback alert: its expression has a result, and Prometheus itself fires it.
    let fired = r#"ALERTS{alertname="CrossfadeRolloutRolledBack", alertstate="firing"}"#;
    prom.wait_for(fired, Duration::from_secs(10)).await;
    // "What is serving": the responses by image digest, the SHA-256 of the program in local mode.
    let by_digest = r#"sum by (image_digest) (rate(crossfade_requests_total[5s]) * on (job, instance, route, backend) group_left (image_digest) crossfade_backend_info{image_digest=~"sha256:[0-9a-f]{64}"}) > 0"#;
    prom.wait_for(by_digest, Duration::from_secs(10)).await;
    let report = load.stop().await;
    abort_one_request(&prom, spec.listen()).await;

    // The sequential judge's panel has data only from rollouts it judges (the test below); the
    // cluster watch's only from `crossfade proxy --kube`: here its queries must be valid and empty.
    let (kube, queries): (Vec<_>, Vec<_>) = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|(name, _)| !name.contains(SEQUENTIAL_PANEL))
        .partition(|(name, _)| name.contains(KUBE_WATCH_PANEL));
    assert!(!kube.is_empty(), "no panel {KUBE_WATCH_PANEL}");
    let mut problems = check_dashboard(&prom, start, &kube, &all(), false).await;
    problems.extend(check_dashboard(&prom, start, &queries, &all(), true).await);
    let one = selected(spec.admin());
    problems.extend(client_aborts_shown(&prom, start, &queries, &one).await);
    // The judgement panels show what happened, not merely some series: the rolled-back preview's
    // mismatches (measured by the analysis and live), and a p99 ratio while both served.
    for (title, target) in [
        ("Shadow mismatch rate (live)", "A"),
        ("Analysis: shadow mismatch rate vs max", "A"),
        ("Analysis: p99 ratio preview / active vs max", "A"),
        ("Analysis: p99 ratio preview / active vs max", "C"),
    ] {
        problems.extend(shown_above_zero(&prom, start, &queries, &one, title, target).await);
    }
    problems.extend(check_dashboard(&prom, start, &queries, &one, true).await);
    // Each variable set to a value nobody has empties every query that must filter by it: proof
    // that the query uses the variable, not just that it parses.
    for variable in VARIABLES {
        let mut elsewhere = one.clone();
        for (name, value) in &mut elsewhere {
            if *name == variable {
                *value = "elsewhere".into();
            }
        }
        let must_filter = filtered_by(&queries, variable);
        problems.extend(check_dashboard(&prom, start, &must_filter, &elsewhere, false).await);
    }
    problems.extend(mean_rollout_duration(&prom, start, &queries, &one).await);
    for (name, expr) in rule_queries() {
        let answer = prom.query(&expr).await;
        if answer["status"] != "success" {
            problems.push(format!("rule {name}: invalid: {answer}"));
        }
        if name == "CrossfadeRolloutRolledBack" && series(&answer) == 0 {
            problems.push(format!("rule {name}: no result after a rollback"));
        }
    }
    problems.extend(rule_health(&prom).await);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\nload: {report:?}",
        problems.len(),
        problems.join("\n")
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// The title of the panel of `crossfade proxy --kube`'s watch of the cluster (session 41).
const KUBE_WATCH_PANEL: &str = "Cluster watch: time since last sync, and errors";

/// The title of the panel of the sequential judge's evidence, which only its rollouts fill.
const SEQUENTIAL_PANEL: &str = "\"Analysis: sequential evidence vs bars\"";

/// The sequential judge's evidence panel over a rollout it judges: every target answers with
/// data (all four e-values and both bars) with every variable at All and at one value each, and
/// none with any variable at a value nobody has. The rollout need not end: the panel shows each
/// look's evidence, so the test stops once Prometheus has scraped a look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequential_evidence_panel_answers_on_a_real_prometheus() {
    let dir = temp_dir();
    let mut spec = Spec::new();
    spec.json["rollout"]["steps"] = json!([50, 100]);
    spec.json["rollout"]["analysis"] = json!({
        "judge": "sequential",
        "interval": "500ms",
        "min_requests": 10,
        "max_error_rate": "50%",
        // The judgement test's settings: an equal green is not rolled back on scheduling noise.
        "max_latency_increase": "250ms",
        "fail_when_worse_than": "allowance",
    });
    let admin = Admin::new(spec.admin());
    let Some(prom) = Prometheus::start(dir.path(), spec.admin()).await else {
        return;
    };
    let start = unix_now();
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    admin.start_rollout(&App::version("v2").json).await;
    // Every e-value and bar scraped for a few seconds (six scrapes), so that the range queries'
    // whole-second points see them too.
    let looked = r#"count(count_over_time(crossfade_analysis_value{metric=~".*evidence"}[5s]) >= 6) == 4 and on () count(count_over_time(crossfade_analysis_threshold{metric=~".*evidence"}[5s]) >= 6) == 4"#;
    prom.wait_for(looked, Duration::from_secs(30)).await;

    let queries: Vec<_> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|(name, _)| name.contains(SEQUENTIAL_PANEL))
        .collect();
    assert_eq!(queries.len(), 4, "{queries:?}");
    let one = selected(spec.admin());
    let mut problems = check_dashboard(&prom, start, &queries, &all(), true).await;
    problems.extend(check_dashboard(&prom, start, &queries, &one, true).await);
    for variable in VARIABLES {
        let mut elsewhere = one.clone();
        for (name, value) in &mut elsewhere {
            if *name == variable {
                *value = "elsewhere".into();
            }
        }
        problems.extend(check_dashboard(&prom, start, &queries, &elsewhere, false).await);
    }
    let report = load.stop().await;
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\nload: {report:?}",
        problems.len(),
        problems.join("\n")
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// A client that sends a request the sample app answers after 30 s and goes away once the proxy
/// has it in flight (as scraped): one client abort, scraped. Before it, the load's requests are
/// scraped ended and the route's abort counters scraped at 0 (the completed rollout made them
/// anew): a counter first scraped at 1 shows no increase to `rate()`.
async fn abort_one_request(prom: &Prometheus, listen: std::net::SocketAddr) {
    let idle = r#"sum(crossfade_in_flight_requests{route="web"}) == 0"#;
    prom.wait_for(idle, Duration::from_secs(10)).await;
    let zero = r#"count(crossfade_client_aborts_total{route="web"} == 0) == 2"#;
    prom.wait_for(zero, Duration::from_secs(10)).await;
    let request = format!("GET /slow?ms=30000 HTTP/1.1\r\nHost: {listen}\r\n\r\n");
    let client = send_on_new_connection(listen, &request).await;
    let waiting = r#"sum(crossfade_in_flight_requests{route="web"}) > 0"#;
    prom.wait_for(waiting, Duration::from_secs(10)).await;
    drop(client);
    let counted = r#"crossfade_client_aborts_total{route="web"} > 0"#;
    prom.wait_for(counted, Duration::from_secs(10)).await;
}

/// The query of the dashboard panel titled `title` among `queries` (named with the panel's quoted
/// title), or the problem "no "<title>" panel".
fn panel_query<'q>(queries: &'q [(String, String)], title: &str) -> Result<&'q str, String> {
    panel_target(queries, title, "A")
}

/// The query of target `ref_id` of the dashboard panel titled `title` among `queries`, or the
/// problem "no "<title>" panel target <ref_id>".
fn panel_target<'q>(
    queries: &'q [(String, String)],
    title: &str,
    ref_id: &str,
) -> Result<&'q str, String> {
    let (quoted, target) = (format!("\"{title}\""), format!(" target \"{ref_id}\""));
    queries
        .iter()
        .find(|(name, _)| name.contains(&quoted) && name.ends_with(&target))
        .map(|(_, expr)| expr.as_str())
        .ok_or_else(|| format!("no {quoted} panel with{target}"))
}

/// The "Client aborts" panel shows the request [`abort_one_request`] gave up on: a rate above 0
/// at some point of the range, for one backend of route `web`.
async fn client_aborts_shown(
    prom: &Prometheus,
    start: f64,
    queries: &[(String, String)],
    selection: &Selection,
) -> Vec<String> {
    shown_above_zero(prom, start, queries, selection, "Client aborts", "A").await
}

/// Target `ref_id` of the panel titled `title` shows a value above 0 (not NaN) at some point of
/// the range for route `web`, or the problem saying what it showed.
async fn shown_above_zero(
    prom: &Prometheus,
    start: f64,
    queries: &[(String, String)],
    selection: &Selection,
    title: &str,
    ref_id: &str,
) -> Vec<String> {
    let expr = match panel_target(queries, title, ref_id) {
        Ok(expr) => expr,
        Err(missing) => return vec![missing],
    };
    let panel = substitute(expr, selection);
    let shown = |answer: &Value| {
        let results = answer["data"]["result"].as_array().cloned();
        results.unwrap_or_default().iter().any(|r| {
            r["metric"]["route"] == "web"
                && r["values"].as_array().into_iter().flatten().any(|point| {
                    let value = point[1].as_str().and_then(|v| v.parse::<f64>().ok());
                    value.is_some_and(|v| v > 0.0)
                })
        })
    };
    // The range's points fall on whole seconds from `start`: the last may precede the scrape
    // that counted what is looked for by up to a step, so a few queries may come before it shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = prom.query_range(&panel, start).await;
        if shown(&answer) {
            return Vec::new();
        }
        if tokio::time::Instant::now() > deadline {
            return vec![format!(
                "panel \"{title}\" target {ref_id}: {panel}\n  shows nothing above 0 for route \
                 web: {answer}"
            )];
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Trial 9, I12: the "Mean rollout duration" panel, `increase()` of the duration histogram's
/// `_sum` over that of its `_count` across `$__range`, over a range that covers the whole test
/// (however long the load made it). One rollout rolled back and one completed: the panel must
/// show each outcome's mean, which for one rollout is the histogram's own `_sum / _count`. A
/// (route, outcome) series born at its first observation (count 1) shows no increase, so this
/// holds only because every outcome's series exists at 0 before the first rollout ends.
async fn mean_rollout_duration(
    prom: &Prometheus,
    start: f64,
    queries: &[(String, String)],
    selection: &Selection,
) -> Vec<String> {
    let expr = match panel_query(queries, "Mean rollout duration") {
        Ok(expr) => expr,
        Err(missing) => return vec![missing],
    };
    let range = format!("{}s", (unix_now() - start).ceil() as u64 + 60);
    let panel = substitute(&expr.replace("$__range", &range), selection);
    let own = "crossfade_rollout_duration_seconds_sum{route=\"web\"} \
               / crossfade_rollout_duration_seconds_count{route=\"web\"} > 0";
    let by_outcome = |answer: &Value| -> Vec<(String, f64)> {
        let result = answer["data"]["result"].as_array().cloned();
        let mut out: Vec<(String, f64)> = result
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let outcome = r["metric"]["outcome"].as_str().unwrap_or("?").to_owned();
                let value = r["value"][1].as_str().and_then(|v| v.parse().ok());
                (outcome, value.unwrap_or(f64::NAN))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let (shown, truth) = (
        by_outcome(&prom.query(&panel).await),
        by_outcome(&prom.query(own).await),
    );
    let outcomes: Vec<&str> = truth.iter().map(|(o, _)| o.as_str()).collect();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let same = shown.len() == truth.len()
        && shown
            .iter()
            .zip(&truth)
            .all(|((o, v), (t, w))| o == t && close(*v, *w));
    if outcomes != ["completed", "rolled_back"] || !same {
        return vec![format!(
            "panel \"Mean rollout duration\": {panel}\n  shows {shown:?}, \
             the histogram's own means are {truth:?} (one rollback, one completion)"
        )];
    }
    Vec::new()
}

/// Rules Prometheus could not evaluate (health other than `ok`).
async fn rule_health(prom: &Prometheus) -> Vec<String> {
    let rules = prom.api("rules", &[]).await;
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let all: Vec<Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut problems: Vec<String> = all
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| {
            format!(
                "rule {}: health {} {}",
                r["name"], r["health"], r["lastError"]
            )
        })
        .collect();
    if all.len() != rule_queries().len() {
        problems.push(format!(
            "prometheus loaded {} rules from {}",
            all.len(),
            rules_file().display()
        ));
    }
    problems
}

/// The event reasons the dashboard's "Rollout transitions" annotation marks: the alternatives
/// of its `reason=~"..."` matcher.
pub(crate) fn annotated_reasons() -> Vec<String> {
    let dashboard = dashboard();
    let list = dashboard["annotations"]["list"].as_array().cloned();
    let transitions = list
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "Rollout transitions")
        .expect("the annotation \"Rollout transitions\"");
    let expr = transitions["expr"].as_str().expect("its expr");
    let matcher = expr
        .split_once("reason=~\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(alternatives, _)| alternatives)
        .expect("a reason=~ matcher");
    matcher.split('|').map(str::to_owned).collect()
}

#[test]
fn the_grafana_configmap_holds_the_dashboard_as_is() {
    let configmap: Value = serde_yaml_ng::from_str(&repo_file("deploy/grafana/configmap.yaml"))
        .expect("the ConfigMap is YAML");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded = configmap["data"]["crossfade-dashboard.json"]
        .as_str()
        .expect("data.crossfade-dashboard.json");
    let embedded: Value = serde_json::from_str(embedded).expect("embedded dashboard is JSON");
    assert_eq!(
        embedded,
        dashboard(),
        "deploy/grafana/configmap.yaml is out of date"
    );
}

/// Every non-blank line of `log` parsed as one JSON object; panics naming a line that is not.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_route_rollout_and_reason() {
    let dir = temp_dir();
    // Executable, so `run` accepts the spec, but not a program: green fails to start, rolls back.
    let program = dir.path().join("not-a-program");
    std::fs::write(&program, "not a program\n").expect("write the fake program");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&program, mode).expect("make it executable");
    let green = App::version("v2").set("command", json!(program));
    let spec = Spec::new().green(green);
    let path = spec.write(dir.path(), "spec.yaml");
    let args = [
        "run".as_ref(),
        path.as_os_str(),
        "--exit-after-rollout".as_ref(),
        "--log-format".as_ref(),
        "json".as_ref(),
    ];
    let finished = run_to_end(args, Duration::from_secs(30)).await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    let lines = json_lines(&finished.stderr);
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["message"].is_string()));
    let rolled_back = lines.iter().find(|l| l["reason"] == "RolledBack");
    let rolled_back = rolled_back.unwrap_or_else(|| panic!("no RolledBack event: {lines:#?}"));
    assert_eq!(rolled_back["route"], "web", "{rolled_back}");
    assert_eq!(rolled_back["rollout"], 1, "{rolled_back}");
}

/// Trial 9, I1: `--exit-after-rollout` exited 30–80 ms after the outcome, before any scrape. With
/// `--linger`, `/metrics` still answers with the outcome counted; a signal ends the wait (exit 3,
/// the rollout rolled back), and stdout carries the outcome as one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_rollout_lingers_with_the_outcome_on_metrics_and_prints_it() {
    let dir = temp_dir();
    // Executable, so `run` accepts the spec, but not a program: green fails to start, rolls back.
    let program = dir.path().join("not-a-program");
    std::fs::write(&program, "not a program\n").expect("write the fake program");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&program, mode).expect("make it executable");
    let spec = Spec::new().green(App::version("v2").set("command", json!(program)));
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let stdout = dir.path().join("run.out");
    let args = [
        "run".as_ref(),
        path.as_os_str(),
        "--exit-after-rollout".as_ref(),
        "--linger".as_ref(),
        "10m".as_ref(),
        "--json".as_ref(),
    ];
    let mut child = crate::support::child::spawn_with_stdout(args, &stdout);

    let counted = r#"outcome="rolled_back"} 1"#;
    let metrics =
        crate::support::wait_until(Duration::from_secs(30), "rollback on /metrics", || {
            let admin = &admin;
            async move {
                let (status, text) = admin.get_text("/metrics").await.ok()?;
                (status == 200
                    && text
                        .lines()
                        .any(|l| l.starts_with("crossfade_rollouts_total{") && l.contains(counted)))
                .then_some(text)
            }
        })
        .await;
    assert!(metrics.contains(r#"crossfade_rollout_phase{"#), "{metrics}");
    let printed = crate::support::wait_until(Duration::from_secs(20), "outcome on stdout", || {
        std::future::ready(
            std::fs::read_to_string(&stdout)
                .ok()
                .filter(|t| t.ends_with('\n')),
        )
    })
    .await;
    assert!(
        child.try_wait().expect("poll the child").is_none(),
        "still lingering"
    );
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(3));

    let outcome: Value = serde_json::from_str(printed.trim()).expect("one JSON object");
    assert_eq!(outcome["outcome"], "RolledBack", "{outcome}");
    assert_eq!(outcome["rollout"], 1, "{outcome}");
    assert_eq!(outcome["exit_code"], 3, "{outcome}");
    assert_eq!(outcome["from_version"], "blue", "{outcome}");
}

#[test]
fn every_dashboard_query_uses_the_template_variables() {
    let queries = dashboard_queries(&dashboard());
    let mut missing = Vec::new();
    for variable in VARIABLES {
        for (name, expr) in filtered_by(&queries, variable) {
            let top = name == format!("variable {variable:?}") || name == "variable \"namespace\"";
            if !top && !expr.contains(&format!("=~\"${variable}\"")) {
                missing.push(format!("{name} lacks {variable}=~\"${variable}\": {expr}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_json_logs_name_route_rollout_backend_and_version_on_every_transition() {
    let args = [
        "demo",
        "--json",
        "--hold",
        "1s",
        "--rate",
        "200",
        "--log",
        "info",
        "--log-format",
        "json",
    ];
    let finished = run_to_end(args, Duration::from_secs(40)).await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let lines = json_lines(&finished.stderr);
    let transitions: Vec<&Value> = lines.iter().filter(|l| l["reason"].is_string()).collect();
    for line in &transitions {
        assert_eq!(
            (
                &line["route"],
                &line["rollout"],
                &line["backend"],
                &line["version"]
            ),
            (&json!("web"), &json!(1), &json!("green"), &json!("v2")),
            "{line}"
        );
        assert!(
            line["timestamp"].is_string() && line["level"] == "INFO",
            "{line}"
        );
    }
    let reasons: Vec<&str> = transitions
        .iter()
        .filter_map(|l| l["reason"].as_str())
        .collect();
    let steps = reasons.iter().filter(|r| **r == "StepStarted").count();
    assert_eq!(steps, 4, "{reasons:?}");
    assert_eq!(reasons.first(), Some(&"Provisioning"), "{reasons:?}");
    assert_eq!(reasons.last(), Some(&"Completed"), "{reasons:?}");
    for reason in [
        "WeightsApplied",
        "AnalysisPassed",
        "Promoted",
        "Retiring",
        "ActiveDrained",
    ] {
        assert!(reasons.contains(&reason), "{reason} missing: {reasons:?}");
    }
}

/// Sends `GET path` on a connection of its own (`Connection: close`) and reads the whole answer.
async fn get_once(listen: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
    let mut client = send_on_new_connection(listen, &request).await;
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .await
        .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Trial 24: the "Error rate (as judged by the analysis)" panel leaves out the requests whose
/// client went away before an answer, as the analysis does (docs/judgement.md, "Requests their
/// clients gave up on"): they are neither responses nor errors. Blue fails every second request
/// (`--error-rate 50%`, deterministic: the 2nd, 4th, ...) at once: 20 answered, 10 of them 500;
/// then 4 slow ones, of which the 22nd and 24th fail at once and the 21st and 23rd are held until
/// their clients give up. Errors 12 over 22 answered, not 12 over 24 dispatched (the aborted
/// requests diluted the ratio, so a slow preview whose clients give up looked healthier there than
/// the analysis judged it). Over a window that covers the whole test, so that every counter's first sample is
/// its 0 and `rate()`'s extrapolation is the same for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_rate_panel_leaves_out_requests_their_clients_gave_up_on() {
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir();
    let spec = Spec::new().blue(App::version("v1").flags(["--error-rate", "50%"]));
    let admin = Admin::new(spec.admin());
    let Some(prom) = Prometheus::start(dir.path(), spec.admin()).await else {
        return;
    };
    let start = unix_now();
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let blue = r#"{route="web",backend="blue"}"#;
    let zero = format!("crossfade_dispatched_requests_total{blue} == 0");
    prom.wait_for(&zero, Duration::from_secs(15)).await;
    let mut failed = 0;
    for _ in 0..20 {
        let answer = get_once(spec.listen(), "/").await;
        failed += usize::from(answer.starts_with("HTTP/1.1 500"));
    }
    assert_eq!(failed, 10, "the sample app fails exactly half");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = tokio::net::TcpStream::connect(spec.listen())
            .await
            .expect("connect to the proxy");
        let request = format!(
            "GET /slow?ms=30000 HTTP/1.1\r\nHost: {}\r\n\r\n",
            spec.listen()
        );
        client
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        clients.push(client);
    }
    let waiting = format!("crossfade_in_flight_requests{blue} == 2");
    prom.wait_for(&waiting, Duration::from_secs(10)).await;
    drop(clients);
    let counted = format!(
        "crossfade_client_aborts_total{blue} == 2 and on () crossfade_dispatched_requests_total{blue} == 24 \
         and on () crossfade_backend_errors_total{blue} == 12"
    );
    prom.wait_for(&counted, Duration::from_secs(10)).await;

    let queries = dashboard_queries(&dashboard());
    let expr = panel_query(&queries, "Error rate (as judged by the analysis)")
        .expect("the error rate panel");
    let window = format!("{}s", (unix_now() - start).ceil() as u64 + 60);
    let panel = substitute(
        &expr.replace("$__rate_interval", &window),
        &selected(spec.admin()),
    );
    let answer = prom.query(&panel).await;
    let shown = answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["metric"]["backend"] == "blue")
        .and_then(|r| r["value"][1].as_str())
        .and_then(|v| v.parse::<f64>().ok());
    let judged = 12.0 / 22.0;
    assert!(
        shown.is_some_and(|v| (v - judged).abs() < 1e-9),
        "the panel shows {shown:?} for blue, the analysis' ratio is 12 / 22: {panel}\n{answer}"
    );
    run.terminate(Duration::from_secs(15)).await;
}

/// Opens a connection of its own to `listen` and writes `request` (raw HTTP/1.1) on it.
async fn send_on_new_connection(
    listen: std::net::SocketAddr,
    request: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut client = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect to the proxy");
    client
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    client
}
