//! Parses Docker/Compose `.env` text into ordered KEY/VALUE assignments: comments,
//! `export`, quoting, escapes and `${VAR}` interpolation. It owns the syntax only:
//! it must never read files or the process environment itself, never panic on any
//! input, and never put a value (possibly a secret) into an error message.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Largest value one assignment may produce. Linux refuses a single environment
/// string over 128 KiB at exec time anyway; this only stops runaway expansion.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest amount of text the whole file may copy while expanding (literal text
/// plus every value a `${VAR}` fetched), so `A=$B$B$B…` chains stay linear.
const MAX_WORK_BYTES: usize = 64 << 20;
/// Deepest `${A:-${B:-${C}}}` nesting accepted.
const MAX_NESTING: usize = 32;

const MSG_NO_EQUALS: &str = "expected KEY=VALUE, a blank line or a # comment";
const MSG_BAD_KEY: &str = "expected KEY=VALUE with KEY made of letters, digits and _ \
     (also . and -), not starting with a digit";
const MSG_UNTERMINATED_BRACE: &str =
    "unterminated ${: close it with }, or write $$ for a literal $";
const MSG_BAD_SUBSTITUTION: &str = "invalid ${...}: expected ${NAME}, ${NAME:-default}, \
     ${NAME-default}, ${NAME:+alt}, ${NAME:?message}, or $$ for a literal $";

/// A syntax or interpolation problem. `line` is 1-based (for a value spanning
/// several lines, the line the assignment starts on, except for text after a
/// closing quote, which is reported on the closing quote's line). `message` never
/// contains a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EnvFileError {}

/// Parses `.env` text. Returns every assignment in file order; a key assigned
/// twice appears twice (insert into a map in order and the last one wins).
///
/// `${VAR}` and `$VAR` resolve against keys assigned earlier in this file
/// first, then `lookup`; a variable set nowhere expands to "". Supported:
/// `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:+a}`, `${VAR+a}`,
/// `${VAR:?msg}`, `${VAR?msg}`, `$$`. Variable names are
/// `[A-Za-z_][A-Za-z0-9_]*`, so keys with `.` or `-` cannot be referenced.
/// Unquoted values and double-quoted values are interpolated; single-quoted
/// values are literal. Backslash escapes exist only inside double quotes.
///
/// # Errors
///
/// The first problem found, with its line: a line that is not `KEY=VALUE`, a
/// malformed key, an unterminated quote or `${`, text after a closing quote,
/// a malformed `${...}`, an unset `${VAR:?msg}`, a NUL in a value, a value
/// over 1 MiB, or more than 64 MiB of expansion in the whole file.
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text: Cow<'_, str> = if text.contains("\r\n") {
        Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(text)
    };

    let mut out: Vec<(String, String)> = Vec::new();
    let mut latest: HashMap<String, usize> = HashMap::new();
    let mut work = 0usize;
    let mut rest: &str = &text;
    let mut line_no = 1usize;

    while !rest.is_empty() {
        let start_line = line_no;
        let fail = |message: &str| EnvFileError {
            line: start_line,
            message: message.to_string(),
        };
        let (line, after_line) = split_line(rest);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            rest = after_line;
            line_no += 1;
            continue;
        }

        let statement = strip_export(trimmed);
        let Some((raw_key, raw_value)) = statement.split_once('=') else {
            return Err(fail(MSG_NO_EQUALS));
        };
        let key = raw_key.trim();
        if !is_valid_key(key) {
            return Err(fail(MSG_BAD_KEY));
        }

        let value_text = raw_value.trim_start();
        let vars = Vars {
            earlier: &out,
            latest: &latest,
            lookup,
        };
        let value = match value_text.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                // `value_text` is a suffix of `line`, which is a prefix of `rest`.
                let quote_at = line.len().saturating_sub(value_text.len());
                let after_quote = rest.get(quote_at + 1..).unwrap_or("");
                let close = if quote == '"' {
                    find_closing_double_quote(after_quote)
                } else {
                    after_quote.find('\'')
                };
                let Some(close) = close else {
                    return Err(fail(if quote == '"' {
                        "unterminated double quote: add the closing \" (a quoted value may span lines)"
                    } else {
                        "unterminated single quote: add the closing ' (a quoted value may span lines)"
                    }));
                };
                let (content, closing_and_more) = split_at_safe(after_quote, close);
                let newlines = content.bytes().filter(|&b| b == b'\n').count();
                let (tail, more) = split_line(closing_and_more.get(1..).unwrap_or(""));
                let tail = tail.trim_start();
                if !(tail.is_empty() || tail.starts_with('#')) {
                    return Err(EnvFileError {
                        line: start_line + newlines,
                        message: format!(
                            "unexpected text after the closing quote of {key}: \
                             put the whole value inside the quotes, or start a comment with #"
                        ),
                    });
                }
                rest = more;
                line_no += 1 + newlines;
                if quote == '"' {
                    Expander::new(content, true, key, &vars, &mut work)
                        .run()
                        .map_err(|m| fail(&m))?
                } else {
                    charge(&mut work, content.len()).map_err(|m| fail(&m))?;
                    content.to_string()
                }
            }
            _ => {
                rest = after_line;
                line_no += 1;
                let unquoted = strip_inline_comment(raw_value).trim();
                Expander::new(unquoted, false, key, &vars, &mut work)
                    .run()
                    .map_err(|m| fail(&m))?
            }
        };

        if value.len() > MAX_VALUE_BYTES {
            return Err(fail(&too_long(key)));
        }
        if value.contains('\0') {
            return Err(fail(&format!(
                "value of {key} contains a NUL character, which an environment variable \
                 cannot hold: remove it"
            )));
        }
        latest.insert(key.to_string(), out.len());
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// `(line, rest after the newline)`; the line excludes the `\n`.
fn split_line(s: &str) -> (&str, &str) {
    s.split_once('\n').unwrap_or((s, ""))
}

