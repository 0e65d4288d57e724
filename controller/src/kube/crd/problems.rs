//! Every problem of a TrafficShift's spec at once, each naming its field (STYLE.md §5): the
//! fields the schema does not have, the deployment, images and route, and the rollout policy.

use crate::spec::{RolloutConfig, SpecError};

use super::{RolloutPolicy, TrafficShiftSpec};

// === impl TrafficShiftSpec ===

impl TrafficShiftSpec {
    /// The rollout configuration the spec asks for, or every problem found in it, one a line, in
    /// this order: `unknown` (the `spec` fields the schema does not have,
    /// [`super::unknown_fields`]), then [`TrafficShiftSpec::problems`] (deployment, images,
    /// route), then the rollout policy's ([`RolloutPolicy::checked`]). Before (session
    /// 42) each group hid the ones after it: a spec with an unknown field and a bad step was told
    /// only of the field, and after the fix only of the step.
    ///
    /// # Errors
    /// The problems, joined by `\n`: `spec.images.app: "Web:v2" is not an image reference: ...`,
    /// `spec.route.pathPrefix: "api" must start with '/'`, `spec.rollout.steps[1]: ...`.
    pub fn validated(&self, unknown: Vec<String>) -> Result<RolloutConfig, String> {
        let mut problems = unknown;
        problems.extend(self.problems());
        self.rollout
            .checked(problems)
            .map_err(|problems| problems.join("\n"))
    }
}

// === impl RolloutPolicy ===

impl RolloutPolicy {
    /// The rollout configuration this policy asks for, or `found` (the problems found before it:
    /// unknown fields, the spec's other fields) followed by every broken rule of the policy
    /// ([`RolloutPolicy::to_config`], paths under `spec.rollout`). Shared by
    /// [`TrafficShiftSpec::validated`] and the `crossfade.dev/rollout` annotation
    /// ([`crate::kube::trigger::rollout_policy`]), so that both name every problem at once
    /// (session 43: the annotation named only its unknown fields when it had any).
    ///
    /// # Errors
    /// `found` and the policy's problems, in that order, when there is any.
    pub fn checked(&self, found: Vec<String>) -> Result<RolloutConfig, Vec<String>> {
        let mut problems = found;
        let config = match self.to_config() {
            Ok(config) => Some(config),
            Err(SpecError::Invalid(broken)) => {
                problems.extend(broken.iter().map(ToString::to_string));
                None
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> TrafficShiftSpec {
        serde_json::from_value(value).expect("decodes")
    }

    /// Session 42: a spec with several bad fields was told only of the first group's (the
    /// unknown fields, else deployment, images and route, else the rollout policy).
    #[test]
    fn every_problem_of_a_spec_is_named_at_once() {
        let bad = spec(json!({
            "deployment": "web",
            "images": { "app": "Web:v2" },
            "route": { "pathPrefix": "api" },
            "rollout": { "steps": [{ "weight": 50 }, { "weight": 20 }, { "weight": 100 }] },
        }));
        let unknown = vec!["spec.rollout.holdd: unknown field".to_owned()];
        let message = bad.validated(unknown).expect_err("invalid");
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 4, "{message}");
        assert_eq!(lines[0], "spec.rollout.holdd: unknown field");
        assert!(
            lines[1].starts_with("spec.images.app: \"Web:v2\""),
            "{message}"
        );
        assert!(lines[2].starts_with("spec.route.pathPrefix: "), "{message}");
        assert!(lines[3].starts_with("spec.rollout.steps[1]: "), "{message}");
    }

    #[test]
    fn a_valid_spec_gives_its_rollout_configuration() {
        let good = spec(json!({ "deployment": "web", "images": { "app": "web:v2" },
            "rollout": { "hold": "5s" } }));
        let config = good.validated(Vec::new()).expect("valid");
        assert_eq!(config.hold, std::time::Duration::from_secs(5));
    }
}
