//! `crossfade controller --kube`, the binary, against the emulator: it refuses to start without
//! the TrafficShift CRD or with an empty or unreadable `--proxy-token-file`, and otherwise turns an
//! annotation into a preview Deployment.

use std::time::Duration;

use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::{run_to_end, wait_until, Crossfade, Finished};

/// Spawns `crossfade controller --kube --namespace default --kubeconfig <kubeconfig>` followed by
/// `extra` (and `--metrics 127.0.0.1:0` unless `extra` sets `--metrics`: tests run in parallel),
/// its stderr in `dir/<log_name>`.
pub(super) fn spawn_controller(
    dir: &std::path::Path,
    log_name: &str,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> Crossfade {
    let args = [
        "controller",
        "--kube",
        "--namespace",
        "default",
        "--kubeconfig",
    ];
    let args = args.map(std::ffi::OsStr::new).into_iter();
    let ephemeral = if extra.contains(&"--metrics") {
        &[][..]
    } else {
        &["--metrics", "127.0.0.1:0"][..]
    };
    let extra = extra.iter().chain(ephemeral).map(std::ffi::OsStr::new);
    Crossfade::spawn(
        dir,
        log_name,
        args.chain([kubeconfig.as_os_str()]).chain(extra),
    )
}

/// Creates Deployment `web` annotated to roll out `web:v2`; returns the preview `web-green` the
/// running controller makes of it, within 30 s.
async fn annotated_web_gets_a_preview(emu: &Emulator) -> Deployment {
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client());
    let web = deployment("web", &[(ENABLED, "true"), (IMAGE, "web:v2")]);
    deploys
        .create(&PostParams::default(), &web)
        .await
        .expect("create");
    wait_until(Duration::from_secs(30), "preview web-green", || async {
        deploys.get_opt("web-green").await.expect("get")
    })
    .await
}

/// Runs `crossfade controller --kube --metrics 127.0.0.1:0` with `extra` and `--kubeconfig
/// <kubeconfig>` to its end, within 30 s: for the starts that must fail.
async fn controller_to_end(kubeconfig: &std::path::Path, extra: &[&str]) -> Finished {
    let args = ["controller", "--kube", "--metrics", "127.0.0.1:0"];
    let args = args.iter().chain(extra).chain(&["--kubeconfig"]);
    run_to_end(
        args.map(std::ffi::OsStr::new)
            .chain([kubeconfig.as_os_str()]),
        Duration::from_secs(30),
    )
    .await
}

/// The controller's log once it says that the proxy Leases of `namespace` are readable (its start
/// check passed), within 30 s.
async fn once_leases_readable(ctl: &Crossfade, namespace: &'static str) -> String {
    wait_until(Duration::from_secs(30), "the Leases readable", || {
        let log = ctl.log();
        async move {
            log.lines()
                .any(|l| l.contains("proxy Leases readable") && l.contains(namespace))
                .then_some(log)
        }
    })
    .await
}

