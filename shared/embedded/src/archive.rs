//! The event archive in a local directory, in Firehose's key layout (see
//! `timeline_core::archive`): the same operations as `timeline_aws::archive::S3Archive`,
//! synchronous. The object with key `k` is the file `<dir>/<k>`.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use timeline_core::ports::{ArchiveError, ArchiveStore};
use timeline_core::CommitRecord;
use timeline_core::Timestamp;
use timeline_engine::archive::{
    decode_object, decode_object_lenient, key_range, DecodedObject, KeyRange,
};

/// Files being written are named so; listings skip them.
const TEMP_PREFIX: &str = ".tmp-";

/// One archive: a directory and the prefix Firehose writes under (`events/` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalArchive {
    pub dir: PathBuf,
    pub prefix: String,
}

fn unavailable(target: &Path, message: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Unavailable {
        target: target.display().to_string(),
        message: message.to_string(),
    }
}

impl LocalArchive {
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        LocalArchive {
            dir: dir.into(),
            prefix: prefix.into(),
        }
    }

    /// The file of an object. Keys are relative paths of plain names separated by `/`
    /// (what S3 allows and Firehose writes); `..`, absolute paths and empty parts are
    /// refused, so a key never leaves the directory.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, ArchiveError> {
        let invalid = || unavailable(&self.dir.join(key), "not a valid object key");
        if key.is_empty() || key.split('/').any(|part| part.is_empty()) {
            return Err(invalid());
        }
        let relative = Path::new(key);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(invalid());
        }
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(TEMP_PREFIX) {
            return Err(invalid());
        }
        Ok(self.dir.join(relative))
    }

    /// Writes one object whole: to a temporary file, synced, then renamed into place, so a
    /// reader (or a crash) never sees half an object.
    pub fn put_object(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<(), ArchiveError> {
        let path = self.path_of(key)?;
        let parent = path.parent().expect("a key has a file name");
        std::fs::create_dir_all(parent).map_err(|e| unavailable(parent, e))?;
        let temp = parent.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes.as_ref())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            // The rename itself (and a new hour folder) is durable only once the folder is.
            std::fs::File::open(parent)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(unavailable(&path, e));
        }
        Ok(())
    }

    /// The keys of the objects that can hold records that arrived between `from` and `to`
    /// (either end open), sorted, with the bounds of `S3Archive::list_keys`: from the hour
    /// folder of `from - 15 min` through the hour of `to + 15 min`. Only folders that can
    /// hold such keys are read. Files in those folders that are not in Firehose's layout are
    /// listed too (decoding reports them). A missing directory is an empty archive.
    pub fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        let Some(KeyRange { start, end }) = key_range(&self.prefix, from, to) else {
            return Ok(Vec::new());
        };
        let bounds = Bounds {
            prefix: &self.prefix,
            start: start.as_deref(),
            end: end.as_deref(),
        };
        let mut keys = Vec::new();
        match std::fs::metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(unavailable(&self.dir, e)),
            Ok(_) => {}
        }
        walk(&self.dir, "", &bounds, &mut keys)?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The raw bytes of one object.
    pub fn read_bytes(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.path_of(key)?;
        std::fs::read(&path).map_err(|e| unavailable(&path, e))
    }

    /// Every record of one object, or why it could not be read.
    pub fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        decode_object(key, &self.read_bytes(key)?)
    }

    /// The records of one object up to any corruption, with the corruption; `Err` only when
    /// the object could not be read.
    pub fn read_object_lenient(&self, key: &str) -> Result<DecodedObject, ArchiveError> {
        Ok(decode_object_lenient(key, &self.read_bytes(key)?))
    }
}

/// What a listing keeps: keys under `prefix`, after `start`, before `end` (S3's
/// `prefix`, `start-after`, and the first key past the range).
struct Bounds<'a> {
    prefix: &'a str,
    start: Option<&'a str>,
    end: Option<&'a str>,
}

impl Bounds<'_> {
    fn keeps(&self, key: &str) -> bool {
        key.starts_with(self.prefix)
            && self.start.is_none_or(|s| key > s)
            && self.end.is_none_or(|e| key < e)
    }

    /// Can a key starting with `folder` (which ends in `/`) be kept?
    fn may_hold(&self, folder: &str) -> bool {
        // The prefix and the folder must agree as far as both go.
        let overlap = folder.starts_with(self.prefix) || self.prefix.starts_with(folder);
        // Every key in the folder is longer than the folder name, so after it.
        let before_end = self.end.is_none_or(|e| folder < e);
        // Every key in the folder is before `start` when the folder sorts before `start`
        // and `start` is not itself inside the folder.
        let after_start = self
            .start
            .is_none_or(|s| s.starts_with(folder) || folder > s);
        overlap && before_end && after_start
    }
}

fn walk(
    dir: &Path,
    relative: &str,
    bounds: &Bounds<'_>,
    keys: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    let entries = std::fs::read_dir(dir).map_err(|e| unavailable(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unavailable(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not a key S3 could hold
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|e| unavailable(&entry.path(), e))?;
        if file_type.is_dir() {
            let folder = format!("{relative}{name}/");
            if bounds.may_hold(&folder) {
                walk(&entry.path(), &folder, bounds, keys)?;
            }
        } else {
            let key = format!("{relative}{name}");
            if bounds.keeps(&key) {
                keys.push(key);
            }
        }
    }
    Ok(())
}

/// The archive for the pump and the log source. File work runs on tokio's blocking pool (a
/// write syncs the file to disk).
impl ArchiveStore for LocalArchive {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        let archive = self.clone();
        blocking(move || LocalArchive::list_keys(&archive, from, to)).await
    }

    async fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        let (archive, key) = (self.clone(), key.to_owned());
        blocking(move || LocalArchive::read_object(&archive, &key)).await
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let (archive, key) = (self.clone(), key.to_owned());
        blocking(move || LocalArchive::put_object(&archive, &key, bytes)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(ArchiveError::Unavailable {
            target: "local archive".into(),
            message: e.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_only_the_folders_that_can_hold_its_range() {
        let bounds = Bounds {
            prefix: "events/",
            start: Some("events/2026/11/28/10/"),
            end: Some("events/2026/11/28/12/"),
        };
        for folder in [
            "events/",
            "events/2026/",
            "events/2026/11/",
            "events/2026/11/28/",
            "events/2026/11/28/10/",
            "events/2026/11/28/11/",
        ] {
            assert!(bounds.may_hold(folder), "{folder}");
        }
        for folder in [
            "other/",
            "events/2025/",
            "events/2027/",
            "events/2026/10/",
            "events/2026/12/",
            "events/2026/11/27/",
            "events/2026/11/28/09/",
            "events/2026/11/28/12/",
            "events/2026/11/28/13/",
        ] {
            assert!(!bounds.may_hold(folder), "{folder}");
        }
        // A prefix that ends inside a name still reaches its folders.
        let partial = Bounds {
            prefix: "ev",
            start: None,
            end: None,
        };
        assert!(partial.may_hold("events/"));
        assert!(!partial.may_hold("other/"));
    }
}
