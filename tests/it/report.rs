//! The rollout report: `crossfade demo --report` rendered by headless Chromium (Debian package
//! `chromium`, installed by scripts/test.sh) to a PNG whose charts must have drawn, and to a DOM
//! that must hold the three uPlot charts; `crossfade report` from the admin API and from a state
//! file, and its refusal while the rollout runs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::rollout::wait_terminal;
use crate::support::child::wait_state;
use crate::support::{
    run_to_end, run_to_end_with, temp_dir, Admin, App, Crossfade, Load, LoadConfig, Spec,
};

/// The browser window: wide enough for the charts at their usual width, tall enough for the page.
const WINDOW: (u32, u32) = (1280, 3000);

/// The charts' series colours in the page (`COLOURS` in controller/src/report/page.html).
const BLUE: [u8; 3] = [0x1f, 0x6f, 0xd1];
const GREEN: [u8; 3] = [0x1a, 0x9b, 0x45];

/// Whether `chromium` can run. Missing: panics when tools are required (scripts/test.sh,
/// `CI=true`: [`crate::support::tools_required`]), else says so loudly.
pub(crate) fn have_chromium() -> bool {
    crate::support::have_tool("report", "chromium", "chromium")
}

/// Headless Chromium on `page` with `args` (its own profile in `dir`, JavaScript given 3 s of
/// virtual time to draw).
fn chromium(dir: &Path, page: &Path, args: &[String]) -> Output {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg("--virtual-time-budget=3000")
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The pixels of an RGB(A) PNG as RGB triples, with its width.
fn pixels(png_file: &Path) -> (Vec<[u8; 3]>, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png_file).expect("open the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("decode the PNG");
    let step = info.color_type.samples();
    assert!(step >= 3, "an RGB screenshot: {:?}", info.color_type);
    let rgb = buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (rgb, info.width as usize)
}

/// A rectangle of the page in CSS pixels (= screenshot pixels at device pixel ratio 1).
#[derive(Debug)]
struct Box {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

/// The charts' plot areas, from the `data-chart-boxes` attribute the page's script sets.
fn chart_boxes(dom: &str) -> Vec<Box> {
    let key = "data-chart-boxes=\"";
    let from = dom.find(key).expect("data-chart-boxes in the DOM") + key.len();
    let value = &dom[from..from + dom[from..].find('"').expect("its end")];
    value
        .split(';')
        .map(|b| {
            let n: Vec<usize> = b.split(',').map(|n| n.parse().expect("a number")).collect();
            assert_eq!(n.len(), 4, "{value}");
            Box {
                left: n[0],
                top: n[1],
                width: n[2],
                height: n[3],
            }
        })
        .collect()
}

/// In `area` of the screenshot: pixels within `tolerance` (per channel) of `colour`, and the
/// columns they span.
fn coloured(rgb: &[[u8; 3]], width: usize, area: &Box, colour: [u8; 3]) -> (usize, usize) {
    const TOLERANCE: u8 = 12;
    let near = |p: &[u8; 3]| (0..3).all(|i| p[i].abs_diff(colour[i]) <= TOLERANCE);
    let mut columns = Vec::new();
    for y in area.top..area.top + area.height {
        for x in area.left..area.left + area.width {
            if rgb.get(y * width + x).is_some_and(near) {
                columns.push(x);
            }
        }
    }
    let span = match (columns.iter().min(), columns.iter().max()) {
        (Some(lo), Some(hi)) => hi - lo,
        _ => 0,
    };
    (columns.len(), span)
}

/// The JSON the page's script draws from.
fn chart_data(html: &str) -> Value {
    let start = r#"<script type="application/json" id="report-data">"#;
    let from = html.find(start).expect("the data element") + start.len();
    let to = from + html[from..].find("</script>").expect("its end");
    serde_json::from_str(&html[from..to]).expect("the data is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_report_draws_its_charts_in_headless_chromium() {
    let dir = temp_dir();
    let page = dir.path().join("report.html");
    let args = [
        "demo", "--json", "--hold", "1s", "--rate", "200", "--report",
    ];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    args.push(page.as_os_str());
    let out = run_to_end(args, Duration::from_secs(40)).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let html = std::fs::read_to_string(&page).expect("the report was written");
    let data = chart_data(&html);
    let points = data["t"].as_array().map_or(0, Vec::len);
    assert!(
        points >= 3,
        "a sample a second over a 4-step rollout: {data}"
    );
    let last_green = data["green"]["weight"][points - 1].as_f64();
    assert_eq!(last_green, Some(100.0), "green ends with all the weight");
    if !have_chromium() {
        return;
    }

    let dom = chromium(dir.path(), &page, &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"data-charts="3""#),
        "the script drew 3 charts"
    );
    assert_eq!(dom.matches(r#"<div class="uplot"#).count(), 3, "{dom}");
    assert!(dom.matches("<canvas").count() >= 3, "a canvas per chart");
    assert!(!dom.contains(r#"data-markers="0""#), "markers drawn");

    let png_file = dir.path().join("report.png");
    let shot = format!("--screenshot={}", png_file.display());
    chromium(dir.path(), &page, &[shot]);
    let (rgb, width) = pixels(&png_file);
    assert_eq!(width, WINDOW.0 as usize);
    let boxes = chart_boxes(&dom);
    assert_eq!(boxes.len(), 3, "{boxes:?}");
    // In each chart the backends' lines run across the plot (at least half its width); the page
    // outside the plots (badges, legends, tables) does not count. Both colours are drawn in the
    // share and latency charts; in the error chart both sit at 0 and green is drawn over blue.
    // Where the two latencies are close green covers blue too, so "drawn" is a line across half
    // the plot with 150 px of its own, not a pixel count (a CI run under load drew blue's latency
    // line with 279 px across 739 of a 1180 px plot, and the 300 px it had to reach failed it).
    let mut drawn = Vec::new();
    for (chart, area) in boxes.iter().enumerate() {
        assert!(
            area.top + area.height <= rgb.len() / width,
            "chart {chart} in the shot: {area:?}"
        );
        let (blue, blue_span) = coloured(&rgb, width, area, BLUE);
        let (green, green_span) = coloured(&rgb, width, area, GREEN);
        drawn.push(format!(
            "chart {chart}: blue {blue} px over {blue_span}, green {green} px over {green_span}"
        ));
        let across = blue_span.max(green_span) > area.width / 2;
        assert!(blue + green > 500 && across, "{area:?}: {drawn:?}");
        if chart != 1 {
            let half = area.width / 2;
            let both = blue > 150 && green > 150 && blue_span > half && green_span > half;
            assert!(both, "{area:?}: {drawn:?}");
        }
    }
    eprintln!("report: {drawn:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_written_from_the_admin_api_and_from_the_state_file_once_the_rollout_ended() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let spec = Spec::new()
        .green(crate::support::App::version("v2"))
        .state_file(&state);
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    let load = Load::start(LoadConfig::new(spec.listen()));
    // Three steps of 1 s: still running now.
    let (status, early) = admin.json("GET", "/rollout/report", None).await;
    assert_eq!(status, 409, "{early}");
    assert!(
        early["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still running"),
        "{early}"
    );

    let rollout = wait_terminal(&admin, Duration::from_secs(30)).await;
    assert_eq!(rollout["phase"], "Completed", "{rollout:#}");
    let from_admin = dir.path().join("admin.html");
    let address = spec.admin().to_string();
    let out = run_to_end(
        [
            "report",
            "--admin",
            &address,
            "-o",
            &from_admin.display().to_string(),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("report of rollout 1 (completed) written to"),
        "{}",
        out.stderr
    );
    drop(load);
    run.terminate(Duration::from_secs(15)).await;
    let from_state = dir.path().join("state.html");
    let out = run_to_end(
        [
            "report",
            "--state",
            &state.display().to_string(),
            "-o",
            &from_state.display().to_string(),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // User37: the state file itself as the output replaced it with the page.
    report_over_is_refused(&state, &state, "the state file of a `crossfade run`").await;

    for page in [from_admin, from_state] {
        let html = std::fs::read_to_string(&page).expect("the report was written");
        assert!(
            html.contains("Rollout 1 on route web: completed"),
            "{}",
            page.display()
        );
        let data = chart_data(&html);
        let served: f64 = data["green"]["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .sum();
        assert!(served > 0.0, "green's requests are in the series: {data}");
        let kinds: Vec<&str> = data["markers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["kind"].as_str())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "step").count(),
            3,
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"pass") && kinds.contains(&"end"),
            "{kinds:?}"
        );
    }
}

/// A state document of a service on which no rollout has run (format 1, every required field).
const NO_ROLLOUT_STATE: &str =
    r#"{"version":1,"route":"web","active_pids":[],"last_rollout_id":0,"events":[]}"#;

#[tokio::test]
async fn report_refuses_a_state_file_without_a_rollout() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    std::fs::write(&state, NO_ROLLOUT_STATE).expect("write the state file");
    let out = run_to_end(
        [
            "report",
            "--state",
            &state.display().to_string(),
            "-o",
            "/dev/null",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no rollout report: no rollout has run on this service yet"),
        "{}",
        out.stderr
    );
}

/// Runs `crossfade report --state STATE -o OUTPUT` and requires a usage error (exit 2) naming
/// OUTPUT as `what`, with OUTPUT left as it was.
async fn report_over_is_refused(state: &Path, output: &Path, what: &str) {
    let before = std::fs::read(output).expect("the file exists");
    let (state, out_path) = (state.display().to_string(), output.display().to_string());
    let args = ["report", "--state", &state, "-o", &out_path];
    let out = run_to_end(args, Duration::from_secs(10)).await;
    assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    let said = format!("{out_path} is {what}");
    assert!(
        out.stderr.contains(&said),
        "{said:?} in {args:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the report would replace what it holds"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(output).unwrap(), before, "{out_path} is kept");
}

/// User37: `crossfade report -o FILE` (and `demo --report FILE`) wrote the page over whatever
/// FILE held: the `--state` file it read (a running instance's state, then read as corrupt), a
/// spec, a proxy config, a TLS key. Such a file of crossfade's is refused before anything is
/// read (exit 2) and kept; an earlier report, or a new file, is written as before.
#[tokio::test]
async fn a_report_over_one_of_crossfades_own_files_is_refused_and_the_file_kept() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    std::fs::write(&state, NO_ROLLOUT_STATE).expect("write the state file");
    let spec = Spec::new().write(dir.path(), "spec.yaml");
    let config = crate::support::spec::write_json(
        dir.path(),
        "proxy.yaml",
        &crate::support::proxy_config(&["127.0.0.1:9".parse().unwrap()], &[]),
    );
    let journal = dir.path().join("state.json.children");
    std::fs::write(&journal, r#"{"version": 1, "children": []}"#).unwrap();
    let key = dir.path().join("tls.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for (output, what) in [
        (&state, "the state file of a `crossfade run`"),
        (&spec, "a rollout spec for `crossfade run`"),
        (&config, "a proxy config for `crossfade proxy`"),
        (
            &journal,
            "the child journal of a `crossfade run` state file",
        ),
        (&key, "a PEM file"),
    ] {
        report_over_is_refused(&state, output, what).await;
    }
    let spec_arg = spec.display().to_string();
    let out = run_to_end(["demo", "--report", &spec_arg], Duration::from_secs(10)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("is a rollout spec"), "{}", out.stderr);
    // An earlier report is replaced as before (the refusal reads what is there).
    let earlier = dir.path().join("report.html");
    std::fs::write(
        &earlier,
        "<!DOCTYPE html><title>an earlier report</title>\n-----BEGIN quoted in an event\n",
    )
    .unwrap();
    let (state_arg, earlier_arg) = (state.display().to_string(), earlier.display().to_string());
    let out = run_to_end(
        ["report", "--state", &state_arg, "-o", &earlier_arg],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        out.code,
        Some(1),
        "read, and refused for its content: {}",
        out.stderr
    );
    assert!(out.stderr.contains("no rollout has run"), "{}", out.stderr);
}

/// Trial report 8: `CROSSFADE_ADMIN` in the environment is a default for `--admin`, not a conflict
/// with an explicit `--state FILE` (which is read).
#[tokio::test]
async fn report_state_is_not_refused_when_crossfade_admin_is_set() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    std::fs::write(&state, NO_ROLLOUT_STATE).expect("write the state file");
    let out = run_to_end_with(
        [
            "report",
            "--state",
            &state.display().to_string(),
            "-o",
            "/dev/null",
        ],
        &[("CROSSFADE_ADMIN", "127.0.0.1:9")],
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !out.stderr.contains("cannot be used with"),
        "{}",
        out.stderr
    );
    // The file was read: its own refusal (no rollout), not the admin API's.
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no rollout has run on this service yet"),
        "{}",
        out.stderr
    );
}

/// Trial report 9: after SIGTERM mid-rollout the state file says Progressing; `report --state`
/// writes the page, marked unfinished, instead of refusing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_state_of_a_rollout_stopped_by_sigterm_is_written_marked_unfinished() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    let mut spec = Spec::new().green(App::version("v2")).state_file(&state);
    spec.json["rollout"]["hold"] = json!("1h");
    spec.json["rollout"]["progress_deadline"] = json!("2h");
    let path = spec.write(dir.path(), "spec.yaml");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &path);
    run.wait_ready(&admin, Duration::from_secs(15)).await;
    wait_state(
        &state,
        Duration::from_secs(15),
        "a Progressing rollout",
        |s| (s["rollout"]["rollout"]["phase"] == "Progressing").then_some(()),
    )
    .await;
    assert!(run.terminate(Duration::from_secs(15)).await.success());

    let page = dir.path().join("unfinished.html");
    let out = run_to_end(
        [
            "report",
            "--state",
            &state.display().to_string(),
            "-o",
            &page.display().to_string(),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let html = std::fs::read_to_string(&page).expect("the report was written");
    assert!(
        html.contains("Rollout 1 on route web: progressing (unfinished)"),
        "{html}"
    );
    assert!(html.contains("unfinished: the state file records this rollout as progressing"));
    // newuser 33: the line on stderr said `(progressing)` alone, as for a live rollout.
    let said = format!(
        "report of rollout 1 (progressing, unfinished) written to {}",
        page.display()
    );
    assert!(
        out.stderr.contains(&said),
        "want {said:?} in {}",
        out.stderr
    );

    // Session 42: `-o -` wrote a file named `-` in the working directory; it is stdout.
    let state_arg = state.display().to_string();
    let out = crate::support::child::run_to_end_in(
        Some(dir.path()),
        ["report", "--state", &state_arg, "-o", "-"],
        &[],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, html, "the page on stdout");
    assert!(!dir.path().join("-").exists(), "no file named -");
    assert!(
        out.stderr
            .contains("report of rollout 1 (progressing, unfinished) written to standard output"),
        "{}",
        out.stderr
    );

    // Session 42: `-o /dev/stdout | head -c 10` exited 1 on the broken pipe ("cannot write the
    // report to /dev/stdout: Broken pipe"), where `-o -` and every other stdout write take a
    // pipe its reader closed as no failure.
    let out = report_into_a_closed_pipe(&state_arg, "/dev/stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("report of rollout 1 (progressing, unfinished) written to /dev/stdout"),
        "{stderr}"
    );
}

/// Runs `crossfade report --state STATE -o OUTPUT` with its stdout a pipe whose reader is already
/// gone, so that a write there fails with EPIPE every time (not only once a pipe's buffer fills).
fn report_into_a_closed_pipe(state: &str, output: &str) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut report = Command::new(crate::support::BIN);
    report.args(["report", "--state", state, "-o", output]);
    let child = report.stdin(std::process::Stdio::null()).stdout(writer);
    child
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run crossfade report")
}

/// `demo --report DIR` is refused before the demo runs, naming the path; so is `report -o DIR`
/// before anything is read (trial 22, finding 13: it failed after fetching, with exit 1), and a
/// report into a directory that does not exist, and one to a file that cannot be written there.
/// All usage errors: exit 2.
#[tokio::test]
async fn a_report_to_a_directory_is_a_usage_error_before_anything_runs() {
    let dir = temp_dir();
    let here = dir.path().display().to_string();
    let missing = dir.path().join("nope/r.html").display().to_string();
    // No instance and no state file: only the flag can have been judged.
    let nothing = dir.path().join("none.json").display().to_string();
    // Trial 25: a path that names a directory not made yet passed, and the demo ran.
    let slashed = format!("{here}/r.html/");
    for (args, said) in [
        (
            vec!["demo", "--report", &here],
            format!("{here} is a directory"),
        ),
        (
            vec!["demo", "--report", &slashed],
            format!("{slashed} names a directory, not a file"),
        ),
        (
            vec!["report", "-o", &here, "--state", &nothing],
            format!("{here} is a directory"),
        ),
        (
            vec!["report", "--output", &missing, "--admin", "127.0.0.1:9"],
            format!("the directory {here}/nope of {missing} does not exist"),
        ),
        // Session 32: a file that cannot be made there (sysfs takes no new file, root's
        // included) ran the whole demo, then failed with exit 1.
        (
            vec!["demo", "--report", "/sys/crossfade-report.html"],
            "cannot write the report to /sys/crossfade-report.html".to_owned(),
        ),
        (
            vec![
                "report",
                "-o",
                "/sys/crossfade-report.html",
                "--state",
                &nothing,
            ],
            "cannot write the report to /sys/crossfade-report.html".to_owned(),
        ),
    ] {
        let out = run_to_end(&args, Duration::from_secs(10)).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&said), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("rollout") && !out.stderr.contains("none.json"),
            "nothing ran or was read: {args:?}: {}",
            out.stderr
        );
    }
}

/// Trial 12 M14: `report --state` on the state file of a running instance refused nothing and
/// wrote a live rollout as "unfinished ... took 0ms"; it now refuses as `GET /rollout/report` does
/// while that instance holds the file's lock, and reports the rollout, marked unfinished, once the
/// instance was stopped mid-rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_from_the_state_file_of_a_running_rollout_is_refused_until_its_instance_stopped() {
    let dir = temp_dir();
    let state = dir.path().join("state.json");
    // Never ready: the rollout stays in Provisioning while the instance runs.
    let green = crate::support::App::version("v2")
        .flags(["--unready-for", "1h"])
        .set(
            "readiness",
            serde_json::json!({ "interval": "100ms", "deadline": "1h" }),
        );
    let mut spec = Spec::new().green(green).state_file(&state);
    spec.json["rollout"]["progress_deadline"] = serde_json::json!("2h");
    let admin = Admin::new(spec.admin());
    let mut run = Crossfade::run(dir.path(), &spec.write(dir.path(), "spec.yaml"));
    run.wait_ready(&admin, Duration::from_secs(30)).await;
    crate::support::child::wait_state(&state, Duration::from_secs(30), "a rollout", |s| {
        (s["rollout"]["rollout"]["phase"] == "Provisioning").then_some(())
    })
    .await;
    let page = dir.path().join("state.html");
    let report = || {
        run_to_end(
            [
                "report".to_owned(),
                "--state".to_owned(),
                state.display().to_string(),
                "-o".to_owned(),
                page.display().to_string(),
            ],
            Duration::from_secs(30),
        )
    };
    let live = report().await;
    assert_eq!(live.code, Some(1), "{}", live.stderr);
    assert!(
        live.stderr
            .contains("no rollout report: rollout 1 of web is still running ("),
        "{}",
        live.stderr
    );
    assert!(!page.exists(), "no report written for a live rollout");

    run.terminate(Duration::from_secs(30)).await;
    let stopped = report().await;
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
    let html = std::fs::read_to_string(&page).expect("the report was written");
    assert!(html.contains("(unfinished)"), "{html}");
}
