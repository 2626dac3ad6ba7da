//! Watches the config file for changes and calls back once per burst of events.
//!
//! The directory is watched, not the file: editors and config managers replace the
//! file (write a temp file, rename it over), which a watch on the old inode misses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

/// Editors save in several steps (truncate, write, rename, chmod); 300 ms gathers one
/// save into one reload and still feels immediate.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Calls `on_change` after the file at `path` is created, written, renamed or removed.
pub fn spawn(
    path: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<ConfigWatch, notify::Error> {
    let file_name = path.file_name().map(|n| n.to_owned());
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let ours = events.iter().any(|e| {
            !e.kind.is_access()
                && e.paths
                    .iter()
                    .any(|p| p.file_name() == file_name.as_deref())
        });
        if ours {
            on_change();
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(ConfigWatch {
        _debouncer: debouncer,
    })
}