/// `str::split_at` that cannot panic: an index off a char boundary (never
/// produced by this module's searches) yields `(s, "")`.
fn split_at_safe(s: &str, at: usize) -> (&str, &str) {
    s.split_at_checked(at).unwrap_or((s, ""))
}

/// Drops a leading `export ` unless `export` is itself the key (`export=1`).
fn strip_export(statement: &str) -> &str {
    match statement.strip_prefix("export") {
        Some(after) if after.starts_with(char::is_whitespace) => {
            let after = after.trim_start();
            if after.starts_with('=') {
                statement
            } else {
                after
            }
        }
        _ => statement,
    }
}

/// `[A-Za-z_][A-Za-z0-9_.-]*`
fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An unquoted value ends where whitespace is followed by `#`.
fn strip_inline_comment(raw: &str) -> &str {
    let mut prev_space = false;
    for (i, c) in raw.char_indices() {
        if c == '#' && prev_space {
            return split_at_safe(raw, i).0;
        }
        prev_space = c.is_whitespace();
    }
    raw
}

/// Byte offset of the first `"` not escaped by a backslash.
fn find_closing_double_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            // Both are ASCII, so they never occur inside a multi-byte char.
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn charge(work: &mut usize, bytes: usize) -> Result<(), String> {
    *work = work.saturating_add(bytes);
    if *work > MAX_WORK_BYTES {
        Err(format!(
            "values in this file expand to more than {} MiB in total: \
             look for ${{...}} references that repeat large values",
            MAX_WORK_BYTES >> 20
        ))
    } else {
        Ok(())
    }
}

fn too_long(key: &str) -> String {
    format!(
        "value of {key} is longer than {} MiB: a process environment cannot hold it, shorten it",
        MAX_VALUE_BYTES >> 20
    )
}

/// Where `${VAR}` looks: this file's earlier assignments, then the caller.
struct Vars<'a> {
    earlier: &'a [(String, String)],
    latest: &'a HashMap<String, usize>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        let earlier: &'a [(String, String)] = self.earlier;
        if let Some((_, value)) = self.latest.get(name).and_then(|&i| earlier.get(i)) {
            return Some(Cow::Borrowed(value.as_str()));
        }
        (self.lookup)(name).map(Cow::Owned)
    }
}

#[derive(Clone, Copy)]
enum Op {
    /// `${V:-w}` / `${V-w}`: w when V is unset (or empty, with `:`).
    Default,
    /// `${V:+w}` / `${V+w}`: w when V is set (and non-empty, with `:`), else "".
    Alternative,
    /// `${V:?m}` / `${V?m}`: fail when V is unset (or empty, with `:`).
    Required,
}

/// One pass over a value's raw text: expands `$…`, and with `escapes` also the
/// backslash escapes of double quotes. Recursive descent, so each character is
/// read once; nested defaults recurse at most `MAX_NESTING` deep.
struct Expander<'s, 'v> {
    rest: &'s str,
    escapes: bool,
    key: &'s str,
    vars: &'v Vars<'v>,
    work: &'v mut usize,
}

impl<'s, 'v> Expander<'s, 'v> {
    fn new(
        src: &'s str,
        escapes: bool,
        key: &'s str,
        vars: &'v Vars<'v>,
        work: &'v mut usize,
    ) -> Self {
        Expander {
            rest: src,
            escapes,
            key,
            vars,
            work,
        }
    }