#[tokio::test]
async fn the_controller_refuses_to_start_without_the_crd_and_says_how_to_install_it() {
    let omit = ["--omit", "crossfade.dev/v1alpha1/trafficshifts"];
    let Some(emu) = Emulator::start_with(&omit) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let out = controller_to_end(&kubeconfig, &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("the TrafficShift CRD (trafficshifts.crossfade.dev, v1alpha1) is not installed in this cluster; install it with `kubectl apply -f deploy/crd/trafficshift.yaml`"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn the_controller_binary_turns_an_annotation_into_a_preview_and_stops_on_sigterm() {
    let Some(emu) = Emulator::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &[]);
    let preview = annotated_web_gets_a_preview(&emu).await;
    let pod = preview
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert_eq!(pod.containers[0].image.as_deref(), Some("web:v2"));
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// SIGUSR1 and SIGUSR2 mean nothing to `crossfade controller --kube`: each is logged as ignored,
/// and the controller keeps acting (an annotation made after the signals gets its preview) and
/// stops cleanly on SIGTERM.
#[tokio::test]
async fn sigusr1_and_sigusr2_leave_the_controller_binary_acting() {
    let Some(emu) = Emulator::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &[]);
    // Logged once the handlers are installed (the first thing the command does).
    wait_until(Duration::from_secs(30), "the controller starting", || {
        let log = ctl.log();
        async move { log.contains("crossfade controller starting").then_some(()) }
    })
    .await;

    let log = crate::user_signals::send_user_signals(&ctl).await;
    assert!(
        log.contains("SIGUSR2 ignored: this command has no binary upgrade"),
        "{log}"
    );
    assert!(ctl.try_exit().is_none(), "the controller exited: {log}");
    annotated_web_gets_a_preview(&emu).await;
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Runs `program ARGS` (the `crossfade` binary, or a link to it) to its end.
async fn run(program: &std::path::Path, args: &[&std::ffi::OsStr]) -> crate::support::Finished {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command ends within 60 s")
    .expect("run the command");
    crate::support::Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CLI against the emulator's kubeconfig: the `crossfade` binary (`--kube` given), or the
/// kubectl plugin `kubectl-crossfade` (`--kube` implied).
struct Cli<'a> {
    program: &'a std::path::Path,
    kube_flag: bool,
    kubeconfig: &'a std::path::Path,
}

impl Cli<'_> {
    /// Runs `<program> <command> [--kube] <flags> --kubeconfig <kubeconfig> <trafficshift>` to
    /// its end.
    async fn run(
        &self,
        command: &str,
        flags: &[&str],
        trafficshift: &str,
    ) -> crate::support::Finished {
        let os = std::ffi::OsStr::new;
        let mut args = vec![os(command)];
        if self.kube_flag {
            args.push(os("--kube"));
        }
        args.extend(flags.iter().map(|f| os(f)));
        args.extend([
            os("--kubeconfig"),
            self.kubeconfig.as_os_str(),
            os(trafficshift),
        ]);
        run(self.program, &args).await
    }
}

#[tokio::test]
async fn the_cli_pauses_resumes_promotes_and_reports_refusals_also_as_a_kubectl_plugin() {
    use crossfade_controller::kube::crd::ConditionStatus;
    use crossfade_controller::kube::shift::PROMOTED;
    use serde_json::json;

    use super::cluster::{Cluster, FakeProxies};

    let Some(c) = Cluster::start(&["web", "web-green"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = c.kubeconfig(dir.path());
    let plugin = dir.path().join("kubectl-crossfade");
    std::os::unix::fs::symlink(crate::support::BIN, &plugin).expect("link kubectl-crossfade");
    c.create_target(&[]).await;
    c.create_shift(
        json!({ "steps": [{ "weight": 10, "hold": "60s" }, { "weight": 100, "hold": "300ms" }],
        "drainTimeout": "60s", "analysis": { "minRequests": 5, "interval": "300ms" } }),
    )
    .await;
    let proxies = FakeProxies::start(c.client.clone());
    // An in-flight request on the retiring pods holds the rollout in Retiring (drain 60 s), where
    // an abort is too late.
    proxies.hold_green(1, 0);
    let ctl = c.controller_with(proxies.clone());
    c.status_until("step 1 at 10%", |s| {
        s.weights.as_ref().is_some_and(|w| w.preview.bp() == 1000)
    })
    .await;
    let crossfade = Cli {
        program: std::path::Path::new(crate::support::BIN),
        kube_flag: true,
        kubeconfig: &kubeconfig,
    };
    let kubectl = Cli {
        program: &plugin,
        kube_flag: false,
        kubeconfig: &kubeconfig,
    };

    let paused = crossfade.run("pause", &[], "web").await;
    assert_eq!(paused.code, Some(0), "{paused:?}");
    assert!(
        paused.stdout.contains("phase: Paused (step 1/2)"),
        "{paused:?}"
    );
    assert!(
        paused
            .stderr
            .contains("crossfade.dev/paused=true on deployment default/web"),
        "{paused:?}"
    );

    // As `kubectl crossfade`: --kube is implied.
    let resumed = kubectl.run("resume", &[], "web").await;
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
    assert!(resumed.stdout.contains("phase: Progressing"), "{resumed:?}");
    assert!(
        resumed
            .stdout
            .contains("last command: crossfade.dev/paused=false accepted: "),
        "{resumed:?}"
    );

    let promoted = crossfade.run("promote", &[], "web").await;
    assert_eq!(promoted.code, Some(0), "{promoted:?}");
    assert!(
        promoted
            .stdout
            .contains("last command: crossfade.dev/promote="),
        "{promoted:?}"
    );
    c.status_until("Promoted", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROMOTED && c.status == ConditionStatus::True)
    })
    .await;

    // Too late to abort: refused, exit code 1, the reason on stderr.
    let abort = kubectl.run("abort", &[], "web").await;
    assert_eq!(abort.code, Some(1), "{abort:?}");
    assert!(
        abort
            .stderr
            .contains("crossfade: abort refused: abort rejected: too late"),
        "{abort:?}"
    );

    let status = kubectl.run("status", &[], "web").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(
        status
            .stdout
            .starts_with("trafficshift default/web\n  deployment: web -> app=web:v2\n"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("condition Promoted=True"),
        "{status:?}"
    );

    let missing = crossfade.run("status", &[], "nope").await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("trafficshift default/nope not found (kubectl get trafficshifts -n default)"),
        "{missing:?}"
    );

    // No controller: the annotation is written, the CLI says nobody acted on it.
    ctl.abort();
    let _ = ctl.await;
    let retry = crossfade.run("retry", &["--wait", "1s"], "web").await;
    assert_eq!(retry.code, Some(1), "{retry:?}");
    assert!(
        retry
            .stderr
            .contains("on deployment default/web, but no controller acted on it within 1s"),
        "{retry:?}"
    );
}

/// Kubetry28: a token no proxy's `--admin-token-file` accepts (a `Bearer ` scheme written in the
/// file, two lines, a space or a non-ASCII letter inside) was taken at start, and every scrape
/// then got 401 or failed on the header: each analysis inconclusive, the token never named.
#[tokio::test]
async fn the_controller_refuses_a_proxy_token_file_no_proxy_could_hold_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let empty = file("token", " \n");
    let missing = dir.path().join("nope");
    let scheme = file("scheme", "Bearer abcdefghijklmnopqrstuvwxyz\n");
    let lines = file("lines", "abcdefghijklmnop\nqrstuvwxyz012345\n");
    let space = file("space", "abcdefgh ijklmnop\n");
    let accent = file("accent", "abcdéfghijklmnop");
    // Checked before any connection: no emulator needed.
    for (file, why) in [
        (&empty, "the file is empty"),
        (&missing, "cannot read it"),
        (&scheme, "it starts with the scheme `Bearer`: the file holds the token alone (the controller sends `Authorization: Bearer <token>`); character ' ' is not allowed (use letters, digits and -._~+/, then optional '=')"),
        (&lines, "it holds more than one line: the file holds one token, the proxies' --admin-token-file; character '\\n' is not allowed (use letters, digits and -._~+/, then optional '=')"),
        (&space, "it is not one the proxies' --admin-token-file accepts; character ' ' is not allowed"),
        (&accent, "it is not one the proxies' --admin-token-file accepts; character 'é' is not allowed"),
    ] {
        let args = ["controller", "--kube", "--proxy-token-file"];
        let out = run_to_end(
            args.iter()
                .map(std::ffi::OsStr::new)
                .chain([file.as_os_str()]),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.code, Some(1), "{out:?}");
        let expected = format!("--proxy-token-file {}: {why}", file.display());
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
    }
}

#[tokio::test]
async fn the_controller_refuses_a_lease_duration_below_three_seconds_naming_the_flag() {
    // Trial 10, K20: `--lease-duration 0s` was accepted. Checked before any connection.
    for (value, why) in [
        ("0s", "is below the minimum of 3s"),
        ("3500ms", "is not whole seconds"),
    ] {
        let args = ["controller", "--kube", "--lease-duration", value];
        let out = run_to_end(
            args.iter().map(std::ffi::OsStr::new),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.contains("--lease-duration"), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
}

/// Session 42: the stale proxy Lease bound and sweep period as flags; a value below the
/// minimum is refused before any connection, naming the flag.
#[tokio::test]
async fn the_controller_refuses_a_stale_lease_bound_or_sweep_too_short_naming_the_flag() {
    for (flag, value, why) in [
        (
            "--stale-lease-after",
            "0s",
            "give at least 60s (default 1h)",
        ),
        (
            "--stale-lease-sweep",
            "500ms",
            "give at least 10s (default 10m)",
        ),
    ] {
        let args = ["controller", "--kube", flag, value];
        let out = run_to_end(
            args.iter().map(std::ffi::OsStr::new),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.contains(flag), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
}

#[tokio::test]
async fn the_controller_refuses_lease_flags_with_no_leader_election() {
    // Trial 10, K20: `--no-leader-election --lease-name foo` started, ignoring the Lease flag
    // without a word. Refused before any connection, naming both flags.
    for (flag, value) in [
        ("--lease-name", "foo"),
        ("--lease-namespace", "kube-system"),
        ("--lease-duration", "30s"),
    ] {
        let args = ["controller", "--kube", "--no-leader-election", flag, value];
        let out = run_to_end(
            args.iter().map(std::ffi::OsStr::new),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr.contains("--no-leader-election") && out.stderr.contains(flag),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    }
}

/// Trial 10, K20: a controller started with `--no-leader-election` while an elected one holds
/// the Lease acted at once, with no warning; now it says who holds the Lease.
#[tokio::test]
async fn no_leader_election_warns_when_an_elected_controller_holds_the_lease() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let Some(emu) = Emulator::start() else { return };
    let leases: Api<Lease> = Api::default_namespaced(emu.client());
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(crossfade_controller::kube::leader::DEFAULT_LEASE.into()),
            ..Default::default()
        },
        // Renewed now, for an hour: live whatever the load on this machine.
        spec: Some(LeaseSpec {
            holder_identity: Some("elected-1".into()),
            lease_duration_seconds: Some(3600),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the leader's lease");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let mut ctl = spawn_controller(
        dir.path(),
        "controller.log",
        &kubeconfig,
        &["--no-leader-election"],
    );
    let warned = "--no-leader-election, but lease default/crossfade-controller is held by \
                  elected-1, renewed within its duration: an elected controller is acting";
    wait_until(
        Duration::from_secs(30),
        "the warning about the holder",
        || {
            let log = ctl.log();
            async move { log.contains(warned).then_some(()) }
        },
    )
    .await;
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Trial 10, K22: an API server that cannot be reached gave kube's stray `ERROR failed with
/// error` line and a "Connection refused" that named no server. The controller, the proxy and
/// `status --kube` now name the server and where its address came from (the kubeconfig and its
/// context), and print nothing else.
#[tokio::test]
async fn an_unreachable_api_server_is_named_with_its_kubeconfig_and_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port where a connect is refused for the whole test: bound, never listening (a port
    // bound and closed could be taken by another test's listener meanwhile: CI rehearsal 3 of
    // session 35).
    let (_refusing, addr) = crate::support::refused_addr();
    let port = addr.port();
    let kubeconfig = kubeconfig_for(dir.path(), port, "nowhere");
    let named = format!(
        "Kubernetes API server http://127.0.0.1:{port} (from --kubeconfig {}, context nowhere)",
        kubeconfig.display()
    );
    let commands: [&[&str]; 3] = [
        &["controller", "--kube", "--metrics", "127.0.0.1:0"],
        &[
            "proxy",
            "--kube",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &["status", "--kube", "web"],
    ];
    for command in commands {
        let args = command
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]);
        let out = run_to_end(args, Duration::from_secs(60)).await;
        assert_eq!(out.code, Some(1), "{command:?}: {out:?}");
        assert!(out.stderr.contains(&named), "{command:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("Connection refused"),
            "{command:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("failed with error"),
            "{command:?}: {}",
            out.stderr
        );
    }
}

/// A kubeconfig in `dir` for a server on 127.0.0.1:`port`, its one context named `context`.
fn kubeconfig_for(dir: &std::path::Path, port: u16, context: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{context}-kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {context}\n\
             clusters: [{{ name: c, cluster: {{ server: 'http://127.0.0.1:{port}' }} }}]\n\
             contexts: [{{ name: {context}, context: {{ cluster: c, user: u }} }}]\n\
             users: [{{ name: u, user: {{}} }}]\n"
        ),
    )
    .expect("write the kubeconfig");
    path
}

/// Trial 23: an API server that takes the connection and never answers (a hung API server, a
/// port that is not one) held `controller --kube`, `proxy --kube`, `status --kube` and the
/// commands for ever (kube bounds only the connection), and SIGTERM did not end the controller's
/// wait. Each now gives up after 30 s naming the server and what it asked.
#[tokio::test]
async fn an_api_server_that_never_answers_is_named_after_30s() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Listening, never accepting: the kernel completes the handshakes, nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let kubeconfig = kubeconfig_for(dir.path(), port, "silent");
    let named = format!(
        "Kubernetes API server http://127.0.0.1:{port} (from --kubeconfig {}, context silent): \
         no answer within 30s to ",
        kubeconfig.display()
    );
    let run = |command: &'static [&'static str]| {
        let args: Vec<std::ffi::OsString> = command
            .iter()
            .map(std::ffi::OsString::from)
            .chain(["--kubeconfig".into(), kubeconfig.clone().into_os_string()])
            .collect();
        async move { (command, run_to_end(args, Duration::from_secs(90)).await) }
    };
    let started = tokio::time::Instant::now();
    let (controller, proxy, status, pause) = tokio::join!(
        run(&["controller", "--kube", "--metrics", "127.0.0.1:0"]),
        run(&[
            "proxy",
            "--kube",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0"
        ]),
        run(&["status", "--kube", "web"]),
        run(&["pause", "--kube", "web"]),
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let asked = [
        (controller, "the check for the TrafficShift CRD"),
        (proxy, "the check for the TrafficShift CRD"),
        (status, "the read of trafficshift default/web"),
        (pause, "the read of trafficshift default/web"),
    ];
    for ((command, out), what) in asked {
        assert_eq!(out.code, Some(1), "{command:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{named}{what}")),
            "{command:?}: {}",
            out.stderr
        );
    }
    drop(silent);
}

