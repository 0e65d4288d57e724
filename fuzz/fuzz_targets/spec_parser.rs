//! The `crossfade run` spec parser (`RunSpec::from_yaml`) on any text: never panics; a spec it
//! accepts validates again, and survives a round trip through YAML unchanged.
#![no_main]

use crossfade_controller::spec::RunSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