    fn run(mut self) -> Result<String, String> {
        let mut out = String::new();
        self.text(&mut out, true, false, 0)?;
        Ok(out)
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let mut chars = self.rest.chars();
        let c = chars.next()?;
        self.rest = chars.as_str();
        Some(c)
    }

    fn push(&mut self, out: &mut String, s: &str) -> Result<(), String> {
        charge(self.work, s.len())?;
        if out.len().saturating_add(s.len()) > MAX_VALUE_BYTES {
            return Err(too_long(self.key));
        }
        out.push_str(s);
        Ok(())
    }

    fn push_char(&mut self, out: &mut String, c: char) -> Result<(), String> {
        let mut buf = [0u8; 4];
        self.push(out, c.encode_utf8(&mut buf))
    }

    /// Reads text up to the end (or, `in_braces`, through the closing `}`),
    /// appending its expansion to `out` only when `active`.
    fn text(
        &mut self,
        out: &mut String,
        active: bool,
        in_braces: bool,
        depth: usize,
    ) -> Result<(), String> {
        loop {
            let Some(c) = self.bump() else {
                return if in_braces {
                    Err(MSG_UNTERMINATED_BRACE.to_string())
                } else {
                    Ok(())
                };
            };
            match c {
                '}' if in_braces => return Ok(()),
                '\\' if self.escapes => {
                    let escaped = self.bump();
                    if !active {
                        continue;
                    }
                    match escaped {
                        Some('n') => self.push_char(out, '\n')?,
                        Some('t') => self.push_char(out, '\t')?,
                        Some('r') => self.push_char(out, '\r')?,
                        Some(e @ ('\\' | '"' | '$')) => self.push_char(out, e)?,
                        Some(other) => {
                            self.push_char(out, '\\')?;
                            self.push_char(out, other)?;
                        }
                        None => self.push_char(out, '\\')?,
                    }
                }
                '$' => self.dollar(out, active, depth)?,
                other => {
                    if active {
                        self.push_char(out, other)?;
                    }
                }
            }
        }
    }

    /// After a `$`.
    fn dollar(&mut self, out: &mut String, active: bool, depth: usize) -> Result<(), String> {
        match self.peek() {
            Some('$') => {
                self.bump();
                if active {
                    self.push_char(out, '$')?;
                }
                Ok(())
            }
            Some('{') => {
                self.bump();
                self.braced(out, active, depth + 1)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.take_name();
                if active {
                    self.push_var(out, name)?;
                }
                Ok(())
            }
            // `$` before anything else (or at the end) is a literal `$`.
            _ => {
                if active {
                    self.push_char(out, '$')?;
                }
                Ok(())
            }
        }
    }