/// Session 41: a command whose read of the TrafficShift is answered but whose write of the
/// annotation is not (an API server or a proxy in between that hangs on it) gives up after 30 s
/// like the read, naming the write and the Deployment and saying that the command may have been
/// recorded (before, the message named only "the pause command", as if nothing had been written).
#[tokio::test]
async fn a_command_whose_annotation_write_is_never_answered_says_it_may_have_been_recorded() {
    use crossfade_controller::kube::crd::TrafficShift;
    let Some(emu) = Emulator::start() else { return };
    let shifts: Api<TrafficShift> = Api::default_namespaced(emu.client());
    shifts
        .create(
            &PostParams::default(),
            &super::objects::shift("web", "app:v2"),
        )
        .await
        .expect("create trafficshift web");
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = front.local_addr().expect("addr").port();
    let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = format!("127.0.0.1:{}", emu.url().rsplit(':').next().expect("port"));
    tokio::spawn(hang_on_patch(front, upstream, patches.clone()));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig_for(dir.path(), port, "hung-write");
    let args = ["pause", "--kube", "--kubeconfig"]
        .map(std::ffi::OsString::from)
        .into_iter()
        .chain([kubeconfig.clone().into_os_string(), "web".into()]);
    // Generous: the bound is 30 s; without it the command waits for ever and this panics.
    let out = run_to_end(args, Duration::from_secs(90)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        patches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{out:?}"
    );
    let expected = format!(
        "crossfade: Kubernetes API server http://127.0.0.1:{port} (from --kubeconfig {}, context \
         hung-write): no answer within 30s to the write of crossfade.dev/paused=true on deployment \
         default/web; the command may or may not have been recorded: check the annotations of \
         `kubectl get deployment web -n default -o yaml`, and the last command of `crossfade \
         status --kube -n default web`, before sending it again\n",
        kubeconfig.display()
    );
    assert_eq!(out.stderr, expected);
}

