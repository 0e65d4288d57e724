//! A rollout file's `rollout:` section as the changes it writes to the running instance's
//! rollout policy (trial 12, M2): the keys written replace those of the running spec's
//! `rollout:`, key by key, and every key not written keeps the running spec's value.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::{RolloutConfig, SpecError};

/// The `rollout:` section of a `crossfade migrate` file or of a `POST /rollout` body, kept as
/// written (a YAML/JSON map) so that the keys it leaves out can be told from the keys it sets.
///
/// [`RolloutChanges::over`] applies it to the running instance's rollout policy field by field:
/// a key written replaces the running value (`hold: 4s`); a map merges into the running map the
/// same way (`analysis: { max_p99: 800ms }` changes `max_p99` and keeps `min_requests`,
/// `max_error_rate`, ...); a list replaces the whole list (`steps`, `gates`,
/// `analysis.checks`); an explicit `null` clears an optional bound (`max_p99: null`: no latency
/// bound). So an analysis threshold is only ever dropped when the file says so.
/// The rules of a spec's `rollout:` (README "Shares", docs/spec.md) apply to the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolloutChanges(pub Value);

impl RolloutChanges {
    /// The rollout policy `base` (the running spec's `rollout:`) with these changes applied, key
    /// by key as [`RolloutChanges`] describes.
    ///
    /// # Errors
    /// [`SpecError::Parse`] naming the field (`rollout.hold: ...`) when a written value is not of
    /// its field's type, or when the section is not a map.
    pub fn over(&self, base: &RolloutConfig) -> Result<RolloutConfig, SpecError> {
        if !(self.0.is_mapping() || self.0.is_null()) {
            return Err(SpecError::Parse(
                "rollout: must be a map of rollout settings (steps, hold, analysis, ...)".into(),
            ));
        }
        let unwritable = |e: serde_yaml_ng::Error| SpecError::Parse(format!("rollout: {e}"));
        let mut merged = serde_yaml_ng::to_value(base).map_err(unwritable)?;
        merge(&mut merged, &self.0);
        // Read back from text under a `rollout:` key, so that an error names the field's whole
        // path (`rollout.analysis.min_requests: ...`); the line and column would be those of
        // this merged text, not of the file, so they are left out.
        let mut doc = serde_yaml_ng::Mapping::new();
        doc.insert("rollout".into(), merged);
        let text = serde_yaml_ng::to_string(&doc).map_err(unwritable)?;
        let read: Section = serde_yaml_ng::from_str(&text).map_err(|e| {
            let words = crossfade_proxy::de::yaml_words(&e);
            let words = words.split(" at line ").next().unwrap_or_default();
            SpecError::Parse(words.to_owned())
        })?;
        Ok(read.rollout)
    }
}

// === impl RolloutChanges: paths ===

impl RolloutChanges {
    /// Resolves every relative `value_from.file` of a `headers_from` it writes (in
    /// `gates[]` and `analysis.checks[].prometheus`/`.web`) against `base`, the directory of the
    /// `crossfade migrate` file, as a spec's are resolved from the spec's (README "Paths"; trial
    /// 22: `file: token` beside the file was read from the running instance's working
    /// directory). Anything not of that shape is left for the instance's rules to name.
    pub fn resolve_header_files(&mut self, base: &std::path::Path) {
        let mut lists: Vec<&mut Value> = Vec::new();
        let (gates, analysis) = match &mut self.0 {
            Value::Mapping(map) => {
                let mut gates = None;
                let mut analysis = None;
                for (key, value) in map.iter_mut() {
                    match key.as_str() {
                        Some("gates") => gates = Some(value),
                        Some("analysis") => analysis = Some(value),
                        _ => {}
                    }
                }
                (gates, analysis)
            }
            _ => return,
        };
        for gate in sequence(gates) {
            lists.extend(gate.get_mut("headers_from"));
        }
        let checks = analysis.and_then(|a| a.get_mut("checks"));
        for check in sequence(checks) {
            if let Value::Mapping(check) = check {
                for (key, provider) in check.iter_mut() {
                    if matches!(key.as_str(), Some("prometheus" | "web")) {
                        lists.extend(provider.get_mut("headers_from"));
                    }
                }
            }
        }
        for entry in lists.into_iter().flat_map(|l| sequence(Some(l))) {
            let file = entry.get_mut("value_from").and_then(|v| v.get_mut("file"));
            if let Some(Value::String(path)) = file {
                if !path.is_empty() && std::path::Path::new(path.as_str()).is_relative() {
                    *path = base.join(path.as_str()).to_string_lossy().into_owned();
                }
            }
        }
    }
}

/// The items of `value` when it is a sequence; none otherwise.
fn sequence(value: Option<&mut Value>) -> impl Iterator<Item = &mut Value> {
    value
        .and_then(|v| v.as_sequence_mut())
        .into_iter()
        .flat_map(|s| s.iter_mut())
}

/// The merged policy, read under its key.
#[derive(Deserialize)]
struct Section {
    rollout: RolloutConfig,
}

