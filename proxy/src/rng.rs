//! The cheap random numbers behind the weighted pick: wyrand, one state per thread.
//!
//! The pick needs speed and uniformity, not secrecy: wyrand is one add and one 64×64→128 multiply
//! per draw and passes BigCrush. Tests use a seeded [`WyRand`] for exact, repeatable draws.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// A source of uniform 32-bit random values.
pub trait RandomSource {
    /// The next uniform value.
    fn next_u32(&mut self) -> u32;
}

/// The wyrand generator (Wang Yi, public domain), seedable for tests.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator that yields the same sequence for the same `seed`.
    pub fn new(seed: u64) -> WyRand {
        WyRand { state: seed }
    }

    /// The next uniform 64-bit value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let (value, state) = wyrand_step(self.state);
        self.state = state;
        value
    }
}

impl RandomSource for WyRand {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[inline]
fn wyrand_step(state: u64) -> (u64, u64) {
    let state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
    ((t >> 64) as u64 ^ t as u64, state)
}

thread_local! {
    static THREAD_STATE: Cell<u64> = Cell::new(thread_seed());
}

/// A per-thread seed: std's randomly keyed hasher (seeded from the OS once per process) over the
/// thread id, so threads and processes draw different sequences.
fn thread_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(format!("{:?}", std::thread::current().id()).as_bytes());
    hasher.finish()
}

/// The next uniform value from this thread's generator: lock-free, allocation-free.
#[inline]
pub fn thread_u32() -> u32 {
    THREAD_STATE.with(|cell| {
        let (value, state) = wyrand_step(cell.get());
        cell.set(state);
        (value >> 32) as u32
    })
}

/// The thread-local generator as a [`RandomSource`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRng;

impl RandomSource for ThreadRng {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        thread_u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_sequence() {
        let (mut a, mut b) = (WyRand::new(42), WyRand::new(42));
        let first: Vec<u32> = (0..8).map(|_| a.next_u32()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u32()).collect::<Vec<_>>());
        assert_ne!(first[0], WyRand::new(43).next_u32());
    }

    #[test]
    fn thread_generator_moves_on_every_draw() {
        let draws: std::collections::HashSet<u32> = (0..1000).map(|_| thread_u32()).collect();
        assert!(draws.len() > 990, "{}", draws.len());
    }
}
