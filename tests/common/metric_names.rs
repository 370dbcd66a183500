//! Metric names: those a scrape holds, and those a PromQL expression or a document names.

use std::collections::BTreeSet;

/// The names of the samples in a scrape (histograms as `_bucket`, `_sum`, `_count`).
pub fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every identifier in `text` that starts with one of `prefixes` (PromQL metric names), outside
/// double-quoted strings (label values, YAML annotations).
pub fn metric_names(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    words(text, prefixes, true)
}

/// Every identifier in `text` that starts with one of `prefixes`, quoted or not (documents).
pub fn named_in(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    words(text, prefixes, false)
}

fn words(text: &str, prefixes: &[&str], skip_strings: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if skip_strings && bytes[start] == b'"' {
            let mut end = start + 1;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            start = end + 1;
        } else if is_ident(bytes[start]) && (start == 0 || !is_ident(bytes[start - 1])) {
            let end = (start..bytes.len())
                .find(|&i| !is_ident(bytes[i]))
                .unwrap_or(bytes.len());
            let word = &text[start..end];
            if prefixes.iter().any(|p| word.starts_with(p)) {
                names.insert(word.to_owned());
            }
            start = end;
        } else {
            start += 1;
        }
    }
    names
}
