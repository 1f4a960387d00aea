//! A hydrator on the embedded backend (no emulator), for the tests that need no AWS, and a
//! data directory that cleans up after itself.

#![allow(dead_code)]

use hydrator::Hydrator;
use std::path::{Path, PathBuf};
use timeline_embedded::{Embedded, LocalArchive};
use timeline_engine::log_source::LogSource;
use timeline_testkit::unique;

/// A data directory of its own, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        Dir(std::env::temp_dir().join(unique(name)))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub type Target = Box<dyn Fn(Option<&str>) -> Embedded + Send + Sync>;
pub type Local = Hydrator<LogSource<LocalArchive, Embedded, Embedded, Embedded>, Embedded, Target>;

/// The hydrator over `db`; a named rebuild target is a directory of its own.
pub fn hydrator(db: &Embedded) -> Local {
    let source = LogSource::new(
        db.archive("events/"),
        db.clone(),
        "log",
        Some(db.clone()),
        Some(db.clone()),
    );
    let live = db.clone();
    let target: Target = Box::new(move |into| match into {
        None => live.clone(),
        Some(dir) => Embedded::open(Path::new(dir)).unwrap(),
    });
    Hydrator::new(source, db.clone(), target)
}
