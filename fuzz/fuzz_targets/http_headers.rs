//! Fuzz target `http_headers`: the bytes go to `tributary::fuzzing::http_headers`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/http_headers/` and `artifacts/http_headers/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::http_headers(data));
