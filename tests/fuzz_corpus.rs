//! The fuzz targets' corpora and crash inputs, replayed on stable.
//!
//! Every file of `fuzz/corpus/<target>/` (seeds) and `fuzz/artifacts/<target>/` (inputs that
//! once crashed a target, kept as regressions) goes through `tributary::fuzzing::<target>`,
//! the function the libFuzzer target calls. A panic there fails the test and names the file.
//! See `fuzz/README.md` for running the fuzzers themselves (nightly, cargo-fuzz).

use std::{
    fs,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use tributary::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly under `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The names of the subdirectories of `dir`.
fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Runs `target`'s entry function on every file of `fuzz/corpus/<target>/` and
/// `fuzz/artifacts/<target>/`; the files that panicked, with the panic's message.
fn replay(target: &str) -> (usize, Vec<String>) {
    let (_, entry) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target `{target}` in tributary::fuzzing::TARGETS"));
    let mut paths = files(&fuzz_dir().join("corpus").join(target));
    paths.extend(files(&fuzz_dir().join("artifacts").join(target)));
    let mut failures = Vec::new();
    for path in &paths {
        let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    (paths.len(), failures)
}

fn assert_replays(target: &str) {
    let (count, failures) = replay(target);
    assert!(count > 0, "fuzz/corpus/{target}/ holds no seed");
    assert!(
        failures.is_empty(),
        "{} of {count} inputs of `{target}` panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sse_stream_corpus_replays() {
    assert_replays("sse_stream");
}

#[test]
fn http_headers_corpus_replays() {
    assert_replays("http_headers");
}

#[test]
fn webhook_signature_corpus_replays() {
    assert_replays("webhook_signature");
}

#[test]
fn json_pointer_corpus_replays() {
    assert_replays("json_pointer");
}

#[test]
fn transform_corpus_replays() {
    assert_replays("transform");
}

#[test]
fn websocket_frames_corpus_replays() {
    assert_replays("websocket_frames");
}

#[test]
fn xml_body_corpus_replays() {
    assert_replays("xml_body");
}

#[test]
fn feed_body_corpus_replays() {
    assert_replays("feed_body");
}

#[test]
fn http_stream_framing_corpus_replays() {
    assert_replays("http_stream_framing");
}

/// A corpus or artifacts folder, or a target file, that names no entry function would never
/// be replayed; a target without its test here would not be either.
#[test]
fn every_fuzz_target_has_an_entry_function_and_a_corpus() {
    let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for folder in ["corpus", "artifacts"] {
        for name in subdirectories(&fuzz_dir().join(folder)) {
            assert!(
                known.contains(&name.as_str()),
                "fuzz/{folder}/{name}/ names no target of tributary::fuzzing::TARGETS"
            );
        }
    }
    let mut targets: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut expected: Vec<String> = known.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(targets, expected, "fuzz/fuzz_targets/ and TARGETS differ");
    let this_file = include_str!("fuzz_corpus.rs");
    for name in known {
        assert!(
            this_file.contains(&format!("assert_replays(\"{name}\")")),
            "no replay test for `{name}` in tests/fuzz_corpus.rs"
        );
    }
}
