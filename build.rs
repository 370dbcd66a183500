//! Sets `TRIBUTARY_REVISION`, the git revision the binary is built from, for the
//! `tributary_build_info{version, revision}` metric.
//!
//! The revision is, in order: the `TRIBUTARY_REVISION` environment variable of the build (for
//! builds from a source archive), `git rev-parse HEAD` (the commit checked out; changes not yet
//! committed do not show), or `unknown` when there is no git or no repository.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned())
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
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rustc-env=TRIBUTARY_REVISION={head}");
}
