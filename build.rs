//! Sets `TRIBUTARY_REVISION`, the git revision the binary is built from, for the
//! `tributary_build_info{version, revision}` metric.
//!
//! The revision is, in order: the `TRIBUTARY_REVISION` environment variable of the build (for
//! builds from a source archive), `git rev-parse HEAD` (the commit checked out; changes not yet
//! committed do not show), or `unknown` when there is no git or no repository.

use std::{path::Path, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned())
}

/// Tells Cargo to build again when `path` changes, if it exists; returns whether it did.
fn watch_if_present(path: &Path) -> bool {
    let present = path.exists();
    if present {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    present
}

fn main() {
    println!("cargo:rerun-if-env-changed=TRIBUTARY_REVISION");
    if let Ok(revision) = std::env::var("TRIBUTARY_REVISION") {
        println!("cargo:rustc-env=TRIBUTARY_REVISION={revision}");
        return;
    }
    let Some(head) = git(&["rev-parse", "HEAD"]).filter(|head| !head.is_empty()) else {
        println!("cargo:rustc-env=TRIBUTARY_REVISION=unknown");
        return;
    };
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs. Only
    // paths that exist are named: Cargo counts a missing one as changed on every build, and a
    // checkout need not have `packed-refs`. A branch that is only packed is watched through its
    // directory, where the next commit writes it; packing refs deletes the loose file watched
    // before, which also builds again.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            watch_if_present(Path::new(&file));
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            let file = Path::new(&file);
            if !watch_if_present(file) {
                if let Some(directory) = file.parent() {
                    watch_if_present(directory);
                }
            }
        }
    }
    println!("cargo:rustc-env=TRIBUTARY_REVISION={head}");
}
