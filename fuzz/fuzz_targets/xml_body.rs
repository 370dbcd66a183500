//! Fuzz target `xml_body`: the bytes go to `tributary::fuzzing::xml_body`, which
//! documents their layout and the invariants it asserts. `tests/fuzz_corpus.rs` replays
//! `corpus/xml_body/` and `artifacts/xml_body/` through the same function
//! on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tributary::fuzzing::xml_body(data));
