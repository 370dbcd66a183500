//! Fuzz target `json_pointer`: the bytes go to `tributary::fuzzing::json_pointer`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/json_pointer/` and `artifacts/json_pointer/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::json_pointer(data));
