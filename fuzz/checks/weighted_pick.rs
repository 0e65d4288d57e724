//! The `weighted_pick` fuzz target's check, shared with the stable replay of its committed corpus
//! (`crossfade_proxy::fuzz_checks`), so the two can never drift: percent parsing never panics and
//! prints back to what it parsed; every draw and every sticky bucket is a basis point; for a split
//! that passes `Weights::check`, both picks send a draw to green exactly when it is below green's
//! weight, never to a side at weight 0, and nowhere only when both weights are 0 (case C03).

use crossfade_proxy::sticky;
use crossfade_proxy::weight::{draw_bp, Percent, Slot, Weights, FULL_BP};

/// The rule both picks must follow.
fn expected(weights: Weights, draw: u32) -> Option<Slot> {
    if draw < weights.green {
        Some(Slot::Green)
    } else if weights.blue > 0 {
        Some(Slot::Blue)
    } else {
        None
    }
}

/// Asserts the rules above on one input; panics on a broken rule. Input: blue, green and a
/// random value as little-endian `u32`s (12 bytes; shorter input is skipped), then a sticky key
/// (also tried as percent text).
pub fn check(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let weights = Weights {
        blue: word(0),
        green: word(4),
    };
    let key = &data[12..];
    if let Ok(Ok(percent)) = std::str::from_utf8(key).map(Percent::parse) {
        assert_eq!(Percent::parse(&percent.to_string()), Ok(percent));
    }
    let draw = draw_bp(word(8));
    let bucket = sticky::bucket(key);
    assert!(draw < FULL_BP && bucket < FULL_BP);
    if weights.check().is_err() {
        return;
    }
    for (r, picked) in [
        (draw, weights.pick(draw)),
        (bucket, sticky::pick(weights, bucket)),
    ] {
        assert_eq!(picked, expected(weights, r), "{weights:?} at {r}");
        if let Some(slot) = picked {
            assert!(weights.of(slot) > 0, "{slot:?} at weight 0 picked");
        }
    }
    assert_eq!(
        weights.pick(draw).is_none(),
        weights.blue + weights.green == 0
    );
}
