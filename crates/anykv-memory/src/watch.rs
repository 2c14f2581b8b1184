//! Watches: registered in the store's state, delivered through core's
//! bounded event channel; dropping the stream unregisters it.

use std::sync::Arc;

use anykv_core::{Error, Result, WatchOptions, WatchStream};

use crate::state::{Filter, Shared};

/// A watch stream of `owner` on `filter` (full names), relative to
/// `root`: the initial state or the history from a revision, then every
/// change, through core's bounded event channel.
pub(crate) fn open(
    shared: &Arc<Shared>,
    owner: u64,
    root: &str,
    filter: Filter,
    options: WatchOptions,
) -> Result<WatchStream> {
    options.validate()?;
    let registered = shared.state.write().add_watcher(
        owner,
        root,
        filter,
        options.from_revision,
        options.buffer,
    );
    let registered = match registered {
        Ok(r) => r,
        // A start whose history is gone is reported by the stream, the
        // one place a consumer handles compaction (it can also happen
        // mid-stream on backends that compact while watching).
        Err(e @ Error::Compacted { .. }) => {
            return Ok(Box::pin(futures::stream::once(async move { Err(e) })))
        }
        Err(e) => return Err(e),
    };
    Ok(registered.events.into_stream(
        registered.initial,
        WatchGuard {
            shared: shared.clone(),
            id: registered.id,
        },
    ))
}

/// Unregisters a watch when its stream is dropped.
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.state.write().remove_watcher(self.id);
    }
}
