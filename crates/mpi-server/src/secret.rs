//! The identifier-hashing secret: generated on first start with owner-only permissions, or read
//! from the configured file. Losing it makes every stored key unreachable, so it is never
//! replaced silently.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mpi_core::keys::{SECRET_LEN, ServerSecret};

use crate::pki::{PkiError, write_file};

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or writing failed.
    #[error("secret file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

fn file_error(path: &Path, message: impl Into<String>) -> SecretError {
    SecretError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Loads the secret from `path`, creating it (0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<ServerSecret, SecretError> {
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)
                .map_err(|e| file_error(path, e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(file_error(
                    path,
                    format!(
                        "must be readable by its owner only (mode {:o})",
                        mode & 0o777
                    ),
                ));
            }
            ServerSecret::from_bytes(&bytes).ok_or_else(|| {
                file_error(
                    path,
                    format!(
                        "must hold exactly {SECRET_LEN} bytes, found {}",
                        bytes.len()
                    ),
                )
            })
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let secret = ServerSecret::generate();
            write_file(path, secret.as_bytes(), true).map_err(|error| match error {
                PkiError::Io { source, .. } => file_error(path, source.to_string()),
                other => file_error(path, other.to_string()),
            })?;
            Ok(secret)
        }
        Err(error) => Err(file_error(path, error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_once_then_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.as_bytes(), second.as_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create(&path).is_err(),
            "a world-readable secret is refused"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(load_or_create(&path).is_err());
    }
}
