//! Reads one value from `airflow.cfg` text as Airflow's Python `ConfigParser` does:
//! sections, case-insensitive keys, continuation lines, `[DEFAULT]`, `%(name)s`.
//! It owns the syntax only: it must never read files or the environment, never
//! panic on any input, and never put a value (possibly a secret) in an error.

use std::collections::HashMap;
use std::fmt;

/// CPython's `configparser.MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;
/// Largest interpolated value produced.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most text one interpolation may walk through (so that a reference fan-out
/// that produces little or nothing still finishes quickly).
const MAX_WORK_BYTES: usize = 16 << 20;

const DEFAULT_SECTION: &str = "DEFAULT";

/// A syntax or interpolation problem. `line` is 1-based; for an interpolation
/// problem it is the line of the key being read. `message` never contains a
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for CfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CfgError {}

/// One value from the text: parse, then [`CfgFile::get`] (the tests' shorthand).
#[cfg(test)]
pub fn cfg_get(text: &str, section: &str, key: &str) -> Result<Option<String>, CfgError> {
    CfgFile::parse(text)?.get(section, key)
}

/// A whole airflow.cfg, parsed once; values are interpolated when read.
pub struct CfgFile {
    sections: HashMap<String, HashMap<String, Entry>>,
    defaults: HashMap<String, Entry>,
}

impl CfgFile {
    /// Parses the text as configparser does; see [`CfgFile::get`] for the errors.
    pub fn parse(text: &str) -> Result<CfgFile, CfgError> {
        parse(text)
    }

    /// Returns the value of `key` in `[section]`, if present.
    ///
    /// `section` is matched exactly (configparser section names are
    /// case-sensitive); `key` case-insensitively. A key missing from `[section]` is
    /// taken from `[DEFAULT]`, but only when `[section]` itself exists (as
    /// configparser's `has_option`). `section == "DEFAULT"` reads `[DEFAULT]`.
    /// Like Python, the whole text must parse, even parts unrelated to the key.
    ///
    /// The value is interpolated (`%%` and `%(name)s`), but not put through
    /// Airflow's later `expand_env_var` (`$VAR`, `~`); that is the caller's job.
    ///
    /// # Errors
    ///
    /// A line configparser would reject (key before any section, malformed
    /// header, line without `=`/`:`, empty key, duplicate section or key, UTF-8
    /// BOM), or a broken `%` in the value read (lone `%`, malformed or missing
    /// `%(name)s`, nesting deeper than 10, or expansion past 1 MiB).
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, CfgError> {
        let key = key.to_lowercase();
        let own = (section != DEFAULT_SECTION)
            .then(|| self.sections.get(section))
            .flatten();
        let found = if section == DEFAULT_SECTION {
            self.defaults.get(&key)
        } else if let Some(own) = own {
            own.get(&key).or_else(|| self.defaults.get(&key))
        } else {
            None
        };
        let Some(entry) = found else {
            return Ok(None);
        };

        let scope = Scope {
            section: own,
            defaults: &self.defaults,
        };
        let mut out = String::new();
        let mut work = 0usize;
        interpolate(&entry.value, &scope, &mut out, 1, &mut work).map_err(|problem| CfgError {
            line: entry.line,
            message: problem.message(&key, section),
        })?;
        Ok(Some(out))
    }
}

/// One option's value, continuation lines joined, not yet interpolated.
struct Entry {
    line: usize,
    value: String,
}

/// A value under construction: CPython collects the lines, then joins them
/// with `\n` and strips trailing whitespace. `section` is None for
/// `[DEFAULT]`.
struct Pending {
    section: Option<String>,
    key: String,
    line: usize,
    lines: Vec<String>,
}

/// Python's `str.isspace()`: Unicode White_Space plus the information
/// separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn err(line: usize, message: impl Into<String>) -> CfgError {
    CfgError {
        line,
        message: message.into(),
    }
}

