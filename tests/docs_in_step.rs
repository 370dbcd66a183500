//! The documents say what the binary does: every `type = "…"` in README.md, the book
//! (docs/src), the example configs and the Kubernetes ConfigMap is a kind the binary accepts
//! (source, pagination or auth type), every such kind is documented in the book's reference
//! pages (each source kind on a page of its own), and every metric the documents name is one
//! the daemon registers, and every metric it registers is in the book's metrics reference.

mod common;

use std::{collections::BTreeSet, path::Path};

use common::metric_names::*;
use serde::de::DeserializeOwned;
use tributary::{
    http::AuthConfig,
    metrics::Metrics,
    sources::{rest::pagination::PaginationConfig, SourceConfig},
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The book's pages that document configuration keys and kinds: the configuration reference
/// and the page of each source kind.
const REFERENCE_PAGES: &[&str] = &[
    "docs/src/reference/configuration.md",
    "docs/src/sources/sse.md",
    "docs/src/sources/websocket.md",
    "docs/src/sources/webhook.md",
    "docs/src/sources/rest.md",
    "docs/src/sources/graphql.md",
    "docs/src/sources/graphql_subscription.md",
    "docs/src/sources/http_stream.md",
];

/// The book's page that lists every metric family.
const METRICS_REFERENCE: &str = "docs/src/reference/metrics.md";

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every page of the book (docs/src, recursively), by path.
fn book_pages() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(
                    path.strip_prefix(root())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut pages = Vec::new();
    walk(&root().join("docs/src"), &mut pages);
    pages.sort();
    assert!(
        REFERENCE_PAGES
            .iter()
            .chain([&METRICS_REFERENCE])
            .all(|page| pages.iter().any(|p| p == page)),
        "the reference pages are in docs/src: {pages:?}"
    );
    pages
}

/// README.md, every page of the book, deploy/kubernetes/README.md, the ConfigMap and every
/// example config, by path.
fn documents() -> Vec<(String, String)> {
    let mut paths = vec![
        "README.md".to_owned(),
        "deploy/kubernetes/README.md".to_owned(),
        "deploy/kubernetes/configmap.yaml".to_owned(),
    ];
    paths.extend(book_pages());
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(format!(
                "config/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let text = read(&path);
            (path, text)
        })
        .collect()
}

/// The `type` values an internally tagged enum accepts, as serde lists them when it meets an
/// unknown one.
fn variants<T: DeserializeOwned + std::fmt::Debug>() -> BTreeSet<String> {
    let error = serde_json::from_value::<T>(serde_json::json!({ "type": "no-such-type" }))
        .expect_err("an unknown type is refused")
        .to_string();
    let listed = error
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no variant list in `{error}`"));
    listed
        .split(", ")
        .map(|v| v.trim_matches(|c: char| c == '`' || !c.is_ascii() || c.is_whitespace()))
        .map(|v| v.split('`').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_documented_type_is_one_the_binary_accepts_and_the_reverse() {
    let sources = variants::<SourceConfig>();
    let pagination = variants::<PaginationConfig>();
    let auth = variants::<AuthConfig>();
    assert!(sources.contains("sse") && sources.len() == 7, "{sources:?}");
    assert!(pagination.contains("link_header"), "{pagination:?}");
    assert!(auth.contains("bearer"), "{auth:?}");
    let accepted: BTreeSet<&String> = sources.iter().chain(&pagination).chain(&auth).collect();

    let mut unknown = Vec::new();
    for (path, text) in documents() {
        for found in text.split("type = \"").skip(1) {
            let value = found.split('"').next().unwrap();
            // Placeholders such as `type = "…"` are not types.
            if !value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            if !accepted.contains(&value.to_owned()) {
                unknown.push(format!("{path}: type = \"{value}\""));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "types the binary does not accept: {unknown:#?}"
    );

    let reference: String = REFERENCE_PAGES.iter().map(|page| read(page)).collect();
    let undocumented: Vec<&&String> = accepted
        .iter()
        .filter(|v| {
            !reference.contains(&format!("`{v}`")) && !reference.contains(&format!("\"{v}\""))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "types the reference pages ({REFERENCE_PAGES:?}) do not mention: {undocumented:?}"
    );

    // One page per source kind, which documents its `type`.
    let mut missing = Vec::new();
    for kind in &sources {
        let page = format!("docs/src/sources/{kind}.md");
        match std::fs::read_to_string(root().join(&page)) {
            Ok(text) if text.contains(&format!("type = \"{kind}\"")) => {}
            Ok(_) => missing.push(format!("{page} does not document `type = \"{kind}\"`")),
            Err(e) => missing.push(format!("{page}: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "source kinds without their page: {missing:#?}"
    );
}

/// The metric families the daemon registers: its own (whether or not they have a series yet:
/// most appear with their first count), the cluster's and the reload's, and the process
/// collector's.
fn registered_families() -> BTreeSet<String> {
    let metrics = Metrics::new();
    tributary::state::cluster::ClusterMetrics::new(metrics.registry());
    tributary::runtime::reload::register_metrics(metrics.registry());
    let mut families: BTreeSet<String> = metrics.family_names().iter().cloned().collect();
    families.extend(
        metrics
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .map(str::to_owned),
    );
    families
}

#[test]
fn every_metric_the_documents_name_is_registered_and_the_reverse() {
    let families = registered_families();
    assert!(families.contains("tributary_build_info"), "{families:?}");
    assert!(
        families.contains("process_resident_memory_bytes"),
        "{families:?}"
    );
    let exists = |name: &str| {
        families.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|f| families.contains(f))
            })
    };
    let mut unknown = Vec::new();
    for (path, text) in documents() {
        for name in named_in(&text, &["tributary_", "process_"]) {
            if !exists(&name) {
                unknown.push(format!("{path}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the documents name but the daemon does not register: {unknown:#?}"
    );

    let documented = named_in(&read(METRICS_REFERENCE), &["tributary_", "process_"]);
    let undocumented: Vec<&String> = families
        .iter()
        .filter(|family| !documented.contains(*family))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics the daemon registers but {METRICS_REFERENCE} does not name: {undocumented:?}"
    );
}
