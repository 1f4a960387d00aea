//! The read models' contract on the embedded backend (SQLite), from the one contract suite
//! every store runs (`timeline_testkit::read_model_contract`), and what only a directory
//! does: survive reopening.

mod common;

use common::*;
use std::collections::BTreeSet;
use timeline_core::ports::{LookupKind, ReadModelQueries, ReadModelStore};
use timeline_embedded::Embedded;
use timeline_testkit::read_model_contract::{all_pages, lookup, page, W};

/// A fresh SQLite store in its own directory, removed when dropped.
struct Fresh {
    models: Embedded,
    _dir: TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = Embedded;
    fn deref(&self) -> &Embedded {
        &self.models
    }
}

async fn fresh() -> Option<Fresh> {
    let dir = TempDir::new();
    Some(Fresh {
        models: dir.open(),
        _dir: dir,
    })
}

timeline_testkit::read_model_contract!(fresh);

#[tokio::test]
async fn read_models_survive_reopening_the_directory() {
    let dir = TempDir::new();
    {
        let models = dir.open();
        for i in 0..5 {
            models
                .write(W::new(&format!("r{i}"), 0, 2).build())
                .await
                .unwrap();
        }
    }
    let models = dir.open();
    let (ids, _) = all_pages(&models, &lookup(LookupKind::Rider, "rider-1"), 2).await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 5);
    let history = models
        .history(&ride("r3"), None, None, &page(10, None))
        .await
        .unwrap();
    assert_eq!(history.items.len(), 2);
    assert_eq!(
        models.load_views(&[ride("r4")]).await.unwrap()[&ride("r4")].version,
        2
    );
}
