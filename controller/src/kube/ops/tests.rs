use std::time::{Duration, SystemTime};

use super::*;
use crate::kube::command::{check_nonce, decide};

#[test]
fn a_nonce_is_a_utc_timestamp_and_six_hex_digits_and_a_valid_command_value() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1796033702); // 2026-11-30 10:15:02 UTC
    let n = nonce(at);
    let (stamp, suffix) = n.split_once('-').unwrap();
    assert_eq!(stamp, "20261130T101502Z");
    assert!(
        suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{n}"
    );
    assert_eq!(check_nonce(&n), Ok(()));
    assert_ne!(nonce(at), nonce(at), "two nonces of the same second differ");
}

#[test]
fn each_verb_writes_annotations_the_controller_acts_on() {
    for verb in [
        Verb::Promote,
        Verb::Abort,
        Verb::Retry,
        Verb::Pause,
        Verb::Resume,
    ] {
        let annotations: std::collections::BTreeMap<String, String> = verb
            .annotations("n1")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let start = CommandsSeen::default();
        let d = decide(&annotations, &start);
        assert_eq!(d.requests.len(), 1, "{verb:?}: {d:?}");
        let sent = Sent {
            verb,
            deployment: "default/web".into(),
            annotations: verb.annotations("n1"),
        };
        assert!(verb.acted(&sent, &d.seen), "{verb:?}: {d:?}");
        assert!(!verb.acted(&sent, &start), "{verb:?} before");
    }
}
