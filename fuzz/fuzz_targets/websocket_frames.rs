//! Fuzz target `websocket_frames`: the bytes go to `tributary::fuzzing::websocket_frames`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/websocket_frames/` and `artifacts/websocket_frames/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::websocket_frames(data));