/// Serves `front` as a proxy to the API server at `upstream` that forwards every request but a
/// PATCH (one request per connection, answered with `Connection: close`), and takes a PATCH
/// (counted in `patches`) without ever answering it.
async fn hang_on_patch(
    front: tokio::net::TcpListener,
    upstream: String,
    patches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut client, _)) = front.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let patches = patches.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
            if head.starts_with("PATCH ") {
                patches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Taken, never answered: the connection stays open until the client gives up.
                let _ = client.read(&mut buf).await;
                std::future::pending::<()>().await;
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while request.len() < head_end + length {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let (first, rest) = head.split_once("\r\n").expect("a request line");
            let mut forwarded = format!("{first}\r\nConnection: close\r\n{rest}").into_bytes();
            forwarded.extend_from_slice(&request[head_end..]);
            let mut server = tokio::net::TcpStream::connect(&upstream)
                .await
                .expect("connect to the emulator");
            server.write_all(&forwarded).await.expect("forward");
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).await.expect("the answer");
            // Said to the client too, so that it sends its next request on a new connection.
            let status_end = answer.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            answer.splice(
                status_end..status_end,
                b"\r\nConnection: close".iter().copied(),
            );
            let _ = client.write_all(&answer).await;
            let _ = client.shutdown().await;
        });
    }
}

