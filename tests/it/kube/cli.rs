//! `crossfade controller --kube`, the binary, against the emulator: it refuses to start without
//! the TrafficShift CRD or with an empty or unreadable `--proxy-token-file`, and otherwise turns an
//! annotation into a preview Deployment.

use std::time::Duration;

use crossfade_controller::kube::trigger::{ENABLED, IMAGE};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

use super::emulator::Emulator;
use super::objects::deployment;
use crate::support::{run_to_end, wait_until, Crossfade};

#[tokio::test]
async fn the_controller_refuses_to_start_without_the_crd_and_says_how_to_install_it() {
    let omit = ["--omit", "crossfade.dev/v1alpha1/trafficshifts"];
    let Some(emu) = Emulator::start_with(&omit) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.kubeconfig(dir.path());
    let args = ["controller", "--kube", "--kubeconfig"];
    let out = run_to_end(
        args.iter()
            .map(std::ffi::OsStr::new)
            .chain([kubeconfig.as_os_str()]),
        Duration::from_secs(30),
    )
    .await;
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
    let mut ctl = Crossfade::spawn(
        dir.path(),
        "controller.log",
        [
            "controller".as_ref(),
            "--kube".as_ref(),
            "--namespace".as_ref(),
            "default".as_ref(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
        ],
    );
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client());
    let web = deployment("web", &[(ENABLED, "true"), (IMAGE, "web:v2")]);
    deploys
        .create(&PostParams::default(), &web)
        .await
        .expect("create");
    let preview = wait_until(Duration::from_secs(30), "preview web-green", || async {
        deploys.get_opt("web-green").await.expect("get")
    })
    .await;
    let pod = preview
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert_eq!(pod.containers[0].image.as_deref(), Some("web:v2"));
    let status = ctl.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", ctl.log());
}

#[tokio::test]
async fn the_controller_refuses_an_empty_or_missing_proxy_token_file_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("token");
    std::fs::write(&empty, " \n").expect("write");
    let missing = dir.path().join("nope");
    // Checked before any connection: no emulator needed.
    for (file, why) in [(&empty, "the file is empty"), (&missing, "cannot read it")] {
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
