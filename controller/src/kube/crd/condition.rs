//! Status conditions as the Kubernetes API conventions define them (`type`, `status`, `reason`,
//! `message`, `lastTransitionTime`, `observedGeneration`; the shape of `metav1.Condition`), and the
//! rule for updating them.

use std::borrow::Cow;

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
    /// Human-readable details, at most 32768 characters (a longer message is cut).
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

/// Longest condition message, in characters: the bound of `metav1.Condition`'s `message`, and of
/// the CRD's schema (`maxLength: 32768`), which the API server checks at every status write.
pub const MAX_MESSAGE: usize = 32768;

/// `message` as a condition carries it: whole when it has at most [`MAX_MESSAGE`] characters
/// (Unicode code points, as the schema's `maxLength` counts them), else its start, ending with
/// `... (N characters cut)`. One longer message (a `crossfade.dev/paused` annotation of 40,000
/// characters, quoted in `AnnotationsValid`; every problem of a large invalid spec) made a real
/// API server refuse every status write of its TrafficShift with 422, and its rollout stood still
/// (trial 30; the emulator checks no schema).
pub fn bounded_message(message: &str) -> Cow<'_, str> {
    let count = message.chars().count();
    if count <= MAX_MESSAGE {
        return Cow::Borrowed(message);
    }
    // Room for the tail: " ... (" and " characters cut)" around at most 20 digits.
    let keep = MAX_MESSAGE - 48;
    let tail = format!(" ... ({} characters cut)", count - keep);
    let head = crate::text::head(message, keep).unwrap_or(message);
    Cow::Owned(format!("{head}{tail}"))
}

/// Sets `new` in `conditions`, replacing the condition of the same type, its message bounded by
/// [`bounded_message`]. The previous `lastTransitionTime` is kept when `status` did not change
/// (API conventions: the time of the last *transition*, not of the last write).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Cow::Owned(bounded) = bounded_message(&new.message) {
        new.message = bounded;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_cut_only_past_the_bound_counted_in_characters() {
        let fits = "é".repeat(MAX_MESSAGE);
        assert_eq!(
            bounded_message(&fits),
            fits.as_str(),
            "32,768 characters fit"
        );
        let long = format!("{fits}é");
        let cut = bounded_message(&long);
        assert_eq!(
            cut.chars().count(),
            MAX_MESSAGE - 48 + " ... (49 characters cut)".len()
        );
        assert!(
            cut.ends_with(" ... (49 characters cut)"),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.chars().count() <= MAX_MESSAGE);
    }
}
