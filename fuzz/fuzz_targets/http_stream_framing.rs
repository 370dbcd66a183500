//! Fuzz target `http_stream_framing`: the bytes go to `tributary::fuzzing::http_stream_framing`,
//! which documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/http_stream_framing/` and `artifacts/http_stream_framing/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::http_stream_framing(data));
