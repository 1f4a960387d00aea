//! Opening a data directory: created if needed, WAL mode, idempotent schema, clear errors.

mod common;

use common::*;
use timeline_embedded::{Embedded, EmbeddedError, DATABASE_FILE};

#[test]
fn opening_creates_the_directory_and_a_wal_database() {
    let dir = TempDir::new();
    let nested = dir.path().join("a/b/data");
    let store = Embedded::open(&nested).unwrap();
    assert_eq!(store.dir(), nested);
    assert_eq!(store.database_path(), nested.join(DATABASE_FILE));
    assert!(nested.join(DATABASE_FILE).is_file());
    assert_eq!(store.shard_count(), 2);
    let conn = rusqlite::Connection::open(nested.join(DATABASE_FILE)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn opening_again_and_concurrently_is_harmless() {
    let dir = TempDir::new();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = dir.path().to_owned();
            std::thread::spawn(move || Embedded::open(&path).map(|e| e.shard_count()))
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap().unwrap(), 2);
    }
    drop(dir.open());
    drop(dir.open());
}

#[test]
fn a_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = TempDir::new();
    // A regular file where a directory should be: refused even for root.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("data");
    match Embedded::open(&target) {
        Err(e @ EmbeddedError::Unwritable { .. }) => {
            let EmbeddedError::Unwritable { dir: reported, .. } = &e else {
                unreachable!()
            };
            assert_eq!(reported, &target);
            let message = e.to_string();
            assert!(message.contains("not writable"), "{message}");
            assert!(message.contains(&target.display().to_string()), "{message}");
        }
        other => panic!("expected Unwritable, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let data = dir.path().join("ro");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let can_write_anyway = std::fs::write(data.join("probe"), b"x").is_ok();
    let result = Embedded::open(&data);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    if can_write_anyway {
        // Running as root: permission bits do not stop us, and opening works.
        assert!(result.is_ok());
        return;
    }
    assert!(
        matches!(result, Err(EmbeddedError::Unwritable { .. })),
        "{result:?}"
    );
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = TempDir::new();
    drop(dir.open());
    let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        Embedded::open(dir.path()),
        Err(EmbeddedError::NewerSchema { found: 99, .. })
    ));
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![b'x'; 4096]).unwrap();
    let err = Embedded::open(dir.path()).unwrap_err();
    assert!(matches!(err, EmbeddedError::Database { .. }), "{err:?}");
    assert!(err.to_string().contains(DATABASE_FILE), "{err}");
}
