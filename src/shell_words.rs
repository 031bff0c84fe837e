//! Splitting a `_CMD` value into argv the way Airflow does (Python's
//! `shlex.split`, POSIX mode): no shell runs it. Must never panic.

/// Splits `text` into words; `Err` names what is unterminated.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a trailing backslash escapes nothing".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_like_shlex() {
        assert_eq!(
            split("cat /run/secrets/db").unwrap(),
            vec!["cat", "/run/secrets/db"]
        );
        assert_eq!(
            split(r#"sh -c 'echo "$X"' "a b" c\ d"#).unwrap(),
            vec!["sh", "-c", "echo \"$X\"", "a b", "c d"]
        );
        assert_eq!(
            split("a # not-a-comment").unwrap(),
            vec!["a", "#", "not-a-comment"]
        );
        assert_eq!(split(r#""\$x""#).unwrap(), vec!["\\$x"]);
        assert_eq!(split("''").unwrap(), vec![""]);
        assert!(split("'open").is_err());
        assert!(split("\"open").is_err());
        assert!(split("x\\").is_err());
    }
}