    fn take_name(&mut self) -> &'s str {
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let (name, rest) = split_at_safe(self.rest, end);
        self.rest = rest;
        name
    }

    fn lookup(&mut self, name: &str) -> Result<Option<Cow<'v, str>>, String> {
        let value = self.vars.get(name);
        if let Some(v) = &value {
            charge(self.work, v.len())?;
        }
        Ok(value)
    }

    fn push_var(&mut self, out: &mut String, name: &str) -> Result<(), String> {
        if let Some(value) = self.lookup(name)? {
            self.push(out, &value)?;
        }
        Ok(())
    }

    /// After `${`.
    fn braced(&mut self, out: &mut String, active: bool, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(format!(
                "${{...}} nested more than {MAX_NESTING} levels deep in {}: simplify it",
                self.key
            ));
        }
        let name = self.take_name();
        let Some(next) = self.bump() else {
            return Err(MSG_UNTERMINATED_BRACE.to_string());
        };
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(MSG_BAD_SUBSTITUTION.to_string());
        }
        let (op, colon) = match next {
            '}' => {
                if active {
                    self.push_var(out, name)?;
                }
                return Ok(());
            }
            ':' => match self.bump() {
                Some('-') => (Op::Default, true),
                Some('+') => (Op::Alternative, true),
                Some('?') => (Op::Required, true),
                None => return Err(MSG_UNTERMINATED_BRACE.to_string()),
                Some(_) => return Err(MSG_BAD_SUBSTITUTION.to_string()),
            },
            '-' => (Op::Default, false),
            '+' => (Op::Alternative, false),
            '?' => (Op::Required, false),
            _ => return Err(MSG_BAD_SUBSTITUTION.to_string()),
        };

        let value = if active { self.lookup(name)? } else { None };
        let is_set = match &value {
            None => false,
            Some(v) => !(colon && v.is_empty()),
        };
        match op {
            Op::Default => {
                self.text(out, active && !is_set, true, depth)?;
                if let (true, Some(v)) = (active && is_set, &value) {
                    self.push(out, v)?;
                }
            }
            Op::Alternative => self.text(out, active && is_set, true, depth)?,
            Op::Required => {
                let message_start = self.rest;
                self.text(out, false, true, depth)?;
                if active && !is_set {
                    // The message is the file author's text between `?` and `}`.
                    let used = message_start.len().saturating_sub(self.rest.len() + 1);
                    let message = split_at_safe(message_start, used).0;
                    let message: String = message
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    let message = message.trim();
                    let how = if value.is_some() {
                        " (it is empty)"
                    } else {
                        ""
                    };
                    return Err(if message.is_empty() {
                        format!(
                            "required variable {name} is not set{how}: set it in the \
                             environment or earlier in this file"
                        )
                    } else {
                        format!("required variable {name} is not set{how}: {message}")
                    });
                }
                if let (true, Some(v)) = (active, &value) {
                    self.push(out, v)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        parse_env_file(text, &no_env)
    }

    fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Vec<(String, String)>, EnvFileError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        parse_env_file(text, &lookup)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The single value of a one-assignment file.
    fn value(text: &str) -> String {
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.len(), 1, "{parsed:?}");
        parsed[0].1.clone()
    }

    fn err(text: &str) -> EnvFileError {
        parse(text).unwrap_err()
    }

    // ---- basic syntax ----

    #[test]
    fn simple_assignments_come_back_in_file_order() {
        assert_eq!(
            parse("B=2\nA=1\nC=3\n").unwrap(),
            pairs(&[("B", "2"), ("A", "1"), ("C", "3")])
        );
    }

    #[test]
    fn empty_text_gives_no_assignments() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n   \n\t\n").unwrap(), vec![]);
    }

    #[test]
    fn last_line_without_newline_is_parsed() {
        assert_eq!(parse("A=1\nB=2").unwrap(), pairs(&[("A", "1"), ("B", "2")]));
    }

    #[test]
    fn blank_and_whitespace_only_lines_are_skipped() {
        assert_eq!(
            parse("\nA=1\n   \n\t\nB=2\n\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn comment_lines_are_skipped_even_when_indented() {
        assert_eq!(
            parse("# top\nA=1\n   # indented\n\t#tab\nB=2\n#no=assignment\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        assert_eq!(
            parse("A=1\r\n# c\r\nB = two words \r\n\r\n").unwrap(),
            pairs(&[("A", "1"), ("B", "two words")])
        );
    }

    #[test]
    fn crlf_inside_a_quoted_value_becomes_lf() {
        assert_eq!(value("A=\"x\r\ny\"\r\n"), "x\ny");
        assert_eq!(value("A='x\r\ny'\r\n"), "x\ny");
    }

    #[test]
    fn leading_byte_order_mark_is_ignored() {
        assert_eq!(parse("\u{feff}A=1\n").unwrap(), pairs(&[("A", "1")]));
    }

    #[test]
    fn export_prefix_is_dropped() {
        assert_eq!(
            parse("export A=1\nexport\tB=2\n  export   C = 3\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2"), ("C", "3")])
        );
    }

    #[test]
    fn export_alone_as_a_key_is_a_normal_key() {
        assert_eq!(parse("export=1\n").unwrap(), pairs(&[("export", "1")]));
        assert_eq!(parse("export = 1\n").unwrap(), pairs(&[("export", "1")]));
        assert_eq!(parse("exporter=1\n").unwrap(), pairs(&[("exporter", "1")]));
    }

    #[test]
    fn whitespace_around_key_and_equals_is_trimmed() {
        assert_eq!(
            parse("  A  =  1  \n\tB\t=\t2\t\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn empty_value_after_equals_is_empty_string() {
        assert_eq!(
            parse("A=\nB=   \nC=\"\"\nD=''\n").unwrap(),
            pairs(&[("A", ""), ("B", ""), ("C", ""), ("D", "")])
        );
    }

    #[test]
    fn only_the_first_equals_splits_key_from_value() {
        assert_eq!(
            value("URL=postgres://h/db?sslmode=require&a=b\n"),
            "postgres://h/db?sslmode=require&a=b"
        );
    }

    #[test]
    fn keys_may_contain_digits_underscore_dot_and_dash() {
        assert_eq!(
            parse("_A=1\na.b-c_9=2\nAIRFLOW__CORE__X=3\n").unwrap(),
            pairs(&[("_A", "1"), ("a.b-c_9", "2"), ("AIRFLOW__CORE__X", "3")])
        );
    }

    #[test]
    fn duplicate_keys_are_all_kept_in_order() {
        assert_eq!(
            parse("A=1\nB=2\nA=3\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2"), ("A", "3")])
        );
    }

    // ---- errors in keys and lines ----

    #[test]
    fn line_without_equals_is_an_error_with_its_line_number() {
        let e = err("A=1\n\nJUSTAKEY\n");
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("expected KEY=VALUE"), "{e}");
    }

    #[test]
    fn export_without_assignment_is_an_error() {
        assert!(err("export A\n").message.starts_with("expected KEY=VALUE"));
    }

    #[test]
    fn key_starting_with_digit_is_rejected() {
        let e = err("1A=x\n");
        assert_eq!(e.line, 1);
        assert!(
            e.message
                .starts_with("expected KEY=VALUE with KEY made of letters, digits and _"),
            "{e}"
        );
    }

    #[test]
    fn key_with_space_or_symbol_is_rejected() {
        for text in [
            "A B=1",
            "A$=1",
            "=1",
            " = 1",
            "é=1",
            "A:B=1",
            "export A B=1",
        ] {
            let e = err(text);
            assert!(e.message.contains("KEY made of letters"), "{text}: {e}");
        }
    }

    #[test]
    fn invalid_key_text_is_not_echoed_in_the_error() {
        let e = err("s3cr3t pass=x\n");
        assert!(!e.message.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn error_display_is_the_message() {
        let e = err("nope\n");
        assert_eq!(e.to_string(), e.message);
    }

    // ---- unquoted values ----

    #[test]
    fn unquoted_value_is_trimmed() {
        assert_eq!(value("A=   hello world   \n"), "hello world");
    }

    #[test]
    fn unquoted_inline_comment_starts_at_whitespace_hash() {
        assert_eq!(value("A=value # comment\n"), "value");
        assert_eq!(value("A=value\t# comment\n"), "value");
    }

    #[test]
    fn unquoted_hash_without_preceding_whitespace_is_kept() {
        assert_eq!(value("A=abc#def\n"), "abc#def");
        assert_eq!(value("COLOR=#fff\n"), "#fff");
    }

    #[test]
    fn unquoted_value_that_is_only_a_comment_is_empty() {
        assert_eq!(value("A= # nothing here\n"), "");
        assert_eq!(value("A = # nothing here\n"), "");
    }

    #[test]
    fn unquoted_quotes_in_the_middle_are_literal() {
        assert_eq!(value("A=it's \"fine\"\n"), "it's \"fine\"");
    }

    #[test]
    fn unquoted_backslashes_are_literal() {
        assert_eq!(value(r"A=C:\path\n\t"), r"C:\path\n\t");
    }

    #[test]
    fn unquoted_value_with_unicode_is_kept() {
        assert_eq!(value("A=héllo wörld ✓\n"), "héllo wörld ✓");
    }

    // ---- double quotes ----

    #[test]
    fn double_quoted_value_keeps_inner_whitespace_and_hash() {
        assert_eq!(
            value("A=\"  spaced # not a comment  \"\n"),
            "  spaced # not a comment  "
        );
    }

    #[test]
    fn double_quoted_escapes_are_processed() {
        assert_eq!(value(r#"A="a\nb\tc\rd\\e\"f\$g""#), "a\nb\tc\rd\\e\"f$g");
    }

    #[test]
    fn double_quoted_unknown_escape_keeps_the_backslash() {
        assert_eq!(value(r#"A="C:\Users\x""#), r"C:\Users\x");
    }

    #[test]
    fn double_quoted_value_may_span_lines() {
        let parsed = parse("A=\"line1\nline2\n  line3\"\nB=2\n").unwrap();
        assert_eq!(parsed, pairs(&[("A", "line1\nline2\n  line3"), ("B", "2")]));
    }

    #[test]
    fn line_numbers_after_a_multiline_value_stay_right() {
        let e = err("A=\"1\n2\n3\"\nbad line\n");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn unterminated_double_quote_names_the_opening_line() {
        let e = err("A=1\nB=\"open\nmore\nstill more\n");
        assert_eq!(e.line, 2);
        assert!(e.message.starts_with("unterminated double quote"), "{e}");
        assert!(!e.message.contains("open"), "{e}");
    }

    #[test]
    fn escaped_backslash_before_quote_lets_the_quote_close() {
        assert_eq!(value(r#"A="abc\\""#), r"abc\");
        assert_eq!(
            parse("A=\"x\\\\\" # c\nB=1\n").unwrap(),
            pairs(&[("A", "x\\"), ("B", "1")])
        );
    }

    #[test]
    fn escaped_quote_does_not_close_the_value() {
        let e = err("A=\"abc\\\"\n");
        assert!(e.message.starts_with("unterminated double quote"), "{e}");
    }

    #[test]
    fn double_quoted_value_may_be_followed_by_whitespace_and_comment() {
        assert_eq!(value("A=\"x\"   \n"), "x");
        assert_eq!(value("A=\"x\" # comment\n"), "x");
        assert_eq!(value("A=\"x\"# comment\n"), "x");
    }

    #[test]
    fn text_after_closing_double_quote_is_an_error_on_the_closing_line() {
        let e = err("A=1\nB=\"x\ny\" trailing\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("after the closing quote of B"), "{e}");
        assert!(!e.message.contains("trailing"), "{e}");
    }

    #[test]
    fn double_quoted_value_is_interpolated() {
        assert_eq!(
            parse_with("A=\"${H}:${P:-5432}/$DB\"\n", &[("H", "db"), ("DB", "air")]).unwrap(),
            pairs(&[("A", "db:5432/air")])
        );
    }

    #[test]
    fn double_quoted_escaped_dollar_is_not_interpolated() {
        assert_eq!(
            parse_with(r#"A="\$H \${H}""#, &[("H", "x")]).unwrap(),
            pairs(&[("A", "$H ${H}")])
        );
    }

    // ---- single quotes ----

    #[test]
    fn single_quoted_value_is_literal() {
        assert_eq!(
            parse_with(r#"A='$H ${H} \n \\ # \"'"#, &[("H", "x")]).unwrap(),
            pairs(&[("A", r#"$H ${H} \n \\ # \""#)])
        );
    }

    #[test]
    fn single_quoted_value_may_span_lines() {
        assert_eq!(
            parse("A='a\n b'\nB=2\n").unwrap(),
            pairs(&[("A", "a\n b"), ("B", "2")])
        );
    }

    #[test]
    fn unterminated_single_quote_is_an_error_on_the_opening_line() {
        let e = err("\nA='abc\n");
        assert_eq!(e.line, 2);
        assert!(e.message.starts_with("unterminated single quote"), "{e}");
    }

    #[test]
    fn text_after_closing_single_quote_is_an_error() {
        let e = err("A='x'y\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("after the closing quote"), "{e}");
    }

    #[test]
    fn single_quoted_value_may_be_followed_by_comment() {
        assert_eq!(value("A='x' # c\n"), "x");
    }

    // ---- interpolation ----

    #[test]
    fn braced_and_bare_variables_are_interpolated_from_lookup() {
        assert_eq!(
            parse_with("A=${X}-$X-${X}y-$Xy\n", &[("X", "1"), ("Xy", "2")]).unwrap(),
            pairs(&[("A", "1-1-1y-2")])
        );
    }

    #[test]
    fn unset_variable_without_default_is_empty() {
        assert_eq!(value("A=[${NOPE}][$NOPE]\n"), "[][]");
    }

    #[test]
    fn earlier_assignment_in_the_file_beats_lookup() {
        assert_eq!(
            parse_with("X=file\nA=${X}\n", &[("X", "env")]).unwrap(),
            pairs(&[("X", "file"), ("A", "file")])
        );
    }

    #[test]
    fn later_assignment_is_not_visible_to_earlier_lines() {
        assert_eq!(
            parse_with("A=${X}\nX=file\n", &[("X", "env")]).unwrap(),
            pairs(&[("A", "env"), ("X", "file")])
        );
    }

    #[test]
    fn reassigned_key_refers_to_its_previous_value() {
        assert_eq!(
            parse("P=/a\nP=$P:/b\n").unwrap(),
            pairs(&[("P", "/a"), ("P", "/a:/b")])
        );
    }

    #[test]
    fn colon_dash_default_applies_when_unset_or_empty() {
        assert_eq!(
            parse_with(
                "A=${U:-d}\nB=${E:-d}\nC=${S:-d}\n",
                &[("E", ""), ("S", "s")]
            )
            .unwrap(),
            pairs(&[("A", "d"), ("B", "d"), ("C", "s")])
        );
    }

    #[test]
    fn dash_default_applies_only_when_unset() {
        assert_eq!(
            parse_with("A=${U-d}\nB=${E-d}\nC=${S-d}\n", &[("E", ""), ("S", "s")]).unwrap(),
            pairs(&[("A", "d"), ("B", ""), ("C", "s")])
        );
    }

    #[test]
    fn set_but_empty_in_file_counts_as_set_for_dash_default() {
        assert_eq!(
            parse_with("E=\nA=${E-d}\nB=${E:-d}\n", &[("E", "env")]).unwrap(),
            pairs(&[("E", ""), ("A", ""), ("B", "d")])
        );
    }

    #[test]
    fn plus_alternative_applies_only_when_set() {
        assert_eq!(
            parse_with(
                "A=${U:+x}\nB=${E:+x}\nC=${S:+x}\nD=${E+x}\n",
                &[("E", ""), ("S", "s")]
            )
            .unwrap(),
            pairs(&[("A", ""), ("B", ""), ("C", "x"), ("D", "x")])
        );
    }

    #[test]
    fn default_may_contain_interpolation() {
        assert_eq!(
            parse_with("A=${U:-${H}:$P}\n", &[("H", "h"), ("P", "1")]).unwrap(),
            pairs(&[("A", "h:1")])
        );
    }

    #[test]
    fn nested_defaults_resolve() {
        assert_eq!(value("A=${X:-${Y:-${Z:-deep}}}\n"), "deep");
    }

    #[test]
    fn default_may_contain_spaces_and_colons() {
        assert_eq!(
            value("A=${X:-postgresql://u@h:5432/db}\n"),
            "postgresql://u@h:5432/db"
        );
    }

    #[test]
    fn unused_default_is_not_evaluated() {
        // The `?` inside would fail if it were evaluated.
        assert_eq!(
            parse_with("A=${S:-${U:?boom}}\n", &[("S", "s")]).unwrap(),
            pairs(&[("A", "s")])
        );
    }

    #[test]
    fn unused_default_is_not_looked_up() {
        let calls = std::cell::Cell::new(0);
        let lookup = |name: &str| {
            calls.set(calls.get() + 1);
            (name == "S").then(|| "s".to_string())
        };
        let parsed = parse_env_file("A=${S:-$OTHER}\n", &lookup).unwrap();
        assert_eq!(parsed, pairs(&[("A", "s")]));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn required_variable_unset_is_an_error_with_the_authors_message() {
        let e = err("A=1\nB=${NEED:?set NEED to the DB password}\n");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.message,
            "required variable NEED is not set: set NEED to the DB password"
        );
    }

    #[test]
    fn required_variable_without_message_says_how_to_fix() {
        let e = err("B=${NEED?}\n");
        assert!(
            e.message.starts_with("required variable NEED is not set"),
            "{e}"
        );
        assert!(e.message.contains("set it"), "{e}");
    }

    #[test]
    fn required_colon_form_rejects_empty_but_plain_form_accepts_it() {
        let e = parse_with("A=${E:?needed}\n", &[("E", "")]).unwrap_err();
        assert!(
            e.message.starts_with("required variable E is not set"),
            "{e}"
        );
        assert_eq!(
            parse_with("A=${E?needed}\n", &[("E", "")]).unwrap(),
            pairs(&[("A", "")])
        );
    }

    #[test]
    fn required_variable_set_gives_its_value() {
        assert_eq!(
            parse_with("A=${S:?msg}\n", &[("S", "v")]).unwrap(),
            pairs(&[("A", "v")])
        );
    }

    #[test]
    fn required_message_is_kept_on_one_line() {
        let e = err("A=\"${X:?two\nlines}\"\n");
        assert!(!e.message.contains('\n'), "{e:?}");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(
            parse_with("A=$$X $${X} a$$\n", &[("X", "no")]).unwrap(),
            pairs(&[("A", "$X ${X} a$")])
        );
    }

    #[test]
    fn dollar_before_non_name_is_literal() {
        assert_eq!(value("A=$ $1 $- cost$\n"), "$ $1 $- cost$");
    }

    #[test]
    fn unterminated_brace_is_an_error() {
        for text in [
            "A=${X\n",
            "A=${\n",
            "A=${X:-abc\n",
            "A=\"${X:-${Y}\"\n",
            "A=${X:\n",
        ] {
            let e = err(text);
            assert_eq!(e.line, 1);
            assert!(e.message.starts_with("unterminated ${"), "{text}: {e}");
        }
    }

    #[test]
    fn malformed_brace_is_an_error() {
        for text in [
            "A=${}\n",
            "A=${1X}\n",
            "A=${ X}\n",
            "A=${X Y}\n",
            "A=${X:=y}\n",
            "A=${X.Y}\n",
        ] {
            let e = err(text);
            assert!(e.message.starts_with("invalid ${...}"), "{text}: {e}");
        }
    }

    #[test]
    fn inline_comment_is_stripped_before_interpolation() {
        assert_eq!(
            parse_with("A=${X} # uses ${Y:?never}\n", &[("X", "x")]).unwrap(),
            pairs(&[("A", "x")])
        );
    }

    #[test]
    fn interpolated_values_are_not_interpolated_again() {
        assert_eq!(
            parse_with("A=${X}\n", &[("X", "$Y ${Z:?no}")]).unwrap(),
            pairs(&[("A", "$Y ${Z:?no}")])
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut text = String::from("A=");
        for _ in 0..10_000 {
            text.push_str("${X:-");
        }
        text.push('x');
        for _ in 0..10_000 {
            text.push('}');
        }
        let e = err(&text);
        assert!(e.message.contains("nested"), "{e}");
    }

    #[test]
    fn moderate_nesting_is_fine() {
        let mut text = String::from("A=");
        for _ in 0..MAX_NESTING {
            text.push_str("${X:-");
        }
        text.push('x');
        for _ in 0..MAX_NESTING {
            text.push('}');
        }
        assert_eq!(value(&text), "x");
    }

    #[test]
    fn interpolation_error_does_not_leak_values() {
        let e = parse_with("A=${S}${\n", &[("S", "hunter2")]).unwrap_err();
        assert!(!e.message.contains("hunter2"), "{e}");
    }

    // ---- limits ----

    #[test]
    fn nul_in_value_is_rejected() {
        let e = err("A=x\0y\n");
        assert!(e.message.contains("NUL"), "{e}");
        assert!(e.message.contains('A'), "{e}");
    }

    #[test]
    fn exponential_expansion_is_stopped() {
        let mut text = String::from("V0=xxxxxxxxxxxxxxxx\n");
        for i in 1..64 {
            text.push_str(&format!("V{i}=$V{p}$V{p}\n", p = i - 1));
        }
        let e = err(&text);
        assert!(e.message.contains("MiB"), "{e}");
    }

    #[test]
    fn repeated_large_lookups_are_bounded() {
        let big = "y".repeat(1 << 19);
        let line = "${B:+}".repeat(200);
        let text = format!("A={line}\n").repeat(10);
        let e = parse_with(&text, &[("B", &big)]).unwrap_err();
        assert!(e.message.contains("in total"), "{e}");
    }

    #[test]
    fn large_literal_value_is_rejected() {
        let text = format!("A={}\n", "z".repeat(MAX_VALUE_BYTES + 1));
        let e = err(&text);
        assert!(e.message.contains("longer than"), "{e}");
        assert!(!e.message.contains("zzz"), "{e}");
    }

    #[test]
    fn big_file_parses_quickly() {
        let mut text = String::new();
        for i in 0..20_000usize {
            text.push_str(&format!(
                "# comment {i}\nK{i}=\"v{i} ${{Q{p}:-d}}\" # c\nexport Q{i}='lit {i}'\n",
                p = i.saturating_sub(1)
            ));
        }
        let start = std::time::Instant::now();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 40_000);
        assert_eq!(parsed[0].1, "v0 d");
        assert_eq!(parsed[2].1, "v1 lit 0");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    // ---- realistic ----

    #[test]
    fn realistic_airflow_env_file() {
        let text = "\
# Airflow settings\r
AIRFLOW_UID=50000\r
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor\r
PG_HOST=postgres\r
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=\"postgresql+psycopg2://${PG_USER:-airflow}:${PG_PASS:?set PG_PASS}@${PG_HOST}/airflow\"\r
AIRFLOW__CORE__FERNET_KEY='abc$def'  # literal\r
";
        let parsed = parse_with(text, &[("PG_PASS", "p@ss")]).unwrap();
        assert_eq!(
            parsed,
            pairs(&[
                ("AIRFLOW_UID", "50000"),
                ("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor"),
                ("PG_HOST", "postgres"),
                (
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                    "postgresql+psycopg2://airflow:p@ss@postgres/airflow"
                ),
                ("AIRFLOW__CORE__FERNET_KEY", "abc$def"),
            ])
        );
    }

    // ---- properties ----

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_unicode(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_env_like_text(
            text in r#"([A-Za-z_ =#"'$\{\}:?+\-\\\r\n\t.é✓\x00]|export |\$\{|\$\$|\r\n){0,200}"#
        ) {
            let lookup = |name: &str| name.contains(['A', '_']).then(|| format!("<{name}>"));
            let _ = parse_env_file(&text, &lookup);
        }

        #[test]
        fn never_panics_on_lossy_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }

        #[test]
        fn single_quoted_round_trip(
            key in "[A-Za-z_][A-Za-z0-9_.-]{0,20}",
            val in "[ -&(-~]{0,60}",
        ) {
            let text = format!("{key}='{val}'\n");
            let parsed = parse(&text).unwrap();
            prop_assert_eq!(parsed, vec![(key, val)]);
        }

        #[test]
        fn errors_never_contain_a_value(
            secret in "[a-z]{12}",
            junk in r#"[ ${}"'#?:\-A-Z\n]{0,30}"#,
        ) {
            let text = format!("A={secret}{junk}\nB=\"{secret}{junk}\n");
            let lookup = |_: &str| Some(secret.clone());
            if let Err(e) = parse_env_file(&text, &lookup) {
                prop_assert!(!e.message.contains(&secret), "{}", e.message);
                prop_assert!(!e.message.contains('\n'));
            }
        }

        #[test]
        fn error_line_is_within_the_file(text in r#"([A-Z=#"' ${}\n]){0,80}"#) {
            if let Err(e) = parse(&text) {
                prop_assert!(e.line >= 1);
                prop_assert!(e.line <= text.split('\n').count());
            }
        }
    }
}
