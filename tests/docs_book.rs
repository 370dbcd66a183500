//! The book (docs/, built with mdBook) and README.md hold together: every relative link points
//! at a file that exists, every `#anchor` is a heading of the page it names, every
//! `{{#include …}}` names a file that exists, a book page links only inside the book, and
//! every page under docs/src is listed in docs/src/SUMMARY.md. http(s) and other external
//! links are not followed. Failures name `file:line`.
//!
//! Heading ids follow mdBook's rule (GitHub's is the same for these headings): the heading's
//! text without its markup, lowercased, whitespace turned into `-`, every character dropped
//! but letters, digits, `-` and `_`; a repeated id gets `-1`, `-2`, … Only ATX headings
//! (`# …`) count, and `{#id}` at the end of a heading sets its id.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tree of documents: a book source folder (holding SUMMARY.md) and other Markdown files
/// (README.md) that may link into it.
struct Documents {
    /// The folder every path is relative to (the repository).
    base: PathBuf,
    /// The book's source folder, relative to `base`.
    book: PathBuf,
    /// Markdown files outside the book that are checked too, relative to `base`.
    others: Vec<PathBuf>,
}

impl Documents {
    fn repository() -> Self {
        Documents {
            base: root().to_owned(),
            book: PathBuf::from("docs/src"),
            others: vec![PathBuf::from("README.md")],
        }
    }

