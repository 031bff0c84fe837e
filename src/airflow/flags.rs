//! The words of a command this entrypoint answers natively (`airflow jobs
//! check`, `airflow db check-migrations`, `celery inspect ping`), split as
//! click reads them: `--flag=value` and `--flag value` alike. It only
//! splits: what a flag means is each command's parser's, and it never
//! looks at anything but the arguments it is given.

use std::ffi::OsString;

/// The arguments as words, each `--flag=value` split into two.
pub struct FlagWords(std::vec::IntoIter<String>);

impl FlagWords {
    /// Err when an argument is not UTF-8 (no native answer knows it).
    pub fn new(args: &[OsString]) -> Result<FlagWords, String> {
        let mut words = Vec::with_capacity(args.len());
        for arg in args {
            let arg = arg.to_str().ok_or("an argument that is not UTF-8")?;
            match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    words.push(flag.to_string());
                    words.push(value.to_string());
                }
                _ => words.push(arg.to_string()),
            }
        }
        Ok(FlagWords(words.into_iter()))
    }

    /// The word after `flag`: its value.
    pub fn value_of(&mut self, flag: &str) -> Result<String, String> {
        self.0
            .next()
            .ok_or_else(|| format!("{flag} without a value"))
    }
}

impl Iterator for FlagWords {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Result<Vec<String>, String> {
        let args: Vec<OsString> = list.iter().map(OsString::from).collect();
        FlagWords::new(&args).map(Iterator::collect)
    }

    #[test]
    fn a_long_flag_with_equals_is_two_words_and_nothing_else_is_split() {
        assert_eq!(
            words(&["--limit=2", "-t=3", "a=b", "--x", "--y=", "--z=a=b"]),
            Ok(
                ["--limit", "2", "-t=3", "a=b", "--x", "--y", "", "--z", "a=b"]
                    .map(String::from)
                    .to_vec()
            )
        );
    }

    #[test]
    fn a_flag_at_the_end_has_no_value() {
        let args = vec![OsString::from("--limit")];
        let mut words = FlagWords::new(&args).unwrap();
        let flag = words.next().unwrap();
        assert_eq!(words.value_of(&flag), Err("--limit without a value".into()));
    }

    #[test]
    fn an_argument_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from_vec(vec![0xff])];
        assert!(FlagWords::new(&args).is_err());
    }
}