/// Mirrors CPython's `RawConfigParser._read` with Airflow's settings
/// (delimiters `=` `:`, comment prefixes `#` `;`, no inline comments,
/// `strict=True`, `empty_lines_in_values=True`, keys lowercased).
fn parse(text: &str) -> Result<CfgFile, CfgError> {
    let mut parsed = CfgFile {
        sections: HashMap::new(),
        defaults: HashMap::new(),
    };
    // Current section: its name, None for `[DEFAULT]`.
    let mut current: Option<Option<String>> = None;
    let mut pending: Option<Pending> = None;
    let mut indent_level = 0usize;

    for (index, line) in UniversalLines::new(text).enumerate() {
        let line_no = index + 1;
        if line_no == 1 && line.starts_with('\u{feff}') {
            return Err(err(
                line_no,
                "the file starts with a UTF-8 byte order mark, which Airflow's configparser \
                 rejects: save it as UTF-8 without BOM",
            ));
        }
        let stripped = line.trim_matches(py_space);
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        if is_comment || stripped.is_empty() {
            // An empty line (not a comment) inside a value is kept, in case an
            // indented continuation follows; trailing ones are stripped at the end.
            if !is_comment && current.is_some() {
                if let Some(p) = pending.as_mut() {
                    p.lines.push(String::new());
                }
            }
            continue;
        }

        let indent = line.chars().take_while(|&c| py_space(c)).count();
        if current.is_some() && indent > indent_level {
            if let Some(p) = pending.as_mut() {
                p.lines.push(stripped.to_string());
                continue;
            }
        }
        indent_level = indent;

        if let Some(name) = section_header(stripped) {
            finish(&mut parsed, pending.take());
            if name == DEFAULT_SECTION {
                current = Some(None);
            } else {
                if parsed.sections.contains_key(name) {
                    return Err(err(
                        line_no,
                        format!(
                            "section [{name}] appears twice: Airflow's configparser rejects \
                             duplicate sections, merge them into one"
                        ),
                    ));
                }
                parsed.sections.insert(name.to_string(), HashMap::new());
                current = Some(Some(name.to_string()));
            }
            continue;
        }

        let Some(section) = current.as_ref() else {
            return Err(err(
                line_no,
                "key outside of any [section]: put a section header such as [core] above it",
            ));
        };

        let delimiter = stripped.bytes().position(|b| b == b'=' || b == b':');
        let Some((raw_key, raw_value)) = delimiter.and_then(|at| {
            let (key, rest) = stripped.split_at_checked(at)?;
            Some((key, rest.get(1..)?))
        }) else {
            return Err(err(
                line_no,
                if stripped.starts_with('[') {
                    "malformed section header: expected [section] with a closing ]"
                } else {
                    "expected `key = value` (or `key: value`), a [section] header, \
                     or a comment starting with # or ;"
                },
            ));
        };
        let key = raw_key.trim_end_matches(py_space).to_lowercase();
        if key.is_empty() {
            return Err(err(
                line_no,
                "expected `key = value` with a key before the `=` or `:`",
            ));
        }
        // The value before this one may be the same key's: file it first.
        finish(&mut parsed, pending.take());
        let first = match section {
            Some(name) => parsed.sections.get(name).and_then(|m| m.get(&key)),
            None => parsed.defaults.get(&key),
        };
        if let Some(first) = first {
            let shown = section.as_deref().unwrap_or(DEFAULT_SECTION);
            return Err(err(
                line_no,
                format!(
                    "key `{key}` appears twice in [{shown}] (first on line {}): \
                     Airflow's configparser rejects duplicates, keep one",
                    first.line
                ),
            ));
        }
        pending = Some(Pending {
            section: section.clone(),
            key,
            line: line_no,
            lines: vec![raw_value.trim_matches(py_space).to_string()],
        });
    }
    finish(&mut parsed, pending.take());
    Ok(parsed)
}

/// Stores a finished value in its section.
fn finish(parsed: &mut CfgFile, pending: Option<Pending>) {
    let Some(p) = pending else { return };
    let map = match &p.section {
        Some(name) => match parsed.sections.get_mut(name) {
            Some(map) => map,
            None => return,
        },
        None => &mut parsed.defaults,
    };
    let joined = p.lines.join("\n");
    let value = joined.trim_end_matches(py_space).to_string();
    map.insert(
        p.key,
        Entry {
            line: p.line,
            value,
        },
    );
}

