//! Warnings about a spec or a rollout request that is valid but says something that has no
//! effect or that the rollout's output cannot show (trial 22, findings 11 and 12): a setting of
//! the sequential judge under `judge: threshold`, and a green labelled as blue is. Refusing
//! them would refuse files that work (a `judge: threshold` written over a sequential policy keeps
//! the sequential keys as written, and one version re-deployed under its own name is a real
//! rollout), so they are said instead: `crossfade check` prints them, `crossfade run` logs them
//! at start, and `POST /rollout` answers them beside the rollout's id (`crossfade migrate`
//! prints them).

use crossfade_proxy::weight::Slot;
use serde_yaml_ng::Value;

use super::{JudgeKind, RolloutConfig, WorkloadSpec};

/// The keys of `rollout.analysis` that only the sequential judge reads (docs/judgement.md):
/// under `judge: threshold` they do nothing.
pub const SEQUENTIAL_KEYS: [&str; 5] = [
    "alpha",
    "beta",
    "max_error_rate_increase",
    "max_latency_increase",
    "fail_when_worse_than",
];

/// One warning per key of [`SEQUENTIAL_KEYS`] that `written` (a `rollout:` section as the file
/// wrote it: a spec's, or a `crossfade migrate` file's [`super::RolloutChanges`]) sets under
/// `analysis` while `rollout` (the policy in force, the running one with the changes applied for
/// a migrate file) judges with the threshold judge. Each names the field, says it does nothing
/// and how to make it count. Empty when the judge is sequential or no such key is written.
pub fn unread_judge_keys(written: &Value, rollout: &RolloutConfig) -> Vec<String> {
    if rollout.analysis.judge != JudgeKind::Threshold {
        return Vec::new();
    }
    let Some(analysis) = written.get("analysis").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    let judge_written = analysis.contains_key("judge");
    SEQUENTIAL_KEYS
        .iter()
        .filter(|key| analysis.contains_key(**key))
        .map(|key| {
            let why = if judge_written {
                "the rollout's judge is `threshold`"
            } else {
                "the rollout's judge is `threshold` (the default; `judge:` is not written)"
            };
            format!(
                "rollout.analysis.{key}: has no effect: only the sequential judge reads it, and \
                 {why}; write `judge: sequential` to use it, or remove it"
            )
        })
        .collect()
}

/// A warning when the shadow step's mirrored exchanges are cut (`analysis.shadow.mirror.timeout`, the
/// proxy's `shadow.timeout`) before the latency the step judges them by (`max_p99`): a green
/// slower than the timeout but within `max_p99` fails the step on `max_error_rate`, each of its
/// cut exchanges counted as its error (check33). Names both fields and their values.
pub fn shadow_timeout_below_max_p99(rollout: &RolloutConfig) -> Option<String> {
    let analysis = &rollout.analysis;
    let (shadow, max_p99) = (analysis.shadow.as_ref()?, analysis.max_p99?);
    let timeout = shadow.mirror.timeout;
    (timeout < max_p99).then(|| {
        format!(
            "rollout.analysis.shadow.mirror.timeout: {} is shorter than rollout.analysis.max_p99 {}: a \
             green that answers a mirrored request after {} but within max_p99 fails the shadow \
             step on max_error_rate (each cut exchange is its error); set the timeout at least \
             to max_p99",
            crate::spec::human(timeout),
            crate::spec::human(max_p99),
            crate::spec::human(timeout)
        )
    })
}