    /// Every Markdown file under the book folder, relative to `base`, sorted.
    fn book_pages(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    walk(&path, base, out);
                } else if path.extension().is_some_and(|e| e == "md") {
                    out.push(path.strip_prefix(base).unwrap().to_owned());
                }
            }
        }
        let mut pages = Vec::new();
        walk(&self.base.join(&self.book), &self.base, &mut pages);
        pages
    }

    fn read(&self, path: &Path) -> String {
        std::fs::read_to_string(self.base.join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every broken link, anchor or include, as `file:line: what`.
    fn broken_links(&self) -> Vec<String> {
        let mut files = self.book_pages();
        files.extend(self.others.iter().cloned());
        let mut ids: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        let mut problems = Vec::new();
        for file in &files {
            let text = self.read(file);
            let in_book = file.starts_with(&self.book);
            for link in links(&text) {
                let target = link.target.as_str();
                if is_external(target) {
                    continue;
                }
                let (path_part, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target, None),
                };
                let target_file = if path_part.is_empty() {
                    file.clone()
                } else {
                    match resolve(file, path_part) {
                        Some(path) => path,
                        None => {
                            problems.push(format!(
                                "{}:{}: `{target}` leaves the repository",
                                file.display(),
                                link.line
                            ));
                            continue;
                        }
                    }
                };
                if !self.base.join(&target_file).exists() {
                    problems.push(format!(
                        "{}:{}: `{target}`: no such file ({})",
                        file.display(),
                        link.line,
                        target_file.display()
                    ));
                    continue;
                }
                if in_book && !target_file.starts_with(&self.book) {
                    problems.push(format!(
                        "{}:{}: `{target}` points outside the book ({}): the built book does not \
                         hold it; name the file in a code span or `{{{{#include}}}}` it",
                        file.display(),
                        link.line,
                        target_file.display()
                    ));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if target_file.extension().is_none_or(|e| e != "md") {
                    problems.push(format!(
                        "{}:{}: `{target}`: an anchor into a file that is not Markdown",
                        file.display(),
                        link.line
                    ));
                    continue;
                }
                let known = ids
                    .entry(target_file.clone())
                    .or_insert_with(|| heading_ids(&self.read(&target_file)));
                if !known.contains(anchor) {
                    problems.push(format!(
                        "{}:{}: `{target}`: {} has no heading with the id `{anchor}` (its ids: {})",
                        file.display(),
                        link.line,
                        target_file.display(),
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            for include in includes(&text) {
                let exists = resolve(file, &include.target)
                    .is_some_and(|path| self.base.join(path).is_file());
                if !exists {
                    problems.push(format!(
                        "{}:{}: `{{{{#include {}}}}}`: no such file",
                        file.display(),
                        include.line,
                        include.target
                    ));
                }
            }
        }
        problems
    }

    /// Every page under the book folder that SUMMARY.md does not list, as `file: what`.
    fn unlisted_pages(&self) -> Vec<String> {
        let summary_path = self.book.join("SUMMARY.md");
        let summary = self.read(&summary_path);
        let listed: BTreeSet<PathBuf> = links(&summary)
            .into_iter()
            .filter(|link| !is_external(&link.target))
            .filter_map(|link| {
                let path = link.target.split('#').next().unwrap().to_owned();
                resolve(&summary_path, &path)
            })
            .collect();
        self.book_pages()
            .into_iter()
            .filter(|page| *page != summary_path && !listed.contains(page))
            .map(|page| {
                format!(
                    "{}: not listed in {}: mdBook does not build it",
                    page.display(),
                    summary_path.display()
                )
            })
            .collect()
    }
}

/// A link or an include found in a document: its target and its 1-based line.
#[derive(Debug, PartialEq)]
struct Found {
    target: String,
    line: usize,
}

/// `http://…`, `https://…`, `mailto:…` and any other `scheme:`.
fn is_external(target: &str) -> bool {
    let scheme: String = target
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .collect();
    !scheme.is_empty() && target[scheme.len()..].starts_with(':')
}

/// `target` relative to the folder of `from` (both relative to the repository), normalized;
/// `None` when it climbs out of the repository.
fn resolve(from: &Path, target: &str) -> Option<PathBuf> {
    let mut path = from.parent().unwrap_or(Path::new("")).to_owned();
    for component in Path::new(target).components() {
        match component {
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

/// The lines of `text` outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<String> = None;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        let is_fence =
            marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap());
        match &fence {
            Some(open) => {
                if is_fence
                    && marker.starts_with(open.as_str())
                    && trimmed[marker.len()..].trim().is_empty()
                {
                    fence = None;
                }
            }
            None if is_fence => fence = Some(marker),
            None => out.push((index + 1, line)),
        }
    }
    out
}

/// `line` with its code spans blanked out (a backtick run closes at the next run as long).
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + run..];
        let closing = "`".repeat(run);
        let mut search = 0;
        let mut end = None;
        while let Some(found) = after[search..].find(&closing) {
            let at = search + found;
            let longer = after[at + run..].starts_with('`');
            if !longer && (at == 0 || !after[..at].ends_with('`')) {
                end = Some(at);
                break;
            }
            search = at + after[at..].chars().take_while(|c| *c == '`').count();
        }
        match end {
            Some(at) => {
                out.push_str(&" ".repeat(run * 2 + at));
                rest = &after[at + run..];
            }
            None => {
                // An unclosed run is literal text.
                out.push_str(&rest[start..start + run]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every link target in `text`: inline links and images `[text](target "title")`, and link
/// reference definitions `[label]: target`; not in code.
fn links(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    for (line_number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() <= 3 && trimmed.starts_with('[') {
            if let Some((label, rest)) = trimmed[1..].split_once("]:") {
                if !label.is_empty() && !label.contains('[') {
                    let target = rest.split_whitespace().next().unwrap_or("");
                    let target = target.trim_start_matches('<').trim_end_matches('>');
                    found.push(Found {
                        target: target.to_owned(),
                        line: line_number,
                    });
                    continue;
                }
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let (target, consumed) = if let Some(angle) = after.strip_prefix('<') {
                let end = angle.find('>').unwrap_or(angle.len());
                (&angle[..end], end + 2)
            } else {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => {
                            end = i;
                            break;
                        }
                        ')' => depth -= 1,
                        c if c.is_whitespace() => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                (&after[..end], end)
            };
            found.push(Found {
                target: target.to_owned(),
                line: line_number,
            });
            rest = &after[consumed.min(after.len())..];
        }
    }
    found
}

/// Every `{{#include path}}` (also `{{#include path:lines}}`, `{{#rustdoc_include …}}`), in
/// code blocks too: mdBook expands them everywhere.
fn includes(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{{#") {
            let after = &rest[at + 3..];
            let Some(end) = after.find("}}") else { break };
            let directive = after[..end].trim();
            let mut words = directive.split_whitespace();
            if let (Some("include" | "rustdoc_include"), Some(argument)) =
                (words.next(), words.next())
            {
                let path = argument.split(':').next().unwrap();
                found.push(Found {
                    target: path.to_owned(),
                    line: index + 1,
                });
            }
            rest = &after[end + 2..];
        }
    }
    found
}

/// The id mdBook and GitHub give a heading whose text is `text`.
fn heading_id(text: &str) -> String {
    let text = text.trim();
    if let Some(open) = text.rfind("{#") {
        if text.ends_with('}') {
            return text[open + 2..text.len() - 1].trim().to_owned();
        }
    }
    // Inline markup: code spans keep their text; links keep their text; emphasis goes.
    let mut plain = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').map_or(after.len(), |e| e + 1);
        plain.push_str(&rest[..at]);
        rest = &after[end..];
    }
    plain.push_str(rest);
    plain
        .chars()
        .filter(|c| !matches!(c, '`' | '*' | '['))
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The ids of every ATX heading of a Markdown text (repeats numbered), plus any `id="…"` or
/// `name="…"` an HTML tag sets.
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        let is_heading = line.len() - trimmed.len() <= 3
            && (1..=6).contains(&level)
            && (trimmed.len() == level || trimmed[level..].starts_with([' ', '\t']));
        if is_heading {
            let content = trimmed[level..].trim();
            let content = content.trim_end_matches('#').trim_end();
            let id = heading_id(content);
            let count = seen.entry(id.clone()).or_insert(0);
            ids.insert(if *count == 0 {
                id.clone()
            } else {
                format!("{id}-{count}")
            });
            *count += 1;
        }
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let end = after.find('"').unwrap_or(after.len());
                ids.insert(after[..end].to_owned());
                rest = &after[end..];
            }
        }
    }
    ids
}

#[test]
fn every_relative_link_anchor_and_include_resolves() {
    let documents = Documents::repository();
    assert!(
        documents.book_pages().len() > 20,
        "docs/src holds the book's pages"
    );
    let problems = documents.broken_links();
    assert!(
        problems.is_empty(),
        "broken links in the book or README.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let problems = Documents::repository().unlisted_pages();
    assert!(
        problems.is_empty(),
        "pages mdBook would leave out:\n{}",
        problems.join("\n")
    );
}

#[test]
fn heading_ids_follow_mdbook() {
    // Each pair is a heading of the book and the id mdBook 0.4 gave it.
    for (heading, id) in [
        ("Configuration reference", "configuration-reference"),
        ("`[rate_limits.\"<host>\"]`", "rate_limitshost"),
        (
            "`[sources.<name>]` with `type = \"sse\"`",
            "sourcesname-with-type--sse",
        ),
        (
            "Where the stage runs, and its cost",
            "where-the-stage-runs-and-its-cost",
        ),
        ("`tributary positions`", "tributary-positions"),
        ("Exactly-once", "exactly-once"),
        (
            "systemd: readiness, status and watchdog",
            "systemd-readiness-status-and-watchdog",
        ),
        ("A [linked](page.md) *word*", "a-linked-word"),
        ("Custom {#chosen-id}", "chosen-id"),
    ] {
        assert_eq!(heading_id(heading), id, "{heading}");
    }
    let ids =
        heading_ids("# Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n#nospace\n## Notes ##\n");
    assert_eq!(
        ids,
        BTreeSet::from([
            "notes".to_owned(),
            "notes-1".to_owned(),
            "notes-2".to_owned()
        ])
    );
}

/// The checker itself fails on what it must catch: a book with a missing page, a missing
/// anchor, an include of a missing file, a link out of the book, an unlisted page, and a
/// README link to a missing anchor; and passes what is fine.
#[test]
fn the_checker_catches_broken_links_missing_anchors_and_unlisted_pages() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("config/real.toml", "[kafka]\n");
    write(
        "book/src/SUMMARY.md",
        "# Summary\n\n- [Intro](intro.md)\n- [Guide](guide/one.md)\n",
    );
    write(
        "book/src/intro.md",
        "# Intro\n\n## Two words\n\n\
         Fine: [one](guide/one.md#steps), [here](#two-words), [web](https://example.com/x#y), \
         `[not a link](nowhere.md)`.\n\
         Broken: [gone](guide/gone.md).\n\
         ```md\n[in a code block](nowhere.md)\n```\n\
         Broken: [anchor](guide/one.md#no-such-heading) and [out](../../config/real.toml).\n\n\
         ```toml\n{{#include ../../config/real.toml}}\n{{#include ../../config/missing.toml:2:3}}\n```\n",
    );
    write(
        "book/src/guide/one.md",
        "# One\n\n## Steps\n\nBack to [intro](../intro.md#intro).\n",
    );
    write("book/src/guide/unlisted.md", "# Unlisted\n");
    write(
        "README.md",
        "# Read me\n\n[Steps](book/src/guide/one.md#steps) and [missing](book/src/intro.md#nope).\n",
    );
    let documents = Documents {
        base: dir.path().to_owned(),
        book: PathBuf::from("book/src"),
        others: vec![PathBuf::from("README.md")],
    };
    let problems = documents.broken_links();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| p.split(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            "book/src/intro.md:6",
            "book/src/intro.md:10",
            "book/src/intro.md:10",
            "book/src/intro.md:14",
            "README.md:3",
        ],
        "{problems:#?}"
    );
    assert!(problems[0].contains("no such file"), "{}", problems[0]);
    assert!(
        problems[1].contains("no heading with the id `no-such-heading`"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains("points outside the book"),
        "{}",
        problems[2]
    );
    assert!(problems[3].contains("missing.toml"), "{}", problems[3]);
    assert!(problems[4].contains("`nope`"), "{}", problems[4]);
    assert_eq!(
        documents.unlisted_pages(),
        ["book/src/guide/unlisted.md: not listed in book/src/SUMMARY.md: mdBook does not build it"]
    );
}