#[tokio::test]
async fn sigterm_ends_the_wait_of_the_controller_and_the_proxy_for_a_silent_api_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let kubeconfig = kubeconfig_for(dir.path(), port, "silent");
    let ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &[]);
    let proxy_args = [
        "proxy",
        "--kube",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--kubeconfig",
    ];
    let proxy_args = proxy_args.map(std::ffi::OsStr::new).into_iter();
    let proxy = Crossfade::spawn(
        dir.path(),
        "proxy.log",
        proxy_args.chain([kubeconfig.as_os_str()]),
    );
    let started = [
        (ctl, "crossfade controller starting"),
        (proxy, "crossfade proxy starting"),
    ];
    for (mut child, line) in started {
        wait_until(Duration::from_secs(20), line, || async {
            child.log().contains(line).then_some(())
        })
        .await;
        let status = child.terminate(Duration::from_secs(5)).await;
        assert!(status.success(), "{status:?}\n{}", child.log());
    }
    drop(silent);
}

#[tokio::test]
async fn the_proxy_refuses_a_replica_that_cannot_name_its_lease() {
    // Trial 10, K21: `--replica 'Bad_Name!'` started; every Lease write would have failed on a
    // real API server. Refused before anything binds or connects, as a usage error (exit 2, as
    // every other bad flag value; it was 1, trial 20).
    let args = [
        "proxy",
        "--kube",
        "--replica",
        "Bad_Name!",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    let out = run_to_end(
        args.iter().map(std::ffi::OsStr::new),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--replica")
            && out.stderr.contains(
                r#""Bad_Name!" cannot name this replica's Lease "crossfade-proxy-Bad_Name!""#
            ),
        "{}",
        out.stderr
    );
}

/// Trial 18, T19: `promote --kube shop/web` (the route's name, as metrics and logs write a
/// TrafficShift's route) looked up TrafficShift `default/shop/web` and said "not found", and a
/// name or namespace no Kubernetes object can have (`Web`) was looked up too. Each is refused
/// before any request (the kubeconfig here names a closed port), saying what to write.
#[tokio::test]
async fn a_trafficshift_name_no_object_can_have_is_refused_saying_what_to_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{ name: c, cluster: {{ server: 'http://127.0.0.1:{port}' }} }}]\n\
             contexts: [{{ name: c, context: {{ cluster: c, user: u }} }}]\n\
             users: [{{ name: u, user: {{}} }}]\n"
        ),
    )
    .expect("write the kubeconfig");
    let cases: [(&[&str], &str); 4] = [
        (
            &["promote", "--kube", "shop/web"],
            "NAME \"shop/web\": a TrafficShift's name has no `/` (shop/web is how its route is \
             named in metrics and logs); write `-n shop web`",
        ),
        (
            &["status", "--kube", "Web"],
            "NAME \"Web\" cannot be a TrafficShift's name",
        ),
        (&["abort", "--kube", "Web"], "did you mean `web`?"),
        (
            &["pause", "--kube", "-n", "Shop", "web"],
            "-n \"Shop\" cannot be a namespace (lower-case letters, digits and `-`, at most 63); \
             did you mean `shop`?",
        ),
    ];
    for (command, wanted) in cases {
        let args = command
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]);
        let out = run_to_end(args, Duration::from_secs(60)).await;
        // A usage error exits 2, as clap's own do (trial 20; it was 1).
        assert_eq!(out.code, Some(2), "{command:?}: {out:?}");
        assert!(out.stderr.contains(wanted), "{command:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("Connection refused"),
            "{command:?}: refused before any request: {}",
            out.stderr
        );
    }
}

