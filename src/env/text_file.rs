//! Reading a configuration text file (an env file, airflow.cfg) that an
//! operator names: only a regular file, at most `MAX_BYTES`, UTF-8. It must
//! never block (a FIFO, a terminal) and never read without bound
//! (`/dev/zero`, a file that keeps growing).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest env file or airflow.cfg read: 1 MiB (Airflow's full default
/// airflow.cfg, every comment included, is about a tenth of it).
pub const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub enum ReadError {
    NotFound,
    Io(std::io::Error),
    /// What it is instead: "a FIFO", "a directory", ...
    NotRegular(&'static str),
    /// More than `MAX_BYTES`; the size seen (at least `MAX_BYTES + 1`).
    TooLarge(u64),
    /// The byte offset of the first invalid UTF-8 sequence.
    NotUtf8(usize),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotFound => f.write_str("it does not exist"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            ReadError::TooLarge(size) => write!(
                f,
                "it is larger than the limit of 1 MiB ({size} bytes or more)"
            ),
            ReadError::NotUtf8(offset) => write!(f, "it is not UTF-8 text (byte {offset})"),
        }
    }
}

/// The whole text of the regular file at `path`, at most `MAX_BYTES`.
pub fn read_text_file(path: &Path) -> Result<String, ReadError> {
    read_text_file_within(path, MAX_BYTES)
}

fn read_text_file_within(path: &Path, limit: u64) -> Result<String, ReadError> {
    // O_NONBLOCK: opening a FIFO with no writer, or a terminal, returns at
    // once instead of waiting; the file type is then checked on the open
    // descriptor (no window between a check and the open). On a regular
    // file the flag changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Io(e),
        })?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO (named pipe)"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(ReadError::NotRegular(what));
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge(metadata.len()));
    }
    // The file may grow after the fstat: read one byte past the limit.
    // Sized from the fstat (one read, no regrowth), plus the byte past it.
    let expected = usize::try_from(metadata.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected.saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("aep-unit-text-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_small_regular_file_is_read() {
        let dir = temp_dir("small");
        let path = dir.join("a.env");
        std::fs::write(&path, "A=1\n").unwrap();
        assert_eq!(read_text_file(&path).unwrap(), "A=1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_not_found() {
        assert!(matches!(
            read_text_file(Path::new("/nonexistent/aep/x.env")),
            Err(ReadError::NotFound)
        ));
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_without_blocking() {
        assert!(matches!(
            read_text_file(Path::new("/dev/zero")),
            Err(ReadError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_text_file(Path::new("/")),
            Err(ReadError::NotRegular("a directory"))
        ));
        let dir = temp_dir("fifo");
        let fifo = dir.join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would hang this test.
        assert!(matches!(
            read_text_file(&fifo),
            Err(ReadError::NotRegular("a FIFO (named pipe)"))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_past_the_limit_is_refused() {
        let dir = temp_dir("large");
        let path = dir.join("big.env");
        std::fs::write(&path, "A=1\n".repeat(10)).unwrap();
        assert!(matches!(
            read_text_file_within(&path, 39),
            Err(ReadError::TooLarge(40))
        ));
        assert!(read_text_file_within(&path, 40).is_ok());
        let message = ReadError::TooLarge(MAX_BYTES + 1).to_string();
        assert!(message.contains("1 MiB"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_utf8_gives_the_offset() {
        let dir = temp_dir("utf8");
        let path = dir.join("bad.env");
        std::fs::write(&path, b"A=\xff\n").unwrap();
        assert!(matches!(read_text_file(&path), Err(ReadError::NotUtf8(2))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
