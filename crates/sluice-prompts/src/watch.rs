//! Reloading: the registry currently served, swapped whole when the directory changes and loads
//! cleanly.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::error::LoadError;
use crate::registry::{FileStamp, PromptRegistry, template_files};

type ModelCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Holds the registry being served and replaces it when the prompts directory changes.
///
/// Requests take [`current`](Self::current), an `Arc` they keep for as long as they need it: a reload
/// never changes a registry in use, it swaps in a new one. An edit that does not load (a TOML or
/// template error, an unknown model) leaves the last good registry serving and is logged with its file
/// and line.
///
/// Changes are found by polling the directory (paths, sizes and modification times of its `*.toml`
/// files): a handful of `stat` calls per interval, with no platform-specific watcher to go wrong on
/// network or container filesystems.
pub struct PromptWatcher {
    dir: PathBuf,
    check_model: Option<ModelCheck>,
    current: RwLock<Arc<PromptRegistry>>,
    /// The files as they were at the last load attempt, good or bad, so a broken edit is reported
    /// once, not at every poll.
    seen: Mutex<Vec<FileStamp>>,
}

impl std::fmt::Debug for PromptWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptWatcher")
            .field("dir", &self.dir)
            .field("prompts", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl PromptWatcher {
    /// Loads `dir` (see [`PromptRegistry::load`]); the first load must succeed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, LoadError> {
        Self::build(dir.into(), None)
    }

    /// Like [`new`](Self::new), and every load, the first and each reload, also requires
    /// `is_known_model` to accept each prompt's model.
    pub fn with_model_check(
        dir: impl Into<PathBuf>,
        is_known_model: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Self, LoadError> {
        Self::build(dir.into(), Some(Box::new(is_known_model)))
    }

    fn build(dir: PathBuf, check_model: Option<ModelCheck>) -> Result<Self, LoadError> {
        let seen = stamps(&dir);
        let watcher = Self {
            dir,
            check_model,
            current: RwLock::new(Arc::new(PromptRegistry::empty())),
            seen: Mutex::new(seen),
        };
        let registry = watcher.load()?;
        watcher.swap(registry);
        Ok(watcher)
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry being served.
    pub fn current(&self) -> Arc<PromptRegistry> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Loads the directory now, whether it changed or not, and serves the result if it loads.
    /// On an error the last good registry keeps serving.
    pub fn reload_now(&self) -> Result<(), LoadError> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamps(&self.dir);
        let registry = self.load()?;
        self.swap(registry);
        Ok(())
    }

    /// Reloads if the directory's files changed since the last attempt. Returns whether it tried.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.dir);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.load() {
            Ok(registry) => {
                let count = registry.len();
                self.swap(registry);
                tracing::info!(dir = %self.dir.display(), prompts = count, "prompts reloaded");
            }
            Err(err) => {
                for problem in err.problems() {
                    tracing::error!(
                        dir = %self.dir.display(),
                        "prompt reload failed, the last good prompts keep serving: {problem}"
                    );
                }
            }
        }
        true
    }

    /// Polls the directory every `interval` and reloads on change, until the task is dropped. Spawn it
    /// next to the server; the file system work runs on the blocking pool.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // The first tick is immediate; the directory was just loaded.
        loop {
            ticker.tick().await;
            let this = Arc::clone(&self);
            if let Err(err) = tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                tracing::error!(dir = %self.dir.display(), "prompt reload task failed: {err}");
            }
        }
    }

    fn load(&self) -> Result<PromptRegistry, LoadError> {
        let registry = PromptRegistry::load(&self.dir)?;
        if let Some(check) = &self.check_model {
            registry.check_models(check)?;
        }
        Ok(registry)
    }

    fn swap(&self, registry: PromptRegistry) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(registry);
    }
}

/// The directory's files as they are now; an unreadable directory reads as empty, and the load that
/// follows reports why.
fn stamps(dir: &Path) -> Vec<FileStamp> {
    template_files(dir).unwrap_or_default()
}
