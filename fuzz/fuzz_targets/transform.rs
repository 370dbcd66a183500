//! Fuzz target `transform`: the bytes go to `tributary::fuzzing::transform`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/transform/` and `artifacts/transform/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::transform(data));