/// configparser's `\[(?P<header>.+)\]` matched at the start of the stripped
/// line: the header runs to the LAST `]`, and anything after it is ignored.
fn section_header(stripped: &str) -> Option<&str> {
    let inner = stripped.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    let name = inner.get(..close)?;
    if name.is_empty() {
        None
    } else {
        Some(name)
    }
}

/// Lines split the way Python's text mode reads them: `\n`, `\r\n` or `\r`.
struct UniversalLines<'a> {
    rest: Option<&'a str>,
}

impl<'a> UniversalLines<'a> {
    fn new(text: &'a str) -> Self {
        UniversalLines {
            rest: (!text.is_empty()).then_some(text),
        }
    }
}

impl<'a> Iterator for UniversalLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        // Bytes, not chars: both ends are ASCII, so `at` is a char boundary,
        // and a byte scan is many times faster over a 145 kB airflow.cfg.
        match rest.bytes().position(|b| b == b'\r' || b == b'\n') {
            Some(at) => {
                let (line, tail) = rest.split_at_checked(at).unwrap_or((rest, ""));
                let tail = tail
                    .strip_prefix("\r\n")
                    .or_else(|| tail.get(1..))
                    .unwrap_or("");
                self.rest = (!tail.is_empty()).then_some(tail);
                Some(line)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// What went wrong while interpolating; rendered with the key and section.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Missing,
    BadReference,
    LonePercent,
    TooDeep,
    TooBig,
}

impl Problem {
    fn message(&self, key: &str, section: &str) -> String {
        match self {
            Problem::Missing => format!(
                "`{key}` in [{section}] has a %(name)s reference to a key that is not set in \
                 [{section}] or [DEFAULT]: define that key, or write %% for a literal %"
            ),
            Problem::BadReference => format!(
                "`{key}` in [{section}] has a malformed %(name)s reference: write \
                 %(other_key)s to insert another key, or %% for a literal %"
            ),
            Problem::LonePercent => format!(
                "`{key}` in [{section}] has a % not followed by % or (: \
                 write %% for a literal % (e.g. in a URL-encoded password)"
            ),
            Problem::TooDeep => format!(
                "`{key}` in [{section}] nests %(name)s references more than \
                 {MAX_INTERPOLATION_DEPTH} levels deep: break the reference loop"
            ),
            Problem::TooBig => format!(
                "`{key}` in [{section}] expands to more than {} MiB through %(name)s \
                 references: reduce the repetition",
                MAX_VALUE_BYTES >> 20
            ),
        }
    }
}

/// Where `%(name)s` looks: the section read from, then `[DEFAULT]`.
struct Scope<'a> {
    section: Option<&'a HashMap<String, Entry>>,
    defaults: &'a HashMap<String, Entry>,
}

impl<'a> Scope<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.section
            .and_then(|s| s.get(name))
            .or_else(|| self.defaults.get(name))
            .map(|e| e.value.as_str())
    }
}

/// CPython's `BasicInterpolation._interpolate_some`: `%%` is `%`, `%(name)s`
/// is the raw value of `name` (lowercased) from the same section or
/// `[DEFAULT]`, itself interpolated if it contains a `%`.
fn interpolate(
    raw: &str,
    scope: &Scope<'_>,
    out: &mut String,
    depth: usize,
    work: &mut usize,
) -> Result<(), Problem> {
    if depth > MAX_INTERPOLATION_DEPTH {
        return Err(Problem::TooDeep);
    }
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        let (literal, from_percent) = rest.split_at_checked(at).unwrap_or((rest, ""));
        push(out, literal, work)?;
        let after = from_percent.get(1..).unwrap_or("");
        if let Some(after_double) = after.strip_prefix('%') {
            push(out, "%", work)?;
            rest = after_double;
        } else if let Some(reference) = after.strip_prefix('(') {
            let close = reference.find(')').ok_or(Problem::BadReference)?;
            let (name, from_close) = reference
                .split_at_checked(close)
                .ok_or(Problem::BadReference)?;
            let after_reference = from_close.strip_prefix(")s").ok_or(Problem::BadReference)?;
            if name.is_empty() {
                return Err(Problem::BadReference);
            }
            let value = scope.get(&name.to_lowercase()).ok_or(Problem::Missing)?;
            if value.contains('%') {
                charge(work, value.len())?;
                interpolate(value, scope, out, depth + 1, work)?;
            } else {
                push(out, value, work)?;
            }
            rest = after_reference;
        } else {
            return Err(Problem::LonePercent);
        }
    }
    push(out, rest, work)
}

