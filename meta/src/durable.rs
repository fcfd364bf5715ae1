//! Small files replaced whole and durably: written to a temporary name, fsynced,
//! renamed over the old one, and the directory fsynced, so a crash leaves either the
//! old content or the new, never a mix, and the new one survives once we return.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// Replaces `path` with `value` as JSON, durably, before returning.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("cannot encode: {e}"),
    })?;
    replace(path, &bytes)
}

/// Replaces `path` with `bytes`, durably, before returning (the broker keeps its
/// incarnation number this way too).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(StoreError::io(&tmp))?;
    file.write_all(bytes).map_err(StoreError::io(&tmp))?;
    file.sync_all().map_err(StoreError::io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(StoreError::io(path))?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so a rename or a new file in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

/// Reads `path` as JSON; `None` if there is no such file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_reads_back_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote.json");
        assert_eq!(read_json::<u32>(&path).unwrap(), None);
        write_json(&path, &7u32).unwrap();
        write_json(&path, &8u32).unwrap();
        assert_eq!(read_json::<u32>(&path).unwrap(), Some(8));
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_file_that_is_not_json_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote.json");
        fs::write(&path, b"{not json").unwrap();
        let err = read_json::<u32>(&path).unwrap_err();
        assert!(err.to_string().contains("vote.json"), "{err}");
    }
}