/// Writes `over` into `base`: map into map key by key (recursively), anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) if slot.is_mapping() && value.is_mapping() => merge(slot, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Mapping(_), Value::Null) => {}
        (base, over) => *base = over.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RolloutChanges;
    use crate::spec::{RolloutConfig, RunSpec};

    /// The running spec's policy of trial 12: steps 10/50/100, hold 5s, error rate, p99 and
    /// request bounds.
    fn running() -> RolloutConfig {
        let spec = RunSpec::from_yaml(
            "blue: { endpoints: [127.0.0.1:9000] }\nrollout:\n  steps: [10, 50, 100]\n  hold: 5s\n  \
             progress_deadline: 60s\n  analysis: { max_error_rate: 2%, max_p99: 500ms, min_requests: 30 }\n",
        )
        .unwrap();
        spec.rollout
    }

    fn changes(yaml: &str) -> RolloutChanges {
        RolloutChanges(serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn a_partial_rollout_changes_what_it_writes_and_keeps_the_running_policy() {
        let base = running();
        // Trial 12, M2: only `hold:` written; the steps and every analysis bound stay.
        let merged = changes("{ hold: 4s }").over(&base).unwrap();
        assert_eq!(merged.hold, Duration::from_secs(4));
        assert_eq!(merged.steps, base.steps);
        assert_eq!(merged.steps.len(), 3);
        assert_eq!(merged.analysis, base.analysis);
        assert_eq!(
            merged.analysis.max_p99,
            Some(Duration::from_millis(500)),
            "max_p99 kept"
        );
        assert_eq!(merged.analysis.min_requests, 30);
        assert_eq!(merged.progress_deadline, Duration::from_secs(60));

        // A map merges key by key: one analysis key changed, the others kept.
        let merged = changes("{ analysis: { max_p99: 800ms } }")
            .over(&base)
            .unwrap();
        assert_eq!(merged.analysis.max_p99, Some(Duration::from_millis(800)));
        assert_eq!(merged.analysis.min_requests, 30);
        assert!((merged.analysis.max_error_rate - 0.02).abs() < 1e-12);
        assert_eq!(merged.hold, Duration::from_secs(5));

        // A list replaces the list.
        let merged = changes("{ steps: [50, 100] }").over(&base).unwrap();
        assert_eq!(merged.steps.len(), 2);
        assert_eq!(merged.analysis, base.analysis);

        // A bound is dropped only when written so.
        let merged = changes("{ analysis: { max_p99: null } }")
            .over(&base)
            .unwrap();
        assert_eq!(merged.analysis.max_p99, None);
        assert_eq!(merged.analysis.min_requests, 30);

        // Nothing written: the running policy as it is.
        assert_eq!(changes("{}").over(&base).unwrap(), base);
        assert_eq!(changes("null").over(&base).unwrap(), base);
    }

    #[test]
    fn a_wrong_value_in_the_changes_is_named_by_its_field() {
        let Err(e) = changes("{ analysis: { min_requests: lots } }").over(&running()) else {
            panic!("a word for a count is refused")
        };
        let e = e.to_string();
        assert!(e.contains("rollout.analysis.min_requests"), "{e}");
        let Err(e) = changes("[1, 2]").over(&running()) else {
            panic!("a list is not a rollout section")
        };
        assert!(e.to_string().contains("rollout: must be a map"), "{e}");
    }

    /// Trial 22: a migrate file's header files follow the file, as its `green:` paths do; they
    /// were read from the running instance's working directory.
    #[test]
    fn a_migrate_files_relative_header_files_resolve_from_its_directory() {
        let mut written = changes(
            "{ gates: [{ name: ask, at: before_step, url: \"http://x\", headers_from: [{ name: A, value_from: { file: token } }, { name: B, value_from: { env: T } }] }],\n  \
             analysis: { checks: [{ name: c, min: 1, web: { url: \"http://x\", json_path: $.v, headers_from: [{ name: A, value_from: { file: /abs/token } }] } },\n  \
             { name: d, min: 1, prometheus: { address: \"http://p\", query: up, headers_from: [{ name: A, value_from: { file: sub/t } }] } }] } }",
        );
        written.resolve_header_files(std::path::Path::new("/srv/deploy"));
        let merged = written.over(&running()).unwrap();
        let file = |list: &[crate::spec::headers::HeaderFrom], i: usize| match &list[i].value_from {
            crate::spec::headers::ValueFrom::File(path) => path.display().to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(file(&merged.gates[0].headers_from, 0), "/srv/deploy/token");
        assert!(file(&merged.gates[0].headers_from, 1).contains("Env"));
        let checks = &merged.analysis.checks;
        let web = &checks[0].web.as_ref().unwrap().headers_from;
        assert_eq!(file(web, 0), "/abs/token", "an absolute path stays");
        let prometheus = &checks[1].prometheus.as_ref().unwrap().headers_from;
        assert_eq!(file(prometheus, 0), "/srv/deploy/sub/t");
    }
}