fn charge(work: &mut usize, bytes: usize) -> Result<(), Problem> {
    *work = work.saturating_add(bytes);
    if *work > MAX_WORK_BYTES {
        Err(Problem::TooBig)
    } else {
        Ok(())
    }
}

fn push(out: &mut String, s: &str, work: &mut usize) -> Result<(), Problem> {
    charge(work, s.len())?;
    if out.len().saturating_add(s.len()) > MAX_VALUE_BYTES {
        return Err(Problem::TooBig);
    }
    out.push_str(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(text: &str, section: &str, key: &str) -> Option<String> {
        cfg_get(text, section, key).unwrap()
    }

    fn fail(text: &str, section: &str, key: &str) -> CfgError {
        cfg_get(text, section, key).unwrap_err()
    }

    // ---- sections and keys ----

    #[test]
    fn reads_a_key_from_its_section() {
        let text =
            "[core]\nexecutor = LocalExecutor\n[database]\nsql_alchemy_conn = sqlite:///x.db\n";
        assert_eq!(
            get(text, "database", "sql_alchemy_conn").as_deref(),
            Some("sqlite:///x.db")
        );
        assert_eq!(
            get(text, "core", "executor").as_deref(),
            Some("LocalExecutor")
        );
    }

    #[test]
    fn missing_key_or_section_is_none() {
        let text = "[core]\na = 1\n";
        assert_eq!(get(text, "core", "b"), None);
        assert_eq!(get(text, "database", "a"), None);
        assert_eq!(get("", "core", "a"), None);
    }

    #[test]
    fn key_from_another_section_is_not_returned() {
        assert_eq!(get("[core]\nx = 1\n[db]\ny = 2\n", "db", "x"), None);
    }

    #[test]
    fn section_names_are_case_sensitive() {
        let text = "[Core]\na = 1\n";
        assert_eq!(get(text, "core", "a"), None);
        assert_eq!(get(text, "Core", "a").as_deref(), Some("1"));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let text = "[core]\nSQL_Alchemy_CONN = v\n";
        assert_eq!(get(text, "core", "sql_alchemy_conn").as_deref(), Some("v"));
        assert_eq!(get(text, "core", "SQL_ALCHEMY_CONN").as_deref(), Some("v"));
    }

    #[test]
    fn equals_and_colon_both_delimit() {
        let text = "[s]\na = 1\nb: 2\nc=3\nd:4\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2"));
        assert_eq!(get(text, "s", "c").as_deref(), Some("3"));
        assert_eq!(get(text, "s", "d").as_deref(), Some("4"));
    }

    #[test]
    fn first_delimiter_wins_so_urls_survive() {
        let text =
            "[database]\nsql_alchemy_conn = postgresql://u:p@h:5432/db?a=b\nurl: http://x=y\n";
        assert_eq!(
            get(text, "database", "sql_alchemy_conn").as_deref(),
            Some("postgresql://u:p@h:5432/db?a=b")
        );
        assert_eq!(get(text, "database", "url").as_deref(), Some("http://x=y"));
    }

    #[test]
    fn key_may_contain_spaces_and_is_right_trimmed() {
        assert_eq!(
            get("[s]\nmy key   = v\n", "s", "my key").as_deref(),
            Some("v")
        );
    }

    #[test]
    fn values_are_stripped_and_may_be_empty() {
        let text = "[s]\na =    padded   \t\nb =\nc:\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("padded"));
        assert_eq!(get(text, "s", "b").as_deref(), Some(""));
        assert_eq!(get(text, "s", "c").as_deref(), Some(""));
    }

    #[test]
    fn section_header_may_be_indented_and_followed_by_text() {
        let text = "  [core] ; trailing\na = 1\n";
        assert_eq!(get(text, "core", "a").as_deref(), Some("1"));
    }

    #[test]
    fn section_header_runs_to_the_last_closing_bracket() {
        let text = "[a]b]\nk = 1\n";
        assert_eq!(get(text, "a]b", "k").as_deref(), Some("1"));
    }

    #[test]
    fn section_name_spaces_are_kept() {
        let text = "[ core ]\nk = 1\n";
        assert_eq!(get(text, "core", "k"), None);
        assert_eq!(get(text, " core ", "k").as_deref(), Some("1"));
    }

    // ---- comments ----

    #[test]
    fn hash_and_semicolon_comment_lines_are_ignored() {
        let text = "# top\n; top\n[s]\n# a = 1\n   ; b = 2\n\t# c = 3\nd = 4\n";
        assert_eq!(get(text, "s", "a"), None);
        assert_eq!(get(text, "s", "b"), None);
        assert_eq!(get(text, "s", "c"), None);
        assert_eq!(get(text, "s", "d").as_deref(), Some("4"));
    }

    #[test]
    fn inline_comments_are_part_of_the_value() {
        let text = "[s]\na = b # c\nd = e ; f\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("b # c"));
        assert_eq!(get(text, "s", "d").as_deref(), Some("e ; f"));
    }

    // ---- line endings ----

    #[test]
    fn crlf_and_cr_line_endings_are_accepted() {
        let text = "[s]\r\na = 1\r\nb = 2\rc = 3";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2"));
        assert_eq!(get(text, "s", "c").as_deref(), Some("3"));
    }

    #[test]
    fn byte_order_mark_is_an_error_like_in_python() {
        let e = fail("\u{feff}[core]\na = 1\n", "core", "a");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("byte order mark"), "{e}");
    }

    // ---- continuation lines ----

    #[test]
    fn indented_lines_continue_the_value() {
        let text = "[s]\na = first\n  second\n\tthird\nb = 2\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("first\nsecond\nthird"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2"));
    }

    #[test]
    fn continuation_must_be_more_indented_than_the_key_line() {
        let text = "[s]\n  a = 1\n  b = 2\n    c\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2\nc"));
    }

    #[test]
    fn empty_value_then_continuation_starts_with_newline() {
        let text = "[s]\na =\n  x\n  y\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("\nx\ny"));
    }

    #[test]
    fn empty_line_inside_a_value_is_kept_when_continued() {
        let text = "[s]\na = 1\n\n  2\nb = 3\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1\n\n2"));
    }

    #[test]
    fn trailing_empty_lines_are_not_part_of_the_value() {
        let text = "[s]\na = 1\n  2\n\n\nb = 3\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1\n2"));
    }

    #[test]
    fn comment_lines_inside_a_value_are_skipped() {
        let text = "[s]\na = 1\n  # not part\n  2\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1\n2"));
    }

    #[test]
    fn continuation_line_looking_like_a_key_is_still_continuation() {
        let text = "[s]\na = 1\n  b = 2\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1\nb = 2"));
        assert_eq!(get(text, "s", "b"), None);
    }

    #[test]
    fn indented_line_after_section_header_is_a_key() {
        let text = "[s]\n   a = 1\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1"));
    }

    #[test]
    fn indented_section_header_inside_value_is_continuation() {
        let text = "[s]\na = 1\n  [t]\nb = 2\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1\n[t]"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2"));
    }

    // ---- DEFAULT ----

    #[test]
    fn default_section_is_a_fallback_for_every_section() {
        let text = "[DEFAULT]\nhost = h\nport = 1\n[db]\nport = 2\n";
        assert_eq!(get(text, "db", "host").as_deref(), Some("h"));
        assert_eq!(get(text, "db", "port").as_deref(), Some("2"));
    }

    #[test]
    fn default_values_do_not_make_a_missing_section_exist() {
        let text = "[DEFAULT]\nhost = h\n[db]\n";
        assert_eq!(get(text, "other", "host"), None);
    }

    #[test]
    fn default_section_can_be_read_directly() {
        let text = "[DEFAULT]\nhost = h\n[db]\nhost = d\n";
        assert_eq!(get(text, "DEFAULT", "host").as_deref(), Some("h"));
    }

    #[test]
    fn default_section_may_come_after_the_section() {
        let text = "[db]\na = 1\n[DEFAULT]\nb = 2\n";
        assert_eq!(get(text, "db", "b").as_deref(), Some("2"));
    }

    #[test]
    fn lowercase_default_is_an_ordinary_section() {
        let text = "[default]\nhost = h\n[db]\n";
        assert_eq!(get(text, "db", "host"), None);
    }

    #[test]
    fn default_section_may_repeat() {
        let text = "[DEFAULT]\na = 1\n[DEFAULT]\nb = 2\n[s]\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1"));
        assert_eq!(get(text, "s", "b").as_deref(), Some("2"));
    }

    // ---- errors ----

    #[test]
    fn key_before_any_section_is_an_error() {
        let e = fail("# c\n\nsql_alchemy_conn = x\n[core]\n", "core", "a");
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("key outside of any [section]"), "{e}");
    }

    #[test]
    fn malformed_section_header_is_an_error() {
        for text in ["[core]\n[abc\n", "[]\n", "[abc\n"] {
            let e = fail(text, "core", "a");
            assert!(
                e.message.contains("malformed section header")
                    || e.message.starts_with("key outside of any [section]"),
                "{text:?}: {e}"
            );
        }
        let e = fail("[core]\n[abc\n", "core", "a");
        assert_eq!(e.line, 2);
        assert!(e.message.starts_with("malformed section header"), "{e}");
    }

    #[test]
    fn bracket_line_with_delimiter_is_a_key_like_in_python() {
        assert_eq!(get("[s]\n[abc = 1\n", "s", "[abc").as_deref(), Some("1"));
    }

    #[test]
    fn line_without_delimiter_is_an_error() {
        let e = fail("[core]\na = 1\njust words\n", "core", "a");
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("expected `key = value`"), "{e}");
        assert!(!e.message.contains("just words"), "{e}");
    }

    #[test]
    fn empty_key_is_an_error() {
        let e = fail("[core]\n= value\n", "core", "a");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("with a key"), "{e}");
    }

    #[test]
    fn errors_elsewhere_in_the_file_still_fail() {
        let e = fail("[core]\na = 1\n[other]\nbroken\n", "core", "a");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn duplicate_section_is_an_error() {
        let e = fail("[core]\na = 1\n[db]\n[core]\nb = 2\n", "db", "a");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("[core] appears twice"), "{e}");
    }

    #[test]
    fn duplicate_key_is_an_error_even_with_different_case() {
        let e = fail("[core]\nA = 1\nb = 2\na = 3\n", "core", "b");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("`a` appears twice"), "{e}");
        assert!(e.message.contains("line 2"), "{e}");
    }

    #[test]
    fn same_key_in_different_sections_is_fine() {
        let text = "[a]\nk = 1\n[b]\nk = 2\n";
        assert_eq!(get(text, "b", "k").as_deref(), Some("2"));
    }

    #[test]
    fn error_display_is_the_message() {
        let e = fail("x = 1\n", "core", "x");
        assert_eq!(e.to_string(), e.message);
    }

    // ---- interpolation ----

    #[test]
    fn percent_reference_uses_the_same_section() {
        let text = "[db]\nhost = h\nconn = postgresql://%(host)s/x\n";
        assert_eq!(get(text, "db", "conn").as_deref(), Some("postgresql://h/x"));
    }

    #[test]
    fn percent_reference_falls_back_to_default() {
        let text = "[DEFAULT]\nhost = dh\n[db]\nconn = %(host)s\n";
        assert_eq!(get(text, "db", "conn").as_deref(), Some("dh"));
    }

    #[test]
    fn section_value_beats_default_in_references() {
        let text = "[DEFAULT]\nhost = dh\n[db]\nhost = sh\nconn = %(host)s\n";
        assert_eq!(get(text, "db", "conn").as_deref(), Some("sh"));
    }

    #[test]
    fn default_value_references_resolve_in_the_asking_section() {
        let text = "[DEFAULT]\nconn = %(host)s\n[a]\nhost = ah\n[b]\nhost = bh\n";
        assert_eq!(get(text, "a", "conn").as_deref(), Some("ah"));
        assert_eq!(get(text, "b", "conn").as_deref(), Some("bh"));
    }

    #[test]
    fn reference_names_are_case_insensitive() {
        let text = "[s]\nhost = h\nx = %(HOST)s\n";
        assert_eq!(get(text, "s", "x").as_deref(), Some("h"));
    }

    #[test]
    fn references_chain() {
        let text = "[s]\na = %(b)s!\nb = %(c)s?\nc = end\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("end?!"));
    }

    #[test]
    fn double_percent_is_a_literal_percent() {
        let text = "[s]\nconn = postgresql://u:p%%40ss@h/db\n";
        assert_eq!(
            get(text, "s", "conn").as_deref(),
            Some("postgresql://u:p%40ss@h/db")
        );
    }

    #[test]
    fn double_percent_in_referenced_value_is_unescaped() {
        let text = "[s]\npw = 100%%\nx = %(pw)s\n";
        assert_eq!(get(text, "s", "x").as_deref(), Some("100%"));
    }

    #[test]
    fn lone_percent_is_an_error_like_in_python() {
        let e = fail("[s]\na = 1\nconn = p%40ss\n", "s", "conn");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("write %% for a literal %"), "{e}");
        assert!(!e.message.contains("40ss"), "{e}");
    }

    #[test]
    fn trailing_percent_is_an_error() {
        assert!(fail("[s]\na = 50%\n", "s", "a").message.contains("%%"));
    }

    #[test]
    fn missing_reference_is_an_error_on_the_key_line() {
        let e = fail("[s]\n\nconn = %(nope)s\n", "s", "conn");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not set"), "{e}");
        assert!(e.message.contains("`conn` in [s]"), "{e}");
    }

    #[test]
    fn reference_into_another_section_is_missing() {
        let e = fail("[a]\nhost = h\n[b]\nx = %(host)s\n", "b", "x");
        assert!(e.message.contains("not set"), "{e}");
    }

    #[test]
    fn malformed_references_are_errors() {
        for value in ["%(x)", "%(x", "%()s", "%(x)d"] {
            let text = format!("[s]\nx = 1\na = {value}\n");
            let e = fail(&text, "s", "a");
            assert!(e.message.contains("malformed"), "{value}: {e}");
        }
    }

    #[test]
    fn reference_loop_hits_the_depth_limit() {
        let text = "[s]\na = %(b)s\nb = %(a)s\n";
        let e = fail(text, "s", "a");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("more than 10 levels"), "{e}");
    }

    #[test]
    fn self_reference_hits_the_depth_limit() {
        let e = fail("[s]\na = x%(a)s\n", "s", "a");
        assert!(e.message.contains("levels"), "{e}");
    }

    #[test]
    fn chain_of_ten_references_is_allowed_and_eleven_is_not() {
        // Python: depth starts at 1 and fails when it exceeds 10; every hop
        // into a value containing `%` is one level.
        let mut ten = String::from("[s]\n");
        for i in 0..9 {
            ten.push_str(&format!("k{i} = %(k{})s\n", i + 1));
        }
        ten.push_str("k9 = end%%\n");
        assert_eq!(get(&ten, "s", "k0").as_deref(), Some("end%"));
        let mut eleven = String::from("[s]\n");
        for i in 0..10 {
            eleven.push_str(&format!("k{i} = %(k{})s\n", i + 1));
        }
        eleven.push_str("k10 = end%%\n");
        assert!(fail(&eleven, "s", "k0").message.contains("levels"));
    }

    #[test]
    fn interpolation_errors_in_other_keys_do_not_matter() {
        let text = "[s]\nbad = %(nope)s 5%\ngood = fine\n";
        assert_eq!(get(text, "s", "good").as_deref(), Some("fine"));
    }

    #[test]
    fn reference_fan_out_is_bounded() {
        let mut text = String::from("[s]\nk0 = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx%%\n");
        for i in 1..10 {
            let refs = format!("%(k{})s", i - 1).repeat(16);
            text.push_str(&format!("k{i} = {refs}\n"));
        }
        let e = fail(&text, "s", "k9");
        assert!(e.message.contains("MiB"), "{e}");
    }

    #[test]
    fn fan_out_to_empty_values_still_terminates_fast() {
        let mut text = String::from("[s]\nk0 =\n");
        for i in 1..10 {
            let refs = format!("%(k{})s", i - 1).repeat(64);
            text.push_str(&format!("k{i} = %%{refs}\n"));
        }
        let start = std::time::Instant::now();
        let _ = cfg_get(&text, "s", "k9");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn multiline_value_is_interpolated() {
        let text = "[s]\nh = x\na = 1 %(h)s\n  2 %%\n";
        assert_eq!(get(text, "s", "a").as_deref(), Some("1 x\n2 %"));
    }

    // ---- realistic ----

    #[test]
    fn realistic_airflow_cfg() {
        let text = "\
[core]
# The folder where your airflow pipelines live
dags_folder = /opt/airflow/dags
executor = CeleryExecutor

[database]
sql_alchemy_conn = postgresql+psycopg2://airflow:%(pw)s@postgres/airflow
pw = s3cr%%t
sql_alchemy_engine_args =
    {\"pool_pre_ping\": true}

[celery]
broker_url = redis://:@redis:6379/0
";
        assert_eq!(
            get(text, "database", "sql_alchemy_conn").as_deref(),
            Some("postgresql+psycopg2://airflow:s3cr%t@postgres/airflow")
        );
        assert_eq!(
            get(text, "celery", "broker_url").as_deref(),
            Some("redis://:@redis:6379/0")
        );
        assert_eq!(
            get(text, "database", "sql_alchemy_engine_args").as_deref(),
            Some("\n{\"pool_pre_ping\": true}")
        );
    }

    // ---- properties ----

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_unicode(text in any::<String>(), key in any::<String>()) {
            let _ = cfg_get(&text, "core", &key);
            let _ = cfg_get(&text, "DEFAULT", "a");
        }

        #[test]
        fn never_panics_on_cfg_like_text(
            text in r"([a-c \t=:#;\[\]%()s\r\n\x1cé]|\[DEFAULT\]|%\(a\)s|%%|\r\n){0,200}",
            section in "(a|b|DEFAULT|[a-c]{1,2})",
            key in "[a-c]{1,2}",
        ) {
            let _ = cfg_get(&text, &section, &key);
        }

        #[test]
        fn never_panics_on_lossy_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = cfg_get(&text, "core", "a");
        }

        #[test]
        fn plain_values_round_trip(
            key in "[a-z_][a-z0-9_]{0,15}",
            val in "[!-$&-~]([ -$&-~]{0,40}[!-$&-~])?",
        ) {
            let text = format!("[core]\n{key} = {val}\n");
            prop_assert_eq!(cfg_get(&text, "core", &key.to_uppercase()).unwrap(), Some(val));
        }

        #[test]
        fn errors_never_contain_a_value(
            secret in "[a-z]{12}",
            junk in r"[%()s\[\] =:\n]{0,20}",
        ) {
            let text = format!("[s]\nx = {secret}{junk}\ny = %(x)s{junk}\n");
            for key in ["x", "y"] {
                if let Err(e) = cfg_get(&text, "s", key) {
                    prop_assert!(!e.message.contains(&secret), "{}", e.message);
                    prop_assert!(!e.message.contains('\n'));
                }
            }
        }
    }
}
