//! The documentation (README.md, CHANGELOG.md and docs/*.md) checked
//! against the binary and the repository: the settings table is what
//! `--list-settings` prints, the benchmark figures are the last `bench/`
//! runs, `--help` and the docs name the same flags and exit codes (and no
//! setting or option the binary lacks), every relative link and `#anchor`
//! resolves, and every shell example is either run here or names the script
//! or test that runs it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md, CHANGELOG.md and every docs/*.md, as paths under the repo.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn shown(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The text between two marker lines (the begin marker's line excluded).
fn between<'a>(text: &'a str, begin: &str, end: &str, file: &str) -> &'a str {
    let start = text
        .find(begin)
        .unwrap_or_else(|| panic!("{file}: no {begin}"));
    let start = start + text[start..].find('\n').expect("marker line") + 1;
    let stop = text[start..]
        .find(end)
        .unwrap_or_else(|| panic!("{file}: no {end}"));
    &text[start..start + stop]
}

fn run_binary(arg: &str) -> String {
    let output = Command::new(support::bin())
        .arg(arg)
        .output()
        .expect("run the binary");
    assert!(output.status.success(), "{arg} failed");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn settings_table_in_configuration_md_matches_the_binary() {
    let table = run_binary("--list-settings");
    let doc = read(&repo().join("docs/configuration.md"));
    assert_eq!(
        between(&doc, "<!-- settings:begin -->", "<!-- settings:end -->", "docs/configuration.md"),
        table,
        "docs/configuration.md's table is stale: regenerate it with `airflow-entrypoint --list-settings`"
    );
}

#[test]
fn benchmark_table_in_benchmarks_md_is_the_last_bench_run() {
    let results = read(&repo().join("bench/RESULTS.md"));
    let from = results
        .find("| metric |")
        .expect("bench/RESULTS.md has its table");
    let doc = read(&repo().join("docs/benchmarks.md"));
    assert_eq!(
        between(&doc, "<!-- bench:begin -->", "<!-- bench:end -->", "docs/benchmarks.md"),
        &results[from..],
        "docs/benchmarks.md's table is not the last run: copy bench/RESULTS.md from its `| metric |` line on"
    );
}

/// Every number in the README's headline table is one a `bench/` run wrote.
#[test]
fn readme_headline_figures_come_from_the_bench_results() {
    let written = bench_results();
    let readme = read(&repo().join("README.md"));
    let table = between(
        &readme,
        "<!-- headline:begin -->",
        "<!-- headline:end -->",
        "README.md",
    );
    let mut missing = Vec::new();
    for line in table.lines().skip(2) {
        // The first cell names the metric; the last says where it comes from.
        let cells: Vec<&str> = line.split('|').collect();
        for cell in &cells[2..cells.len().saturating_sub(2)] {
            for number in numbers(cell) {
                if !written.contains(&number) {
                    missing.push(format!("{number} (in `{}`)", cell.trim()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README headline figures no bench/*.md holds: {missing:?}"
    );
}

/// Every number in the "last run" paragraphs of docs/benchmarks.md (between
/// `<!-- figures:begin -->` and `<!-- figures:end -->`) is one a `bench/`
/// run wrote.
#[test]
fn benchmark_prose_figures_come_from_the_bench_results() {
    let written = bench_results();
    let doc = read(&repo().join("docs/benchmarks.md"));
    let mut blocks = 0;
    let mut missing = Vec::new();
    for piece in doc.split("<!-- figures:begin -->").skip(1) {
        let block = piece
            .split("<!-- figures:end -->")
            .next()
            .expect("a figures block ends");
        blocks += 1;
        for number in numbers(block) {
            if !written.contains(&number) {
                missing.push(number);
            }
        }
    }
    assert!(blocks >= 3, "only {blocks} figures blocks");
    assert!(
        missing.is_empty(),
        "docs/benchmarks.md figures no bench/*.md holds: {missing:?}"
    );
}

/// The text of every bench/*.md.
fn bench_results() -> String {
    let mut written = String::new();
    for entry in fs::read_dir(repo().join("bench")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            written.push_str(&read(&path));
        }
    }
    written
}

/// The decimal numbers in `text` (`0.558`, `2235384`, `157`).
fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || (c == '.' && !current.is_empty()) {
            current.push(c);
        } else if !current.is_empty() {
            out.push(current.trim_end_matches('.').to_string());
            current.clear();
        }
    }
    out
}

#[test]
fn readme_is_at_most_250_lines() {
    let lines = read(&repo().join("README.md")).lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move depth into docs/"
    );
}

/// One markdown file: its lines outside code fences, and its fenced blocks
/// with the info string and the nearest non-blank line before the fence.
struct Parsed {
    prose: Vec<(usize, String)>,
    blocks: Vec<Block>,
}

struct Block {
    line: usize,
    info: String,
    before: String,
    body: Vec<String>,
}

fn parse(text: &str) -> Parsed {
    let mut prose = Vec::new();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_prose = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(block) = open.as_mut() {
            if trimmed.starts_with("```") {
                blocks.push(open.take().unwrap());
            } else {
                block.body.push(line.to_string());
            }
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            open = Some(Block {
                line: i + 1,
                info: info.trim().to_string(),
                before: last_prose.clone(),
                body: Vec::new(),
            });
            continue;
        }
        if !line.trim().is_empty() {
            last_prose = line.trim().to_string();
        }
        prose.push((i + 1, line.to_string()));
    }
    assert!(open.is_none(), "an unclosed code fence");
    Parsed { prose, blocks }
}

/// A line with its inline code spans removed (links inside them are text).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of `[text](target)` links in a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(close) = after.find(')') else { break };
        out.push(after[..close].trim().to_string());
        rest = &after[close..];
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (letters,
/// digits, `-` and `_` stay), each space a `-`; repeats get `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in parse(text).prose {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('#') {
            continue;
        }
        let title = trimmed.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        let anchor = if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        };
        *count += 1;
        out.insert(anchor);
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        for (line_no, line) in parse(&text).prose {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let place = format!("{}:{line_no}: {target}", shown(&file));
                if !resolved.exists() {
                    broken.push(format!("{place}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    if resolved.extension().is_none_or(|x| x != "md") {
                        broken.push(format!(
                            "{place}: an anchor into a file that is not markdown"
                        ));
                    } else if !anchors(&read(&resolved)).contains(anchor) {
                        broken.push(format!("{place}: no heading makes #{anchor}"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rules() {
    let made = anchors("# The image\n## `--print-env`: what it shows\n## A — b\n# The image\n```\n# not a heading\n```\n");
    let expected: BTreeSet<String> = [
        "the-image",
        "--print-env-what-it-shows",
        "a--b",
        "the-image-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(made, expected);
}

/// How a shell example is kept from going stale, from the comment on the
/// line before its fence.
enum Proof {
    /// `<!-- run: doc-test -->`: this test runs each command.
    RunHere,
    /// `<!-- run-by: PATH | TEXT -->`: PATH (a script or test) runs it;
    /// TEXT, which PATH must contain, names the check.
    RunBy(String, Option<String>),
    /// `<!-- not-run: REASON -->`: shown but run nowhere, and why.
    NotRun(String),
}

fn proof(before: &str) -> Option<Proof> {
    let inner = before.strip_prefix("<!--")?.strip_suffix("-->")?.trim();
    if inner == "run: doc-test" {
        return Some(Proof::RunHere);
    }
    if let Some(rest) = inner.strip_prefix("run-by:") {
        let (path, text) = match rest.split_once('|') {
            Some((p, t)) => (p.trim(), Some(t.trim().to_string())),
            None => (rest.trim(), None),
        };
        return Some(Proof::RunBy(path.to_string(), text));
    }
    let reason = inner.strip_prefix("not-run:")?.trim();
    (!reason.is_empty()).then(|| Proof::NotRun(reason.to_string()))
}

/// The commands of a block: `\`-continued lines joined, comments and blank
/// lines left out.
fn commands(body: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in body {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// The exit code a command's `# exit N` comment promises; 0 without one.
fn expected_exit(command: &str) -> i32 {
    command
        .rsplit_once("# exit ")
        .and_then(|(_, n)| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs one documented command with `sh -c` in the repository, the binary
/// under test first on PATH as `airflow-entrypoint`, in an environment
/// without this machine's Airflow variables.
fn run_documented(command: &str, bin_dir: &Path) -> (i32, String) {
    let out_path = bin_dir.join("output");
    let out = fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if [
            "AIRFLOW",
            "ASTRONOMER",
            "_AIRFLOW",
            "CONNECTION_CHECK",
            "DUMB_INIT",
        ]
        .iter()
        .any(|p| key.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin_dir.display()))
        .env("AIRFLOW_ENTRYPOINT_BIN", bin_dir.join("airflow-entrypoint"));
    let mut child = cmd.spawn().expect("sh");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` ran over 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), read(&out_path))
}

#[test]
fn every_shell_example_is_run_here_or_names_what_runs_it() {
    let bin_dir = support::TempDir::new("docs");
    std::os::unix::fs::symlink(support::bin(), bin_dir.path().join("airflow-entrypoint")).unwrap();
    let mut problems = Vec::new();
    let mut not_run = Vec::new();
    let mut ran = 0;
    for file in doc_files() {
        let text = read(&file);
        for block in parse(&text).blocks {
            if !["sh", "bash", "shell", "console"].contains(&block.info.as_str()) {
                continue;
            }
            let place = format!("{}:{}", shown(&file), block.line);
            match proof(&block.before) {
                None => problems.push(format!(
                    "{place}: a shell example without <!-- run: doc-test -->, <!-- run-by: PATH | TEXT --> or <!-- not-run: REASON --> on the line before it"
                )),
                Some(Proof::RunHere) => {
                    for command in commands(&block.body) {
                        let (code, output) = run_documented(&command, bin_dir.path());
                        ran += 1;
                        let want = expected_exit(&command);
                        if code != want {
                            problems.push(format!(
                                "{place}: `{command}` exited {code}, the docs say {want}:\n{output}"
                            ));
                        }
                    }
                }
                Some(Proof::RunBy(path, text)) => {
                    let target = repo().join(&path);
                    if !target.is_file() {
                        problems.push(format!("{place}: run-by {path}: no such file"));
                    } else if let Some(text) = text {
                        if !read(&target).contains(&text) {
                            problems.push(format!("{place}: {path} does not contain {text:?}"));
                        }
                    }
                }
                Some(Proof::NotRun(reason)) => not_run.push(format!("{place}: {reason}")),
            }
            // Whatever runs it, the repository's scripts it names exist.
            for command in commands(&block.body) {
                for word in command.split_whitespace() {
                    let word = word.trim_start_matches("./");
                    if ["scripts/", "bench/", "examples/"]
                        .iter()
                        .any(|p| word.starts_with(p))
                        && !repo().join(word).exists()
                    {
                        problems.push(format!("{place}: {word} does not exist"));
                    }
                }
            }
        }
    }
    for line in &not_run {
        eprintln!("shown but not run: {line}");
    }
    assert!(ran > 0, "no example was run");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every option `--help` lists is in the configuration doc, and the exit
/// codes it lists are exactly the rows of the exit-code table.
#[test]
fn help_and_docs_agree() {
    let help = run_binary("--help");
    let configuration = read(&repo().join("docs/configuration.md"));
    let mut missing = Vec::new();
    // Option lines are indented two spaces; their descriptions deeper.
    let option_lines = help
        .lines()
        .filter(|l| l.starts_with("  -") || l.starts_with("  --"));
    for line in option_lines {
        for word in line.split([' ', ',', '[', '=']) {
            if word.starts_with("--") && word.len() > 2 {
                let flag = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                if !configuration.contains(&format!("`{flag}")) {
                    missing.push(flag.to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "--help options docs/configuration.md does not name: {missing:?}"
    );

    let (_, codes_text) = help
        .split_once("Exit codes:")
        .expect("--help lists exit codes");
    let codes_text = codes_text.split("\n\n").next().unwrap();
    let from_help: BTreeSet<String> = numbers(codes_text)
        .into_iter()
        .filter(|n| n != "128")
        .collect();
    let doc = read(&repo().join("docs/signals-and-exit.md"));
    let table = between(
        &doc,
        "<!-- exit-codes:begin -->",
        "<!-- exit-codes:end -->",
        "docs/signals-and-exit.md",
    );
    let from_doc: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next())
        .filter(|c| c.chars().all(|c| c.is_ascii_digit()))
        .map(String::from)
        .collect();
    assert_eq!(
        from_help, from_doc,
        "--help's exit codes and docs/signals-and-exit.md's table differ"
    );
}

/// The options `--help` lists: name → whether it takes a value.
fn help_options(help: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for line in help.lines().filter(|l| l.starts_with("  -")) {
        for (i, word) in line.split_whitespace().enumerate() {
            let word = word.trim_end_matches(',');
            if let Some(name) = word.strip_prefix("--") {
                let (name, bool_form) = match name.split_once("[=") {
                    Some((n, _)) => (n, true),
                    None => (name, false),
                };
                let next = line.split_whitespace().nth(i + 1).unwrap_or("");
                out.insert(format!("--{name}"), !bool_form && next.starts_with('<'));
            }
        }
    }
    out
}

/// No doc names a setting or an option the binary does not have: every
/// `AIRFLOW_ENTRYPOINT_*` is in `--list-settings`, and every option after
/// `airflow-entrypoint` in a command is in `--help`.
#[test]
fn every_setting_and_option_the_docs_name_exists() {
    let settings = run_binary("--list-settings");
    let options = help_options(&run_binary("--help"));
    assert!(options.contains_key("--wait-only") && options["--grace-period"]);
    let mut unknown = BTreeSet::new();
    for file in doc_files() {
        let text = read(&file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("AIRFLOW_ENTRYPOINT_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            // `AIRFLOW_ENTRYPOINT_*` names them all.
            if name != "AIRFLOW_ENTRYPOINT" && !settings.contains(&format!("`{name}`")) {
                unknown.insert(format!("{}: {name}", shown(&file)));
            }
            rest = &rest[at + name.len()..];
        }
        for line in text.lines() {
            let line: String = line
                .chars()
                .map(|c| if "\"',[]`()".contains(c) { ' ' } else { c })
                .collect();
            let mut pieces = line.split("airflow-entrypoint ");
            pieces.next();
            for piece in pieces {
                let mut words = piece.split_whitespace();
                while let Some(word) = words.next() {
                    if word == "--" || !word.starts_with("--") {
                        break;
                    }
                    let name = word.split('=').next().unwrap();
                    match options.get(name) {
                        None => {
                            unknown.insert(format!("{}: {name}", shown(&file)));
                        }
                        Some(true) if !word.contains('=') => {
                            words.next();
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "settings or options the binary does not have: {unknown:?}"
    );
}

#[test]
fn the_dockerfile_labels_the_entrypoint_with_cargos_version() {
    let cargo = read(&repo().join("Cargo.toml"));
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml has a version line");
    let dockerfile = read(&repo().join("Dockerfile"));
    let wanted = format!("ARG ENTRYPOINT_VERSION={version}");
    assert!(
        dockerfile.lines().any(|l| l.trim() == wanted),
        "the Dockerfile's ENTRYPOINT_VERSION default must be Cargo.toml's version: want `{wanted}`"
    );
}
