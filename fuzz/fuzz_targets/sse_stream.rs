//! Fuzz target `sse_stream`: the bytes go to `tributary::fuzzing::sse_stream`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/sse_stream/` and `artifacts/sse_stream/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::sse_stream(data));