/// Kube28: a namespace of `--proxy-namespace` whose Leases the controller may not list (no Role
/// there: 403) failed only at the first step that counted the proxies, every reconcile after. The
/// start now checks each namespace once and ends, naming the namespace, the verb and resource and
/// the RBAC objects expected.
#[tokio::test]
async fn a_proxy_namespace_the_controller_may_not_read_fails_the_start_naming_it() {
    let Some(emu) = Emulator::start_with(&["--forbid", "shop/leases"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let out = controller_to_end(&kubeconfig, &["--proxy-namespace", "default,shop"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = "crossfade: cannot list leases (coordination.k8s.io/v1, label crossfade.dev/proxy=true) in namespace shop, listed in --proxy-namespace: 403 Forbidden: leases.coordination.k8s.io is forbidden: User \"emulator\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"shop\"; the controller's ServiceAccount needs list and watch on leases in namespace shop: a Role and RoleBinding crossfade-controller-proxy-leases in shop bound to ServiceAccount crossfade-system/crossfade-controller (deploy/controller/rbac.yaml makes them in crossfade-proxy-leases, deploy/examples/sidecar.yaml in an application namespace), or take shop out of --proxy-namespace";
    assert!(out.stderr.contains(expected), "{}", out.stderr);
}

/// Kube28: the same list failing for a while (500: etcd timing out under the API server; kube's
/// client retries 503 and 429 by itself) is tried again
/// with a backoff, each failure logged, and the controller then starts and acts: a pod started
/// before the API server can answer does not crash-loop.
#[tokio::test]
async fn a_proxy_namespace_the_api_server_cannot_list_yet_is_tried_again_until_it_can() {
    let Some(emu) = Emulator::start_with(&["--internal-error", "shop/leases=2"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let extra = ["--proxy-namespace", "default,shop"];
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &extra);
    let log = once_leases_readable(&ctl, "shop").await;
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("list the proxies' Leases (crossfade.dev/proxy=true) in namespace shop (--proxy-namespace): ")
                && l.contains("etcdserver: request timed out")
                && l.contains("trying again")
        })
        .collect();
    assert_eq!(retries.len(), 2, "{log}");
    annotated_web_gets_a_preview(&emu).await;
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Kubetry28: `--proxy-token-file shop=FILE` without a default FILE left the proxies of the other
/// namespaces read (here `default`) without a token, said by nobody until their first scrape got
/// 401. The start now warns, naming the namespaces left without one.
#[tokio::test]
async fn namespaced_proxy_tokens_without_a_default_are_warned_of_at_start() {
    let Some(emu) = Emulator::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let token = dir.path().join("shop-token");
    std::fs::write(&token, "shop-token-0123456789\n").expect("write");
    let entry = format!("--proxy-token-file=shop={}", token.display());
    let extra = ["--proxy-namespace", "default,shop", entry.as_str()];
    let mut ctl = spawn_controller(dir.path(), "controller.log", &kubeconfig, &extra);
    let log = once_leases_readable(&ctl, "shop").await;
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                && l.contains("--proxy-token-file gives tokens for namespace shop only, and no FILE without NAMESPACE=: the proxies whose Leases are in namespace default (--proxy-namespace) are scraped without a token")
        })
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

/// Trial 30: `crossfade status --kube` refused by RBAC said kube's `ApiError: ...: Forbidden
/// (Status { status: Some(Failure), code: 403, ... })`; it says the API server's message and the
/// grant it needs, once.
#[tokio::test]
async fn a_status_the_user_may_not_read_names_the_grant_it_needs() {
    let Some(emu) = Emulator::start_with(&["--forbid", "default/trafficshifts"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let args = [
        std::ffi::OsStr::new("status"),
        "--kube".as_ref(),
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "web".as_ref(),
    ];
    let out = run_to_end(args, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = "crossfade: get trafficshift default/web: 403 Forbidden: trafficshifts.crossfade.dev is forbidden: User \"emulator\" cannot list resource \"trafficshifts\" in API group \"crossfade.dev\" in the namespace \"default\"; the user of the kubeconfig (or the pod's ServiceAccount) needs get on trafficshifts.crossfade.dev in namespace default (docs/kubernetes.md, \"From the command line\")\n";
    assert_eq!(out.stderr, expected);
}

/// Trial 30: a controller whose ServiceAccount may not list TrafficShifts in the namespace it
/// watches started, became ready and led, and its watch failed for ever with a WARN; the start
/// now ends naming the resource, the namespace and the grant.
#[tokio::test]
async fn a_namespace_whose_trafficshifts_the_controller_may_not_list_fails_the_start() {
    let Some(emu) = Emulator::start_with(&["--forbid", "shop/trafficshifts"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let extra = ["--namespace", "shop", "--proxy-namespace", "shop"];
    let out = controller_to_end(&kubeconfig, &extra).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = "crossfade: cannot list trafficshifts.crossfade.dev in namespace shop (--namespace): 403 Forbidden: trafficshifts.crossfade.dev is forbidden: User \"emulator\" cannot list resource \"trafficshifts\" in API group \"crossfade.dev\" in the namespace \"shop\"; the controller's ServiceAccount needs get, list and watch on trafficshifts.crossfade.dev in namespace shop (a Role and RoleBinding)\n";
    assert!(out.stderr.ends_with(expected), "{}", out.stderr);
}
