//! Fuzz target `webhook_signature`: the bytes go to `tributary::fuzzing::webhook_signature`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/webhook_signature/` and `artifacts/webhook_signature/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::webhook_signature(data));
