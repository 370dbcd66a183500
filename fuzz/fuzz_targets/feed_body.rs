//! Fuzz target `feed_body`: the bytes go to `tributary::fuzzing::feed_body`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/feed_body/` and `artifacts/feed_body/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::feed_body(data));