/// A warning when the preview's label (`green.name`, or the slot's name) is the active's
/// (`blue.name`, or its slot's): `crossfade status`, the events, the report,
/// `crossfade_backend_info{version}` and the check templates' `{{ preview_version }}` and
/// `{{ active_version }}` then show one name for both. `field` names the preview's `name` as the
/// file writes it (`green.name`).
pub fn same_label(
    active: &WorkloadSpec,
    active_slot: Slot,
    preview: &WorkloadSpec,
    field: &str,
) -> Option<String> {
    let (active_label, preview_label) = (
        active.label(active_slot),
        preview.label(active_slot.other()),
    );
    (active_label == preview_label).then(|| {
        format!(
            "{field}: \"{preview_label}\" is also the active workload's name ({active_slot}): \
             status, events, the report, metrics (`crossfade_backend_info{{version}}`) and check \
             templates cannot tell the two apart; give green a name of its own"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(yaml: &str) -> (Value, RolloutConfig) {
        let written: Value = serde_yaml_ng::from_str(yaml).unwrap();
        (written.clone(), serde_yaml_ng::from_value(written).unwrap())
    }

    /// check33: a shadow timeout below `max_p99` fails a green within `max_p99` on its cut
    /// exchanges; said naming both fields. Not said at or above it, or without one of them.
    #[test]
    fn a_shadow_timeout_shorter_than_max_p99_is_warned_naming_both() {
        let (_, config) = rollout(
            "analysis: { max_p99: 2s, shadow: { min_compared: 5, mirror: { timeout: 500ms } } }",
        );
        let said = shadow_timeout_below_max_p99(&config).expect("a warning");
        assert!(
            said.starts_with(
                "rollout.analysis.shadow.mirror.timeout: 500ms is shorter than \
                 rollout.analysis.max_p99 2s"
            ),
            "{said}"
        );
        for quiet in [
            "analysis: { max_p99: 2s, shadow: { mirror: { timeout: 2s } } }",
            "analysis: { max_p99: 2s }",
            "analysis: { shadow: { mirror: { timeout: 100ms } } }",
        ] {
            let (_, config) = rollout(quiet);
            assert_eq!(shadow_timeout_below_max_p99(&config), None, "{quiet}");
        }
    }

    #[test]
    fn only_sequential_keys_written_under_the_threshold_judge_are_warned() {
        let (written, config) = rollout(
            "analysis: { judge: threshold, alpha: 0.02, beta: 0.1, max_error_rate_increase: \"1%\", \
             max_latency_increase: 10ms, fail_when_worse_than: allowance, min_requests: 9 }",
        );
        let said = unread_judge_keys(&written, &config);
        let fields: Vec<&str> = said.iter().map(|w| w.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            SEQUENTIAL_KEYS
                .iter()
                .map(|k| format!("rollout.analysis.{k}"))
                .collect::<Vec<_>>()
        );
        assert!(said[0].contains("the rollout's judge is `threshold`; write `judge: sequential`"));
        // The same keys under the sequential judge, or no such key: nothing to say.
        let (written, config) = rollout("analysis: { judge: sequential, alpha: 0.02 }");
        assert_eq!(unread_judge_keys(&written, &config), Vec::<String>::new());
        let (written, config) = rollout("analysis: { max_p99: 1s }\nhold: 5s");
        assert_eq!(unread_judge_keys(&written, &config), Vec::<String>::new());
        // The judge in force decides, not the written section (a migrate file over a running
        // sequential policy writes `alpha` alone).
        let (written, _) = rollout("analysis: { alpha: 0.02 }");
        let (_, sequential) = rollout("analysis: { judge: sequential }");
        assert_eq!(
            unread_judge_keys(&written, &sequential),
            Vec::<String>::new()
        );
        assert_eq!(
            unread_judge_keys(&written, &RolloutConfig::default()).len(),
            1
        );
    }

    #[test]
    fn a_preview_labelled_as_the_active_workload_is_warned_in_either_slot() {
        let named = |name: Option<&str>| WorkloadSpec {
            name: name.map(str::to_owned),
            ..WorkloadSpec::default()
        };
        let field = "green.name";
        assert!(same_label(&named(Some("v1")), Slot::Blue, &named(Some("v1")), field).is_some());
        assert!(same_label(&named(Some("v1")), Slot::Blue, &named(Some("v2")), field).is_none());
        // Labels default to the slot's name: blue named "green" against an unnamed green.
        let said = same_label(&named(Some("green")), Slot::Blue, &named(None), field).unwrap();
        assert!(
            said.starts_with("green.name: \"green\" is also the active workload's name (blue)"),
            "{said}"
        );
        assert!(same_label(&named(None), Slot::Blue, &named(None), field).is_none());
        // After a promotion green's slot is active and the next preview goes to blue's.
        assert!(same_label(&named(Some("v2")), Slot::Green, &named(Some("v2")), field).is_some());
        assert!(same_label(&named(None), Slot::Green, &named(None), field).is_none());
    }
}
