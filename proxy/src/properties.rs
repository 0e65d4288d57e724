//! Property tests (proptest) of the pure routing rules, over generated inputs: the weighted pick,
//! sticky monotonicity and path normalisation. Each property is a rule a production user relies on;
//! proptest shrinks any counterexample to a minimal one.

use proptest::prelude::*;

use crate::path::normalize;
use crate::sticky::{self, bucket};
use crate::weight::{draw_bp, Slot, Weights, FULL_BP};

fn weights() -> impl Strategy<Value = Weights> {
    (0..=FULL_BP).prop_map(|green| Weights::with(Slot::Green, green))
}

proptest! {
    /// Weight 0 never matches and 10000 always does, for any draw (case C03); any other split sends
    /// exactly `green` of the 10000 draws to green.
    #[test]
    fn the_pick_gives_green_exactly_its_share_of_draws(w in weights(), r in 0..FULL_BP) {
        let picked = w.pick(r);
        prop_assert_eq!(picked == Some(Slot::Green), r < w.green);
        prop_assert!(picked.is_some());
    }

    /// Any 32-bit random value lands in 0..10000.
    #[test]
    fn every_random_draw_is_a_basis_point(random in any::<u32>()) {
        prop_assert!(draw_bp(random) < FULL_BP);
    }

    /// Raising green's weight only ever moves a key from blue to green, never back (C08); lowering
    /// it only the other way. (That every replica computes the same bucket is pinned by the fixed
    /// values in `sticky::tests`.)
    #[test]
    fn sticky_assignment_is_monotone_in_the_weight(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        a in 0..=FULL_BP,
        b in 0..=FULL_BP,
    ) {
        let (low, high) = (a.min(b), a.max(b));
        let k = bucket(&key);
        prop_assert!(k < FULL_BP);
        let at = |green| sticky::pick(Weights::with(Slot::Green, green), k);
        if at(low) == Some(Slot::Green) {
            prop_assert_eq!(at(high), Some(Slot::Green));
        }
        if at(high) == Some(Slot::Blue) {
            prop_assert_eq!(at(low), Some(Slot::Blue));
        }
    }

    /// The normal form is a fixed point, never climbs above the root, keeps the leading `/`, and has
    /// no `.`/`..` segment or empty segment left.
    #[test]
    fn normalising_a_path_is_idempotent_and_leaves_no_dot_segments(
        segments in proptest::collection::vec(
            prop_oneof![
                Just(".".to_string()), Just("..".to_string()), Just(String::new()),
                Just("%2e".to_string()), Just("%2E%2e".to_string()), Just("%7Euser".to_string()),
                Just("%2F".to_string()), "[a-z0-9._~-]{1,6}",
            ],
            0..8,
        ),
        trailing in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        match normalize(&path) {
            Ok(normal) => {
                prop_assert!(normal.starts_with('/'), "{}", normal);
                let again = normalize(&normal).map(|n| n.into_owned());
                prop_assert_eq!(again, Ok(normal.to_string()));
                for segment in normal.split('/').skip(1) {
                    prop_assert!(segment != "." && segment != "..", "{} from {}", normal, path);
                }
                prop_assert!(!normal.contains("//"), "{} from {}", normal, path);
            }
            // Only a path that climbs above the root is refused here (every escape is valid).
            Err(e) => prop_assert_eq!(e, crate::path::PathError::AboveRoot, "{}", path),
        }
    }
}
