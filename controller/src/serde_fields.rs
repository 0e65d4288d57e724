//! Test support: the field names a serde struct accepts, for tests that keep schemas and docs in
//! step with the types (the TrafficShift CRD, docs/spec.md).

/// The fields serde accepts in `T` (read from its `deny_unknown_fields` refusal, so the list is the
/// type's own and grows with it).
///
/// # Panics
/// When `T` accepts the probe field or its error lists no fields: the probe only works on a
/// `deny_unknown_fields` map.
pub(crate) fn accepted_fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let err = serde_yaml_ng::from_str::<T>("no_such_field_probe: 1")
        .expect_err("deny_unknown_fields refuses the probe")
        .to_string();
    // serde lists three fields and more as "expected one of `a`, `b`, `c`", two as
    // "expected `a` or `b`".
    let list = err
        .split("expected one of ")
        .nth(1)
        .map(str::to_owned)
        .or_else(|| {
            err.split("expected ")
                .nth(1)
                .map(|l| l.replace(" or ", ", "))
        })
        .unwrap_or_else(|| panic!("no field list in {err:?}"));
    list.split(", ")
        .map(|f| {
            f.trim()
                .trim_end_matches(|c: char| c != '`')
                .trim_matches('`')
                .to_string()
        })
        .collect()
}
