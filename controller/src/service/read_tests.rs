//! How a `crossfade migrate` file's `rollout:` changes are judged before the running instance's
//! policy is known (trial 22).

use super::StartRequest;
use crate::spec::SpecError;

const GREEN: &str = "green: { endpoints: [127.0.0.1:9000] }\n";

fn paths(rollout: &str) -> Vec<String> {
    match StartRequest::from_yaml(&format!("{GREEN}rollout: {rollout}\n")) {
        Ok(_) => Vec::new(),
        Err(SpecError::Invalid(found)) => found.into_iter().map(|p| p.path).collect(),
        Err(e) => panic!("{rollout}: {e}"),
    }
}

#[test]
fn a_migrate_file_is_not_judged_by_the_default_values_of_keys_it_leaves_to_the_instance() {
    // Each is fine over some running policy: a longer progress deadline (10m), a first step of
    // 0% with `analysis.shadow`, ... and `POST /rollout` judges it over the running one.
    for rollout in [
        "{ hold: 3m }",
        "{ steps: [{ weight: 10, hold: 5m }, 100] }",
        "{ analysis: { interval: 5m } }",
        "{ steps: [{ weight: 0, hold: 5s }, 100] }",
        "{ analysis: { shadow: { min_compared: 10 } } }",
    ] {
        assert_eq!(paths(rollout), Vec::<String>::new(), "{rollout}");
    }
}

#[test]
fn a_migrate_file_still_names_every_problem_its_own_keys_decide() {
    for (rollout, expected) in [
        ("{ hold: 3m, progress_deadline: 2m }", vec!["rollout.hold"]),
        (
            "{ progress_deadline: 1m, analysis: { interval: 5m } }",
            vec!["rollout.analysis.interval"],
        ),
        (
            "{ steps: [50, 20] }",
            vec!["rollout.steps[1]", "rollout.steps"],
        ),
        (
            "{ steps: [0, 100], analysis: { shadow: null } }",
            vec!["rollout.steps[0]"],
        ),
        (
            "{ hold: 1ms, analysis: { min_requests: 0 } }",
            vec!["rollout.hold", "rollout.analysis.min_requests"],
        ),
    ] {
        assert_eq!(paths(rollout), expected, "{rollout}");
    }
}
