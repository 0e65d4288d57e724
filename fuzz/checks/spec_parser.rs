//! The `spec_parser` fuzz target's check, shared with the stable replay of its committed corpus
//! (`crossfade_controller::fuzz_checks`) and the controller's property tests, so the three can
//! never drift: the `crossfade run` spec parser (`RunSpec::from_yaml`) on any text never panics; a
//! spec it accepts validates again, and survives a round trip through YAML unchanged.

use crossfade_controller::spec::RunSpec;

/// Parses `data` as a spec (invalid UTF-8 replaced, as lossy text) and asserts the rules above;
/// panics on a broken rule.
pub fn check(data: &[u8]) {
    // Invalid UTF-8 is refused before parsing (by `crossfade run` too): lossy text keeps the rest.
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = RunSpec::from_yaml(&text) else {
        return;
    };
    assert!(spec.validate().is_ok(), "an accepted spec validates again");
    let yaml = serde_yaml_ng::to_string(&spec).expect("an accepted spec serialises");
    let again = RunSpec::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("re-parse failed: {e}\n--- yaml\n{yaml}\n--- input\n{text}"));
    assert_eq!(again, spec, "round trip\n--- yaml\n{yaml}");
}
