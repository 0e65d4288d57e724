//! Status conditions as the Kubernetes API conventions define them (`type`, `status`, `reason`,
//! `message`, `lastTransitionTime`, `observedGeneration`; the shape of `metav1.Condition`), and the
//! rule for updating them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One condition of a TrafficShift, e.g. `Promoted=True` so that
/// `kubectl wait --for=condition=Promoted` works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, CamelCase (`Progressing`, `Promoted`, `Ready`).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason of the last transition (`AnalysisFailed`).
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// Human-readable details.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed (RFC 3339); unchanged while only reason or message change.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: Time,
    /// The `metadata.generation` the condition was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// `True`, `False` or `Unknown`, as the API conventions spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[allow(missing_docs)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

crate::spec::de::keyword_enum!(
    ConditionStatus,
    default None,
    "True" => ConditionStatus::True,
    "False" => ConditionStatus::False,
    "Unknown" => ConditionStatus::Unknown,
);

/// Sets `new` in `conditions`, replacing the condition of the same type. The previous
/// `lastTransitionTime` is kept when `status` did not change (API conventions: the time of the
/// last *transition*, not of the last write).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}
