//! Read-model wrappers for tests and benchmarks: a check in front of view writes (a flaky
//! table, a value the table refuses, a race at a chosen moment), and a round trip's latency
//! on every call.

/// The read-model calls a test wrapper passes straight to `self.inner`: stream positions and
/// parking.
macro_rules! forward_parking_and_positions {
    () => {
        async fn attach_positions(
            &self,
            key: &timeline_core::StreamKey,
            positions: &[timeline_core::ports::PositionOf],
        ) -> Result<(), timeline_core::ports::ReadModelError> {
            self.inner.attach_positions(key, positions).await
        }

        async fn park(
            &self,
            parked: &timeline_core::park::Parked,
        ) -> Result<(), timeline_core::ports::ReadModelError> {
            self.inner.park(parked).await
        }

        async fn parked(
            &self,
        ) -> Result<Vec<timeline_core::park::Parked>, timeline_core::ports::ReadModelError> {
            self.inner.parked().await
        }

        async fn parked_entity(
            &self,
            entity: &str,
        ) -> Result<Option<timeline_core::park::Parked>, timeline_core::ports::ReadModelError> {
            self.inner.parked_entity(entity).await
        }

        async fn unpark(
            &self,
            entity: &str,
            seen: u64,
        ) -> Result<bool, timeline_core::ports::ReadModelError> {
            self.inner.unpark(entity, seen).await
        }
    };
}

/// Read models whose view writes first pass `check`: an error it answers is the write's
/// answer, and nothing is written (a flaky table, a value the table refuses, a slow one, a
/// race at a chosen moment). Everything else goes straight through.
#[derive(Clone)]
pub struct WriteCheck<R, F> {
    pub inner: R,
    pub check: F,
}

impl<R, F, Fut> timeline_core::ports::ReadModelStore for WriteCheck<R, F>
where
    R: timeline_core::ports::ReadModelStore,
    F: Fn(&timeline_core::ports::ViewWrite) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Option<timeline_core::ports::ReadModelError>> + Send,
{
    async fn load_views(
        &self,
        keys: &[timeline_core::StreamKey],
    ) -> Result<
        std::collections::HashMap<timeline_core::StreamKey, timeline_core::ports::StoredView>,
        timeline_core::ports::ReadModelError,
    > {
        self.inner.load_views(keys).await
    }

    async fn write(
        &self,
        write: timeline_core::ports::ViewWrite,
    ) -> Result<(), timeline_core::ports::ReadModelError> {
        if let Some(e) = (self.check)(&write).await {
            return Err(e);
        }
        self.inner.write(write).await
    }

    forward_parking_and_positions!();
}

/// Read models where every call takes `per_call` more, as a round trip to DynamoDB does: a
/// load is one call (a batch get of up to 100 keys, its chunks in parallel); a view write two
/// (the history entries in one batch write, then the conditional put). For
/// benchmarks of how the processor spends its time waiting (parking and positions are not
/// on its path, and are not slowed).
#[derive(Clone)]
pub struct Latency<R> {
    pub inner: R,
    pub per_call: std::time::Duration,
}

impl<R: timeline_core::ports::ReadModelStore> timeline_core::ports::ReadModelStore for Latency<R> {
    async fn load_views(
        &self,
        keys: &[timeline_core::StreamKey],
    ) -> Result<
        std::collections::HashMap<timeline_core::StreamKey, timeline_core::ports::StoredView>,
        timeline_core::ports::ReadModelError,
    > {
        tokio::time::sleep(self.per_call).await;
        self.inner.load_views(keys).await
    }

    async fn write(
        &self,
        write: timeline_core::ports::ViewWrite,
    ) -> Result<(), timeline_core::ports::ReadModelError> {
        tokio::time::sleep(self.per_call * 2).await;
        self.inner.write(write).await
    }

    forward_parking_and_positions!();
}
