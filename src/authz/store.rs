//! The live policies: one [`PolicySnapshot`] behind an `ArcSwap`, replaced whole by a reload
//! that validated fully, never by a partial one. A failed reload keeps the last good snapshot
//! and is remembered for `GET /policies` and `/metrics`.
//!
//! A [`ReloadObserver`] (set once by the integrator) hears of every attempt, whatever triggered
//! it (API, SIGHUP, the file watcher): it is told of a new snapshot *before* the swap, so
//! whatever it keeps about that version (the audit archive) exists before any decision names it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;

use super::loader::{self, LoadFailure, PolicySnapshot};
use super::request::FeatureSet;
use crate::clock::SharedClock;
use crate::ids::{AccountId, OrgId, RequestId, UserName};

/// How long the watcher waits for a burst of file events to settle before reloading.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

/// Holds the active snapshot and the reload bookkeeping.
pub struct PolicyStore {
    dir: PathBuf,
    required_actions: Vec<String>,
    clock: SharedClock,
    current: ArcSwap<PolicySnapshot>,
    last_failure: Mutex<Option<FailedReload>>,
    /// Serialises reloads so two triggers never race to swap.
    reloading: Mutex<()>,
    counters: ReloadCounters,
    observer: OnceLock<Arc<dyn ReloadObserver>>,
}

/// Who asked for a reload through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRequester {
    pub account: AccountId,
    pub user: UserName,
    pub request_id: RequestId,
}

/// One finished reload attempt, as a [`ReloadObserver`] hears of it.
#[derive(Debug)]
pub struct ReloadAttempt<'a> {
    pub at: DateTime<Utc>,
    pub trigger: ReloadTrigger,
    pub requested_by: Option<&'a ReloadRequester>,
    /// The version active after the attempt (the new one, or the one kept).
    pub active_version: &'a str,
    /// `None` when the tree loaded (changed or not).
    pub failure: Option<&'a LoadFailure>,
}

/// Hears of reloads; runs on the reloading thread while reloads are serialised, so it must be
/// quick and must not reload.
pub trait ReloadObserver: Send + Sync {
    /// A validated snapshot with a new version is about to become active.
    fn activating(&self, snapshot: &PolicySnapshot);
    /// An attempt finished (after the swap, if any).
    fn attempted(&self, attempt: &ReloadAttempt<'_>);
}

/// Plain counters the integrator exports to Prometheus.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    /// Every reload attempt (not the initial load).
    pub attempts: AtomicU64,
    /// Attempts whose tree was rejected.
    pub failures: AtomicU64,
}

/// What asked for a reload; recorded with a failure and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadTrigger {
    FileChange,
    Signal,
    Api,
    Cli,
}

/// The last rejected reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedReload {
    pub at: DateTime<Utc>,
    pub trigger: ReloadTrigger,
    pub failure: LoadFailure,
}

/// One organization's line in `GET /policies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgStatus {
    pub org_id: OrgId,
    pub status: OrgStatusKind,
    /// Why it is inactive, or what binds when active.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrgStatusKind {
    Active,
    Inactive,
}

/// Keeps the file watcher alive; dropping it stops watching (the worker thread then exits).
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
}

// === impl PolicyStore ===

impl PolicyStore {
    /// Loads the tree at `dir`; a bad tree here is fatal for the caller (P6).
    pub fn open(
        dir: impl Into<PathBuf>,
        required_actions: &[&str],
        clock: SharedClock,
    ) -> Result<Self, LoadFailure> {
        let dir = dir.into();
        let snapshot = loader::load_tree_at(&dir, required_actions, clock.now())?;
        Ok(Self {
            dir,
            required_actions: required_actions.iter().map(|a| (*a).to_owned()).collect(),
            clock,
            current: ArcSwap::from_pointee(snapshot),
            last_failure: Mutex::new(None),
            reloading: Mutex::new(()),
            counters: ReloadCounters::default(),
            observer: OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot for one request: read it once, at the start, and use it throughout.
    pub fn load(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Re-reads the tree. On success the new snapshot is swapped in atomically (or the current
    /// one kept if the content is unchanged) and the last failure cleared; on failure the active
    /// snapshot stays and the failure is remembered.
    pub fn reload(&self, trigger: ReloadTrigger) -> Result<Arc<PolicySnapshot>, LoadFailure> {
        self.reload_by(trigger, None)
    }

    /// Sets the observer of every later reload; only the first call takes effect.
    pub fn set_observer(&self, observer: Arc<dyn ReloadObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// [`PolicyStore::reload`], naming who asked (an API reload).
    pub fn reload_by(
        &self,
        trigger: ReloadTrigger,
        requested_by: Option<ReloadRequester>,
    ) -> Result<Arc<PolicySnapshot>, LoadFailure> {
        let _guard = self.reloading.lock();
        let result = self.reload_locked(trigger);
        if let Some(observer) = self.observer.get() {
            let active = self.current.load();
            observer.attempted(&ReloadAttempt {
                at: self.clock.now(),
                trigger,
                requested_by: requested_by.as_ref(),
                active_version: active.version(),
                failure: result.as_ref().err(),
            });
        }
        result
    }

    fn reload_locked(&self, trigger: ReloadTrigger) -> Result<Arc<PolicySnapshot>, LoadFailure> {
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let required: Vec<&str> = self.required_actions.iter().map(String::as_str).collect();
        match loader::load_tree_at(&self.dir, &required, self.clock.now()) {
            Ok(snapshot) => {
                *self.last_failure.lock() = None;
                let current = self.current.load_full();
                if current.version() == snapshot.version() {
                    return Ok(current);
                }
                if let Some(observer) = self.observer.get() {
                    observer.activating(&snapshot);
                }
                let snapshot = Arc::new(snapshot);
                self.current.store(Arc::clone(&snapshot));
                tracing::info!(version = snapshot.version(), ?trigger, "policies reloaded");
                Ok(snapshot)
            }
            Err(failure) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?trigger, error = %failure, "policy reload rejected; keeping the active policies");
                *self.last_failure.lock() = Some(FailedReload {
                    at: self.clock.now(),
                    trigger,
                    failure: failure.clone(),
                });
                Err(failure)
            }
        }
    }

    /// The last rejected reload, if the latest attempt failed.
    pub fn last_failure(&self) -> Option<FailedReload> {
        self.last_failure.lock().clone()
    }

    pub fn counters(&self) -> &ReloadCounters {
        &self.counters
    }

    /// `GET /policies`'s organization list: every org folder in the active tree, with whether its
    /// guardrails bind given the org's feature set (`None`: no such organization).
    pub fn org_statuses(
        &self,
        feature_set_of: impl Fn(&OrgId) -> Option<FeatureSet>,
    ) -> Vec<OrgStatus> {
        let snapshot = self.load();
        snapshot
            .org_folders()
            .map(|org| {
                let empty = snapshot.org_policies(org).is_none_or(|p| p.is_empty());
                let (status, reason) = match feature_set_of(org) {
                    None => (OrgStatusKind::Inactive, "no such organization"),
                    Some(FeatureSet::ConsolidatedBilling) => (
                        OrgStatusKind::Inactive,
                        "consolidated billing only: guardrails are validated but do not bind",
                    ),
                    Some(FeatureSet::AllFeatures) if empty => (
                        OrgStatusKind::Inactive,
                        "folder holds no policies: full access",
                    ),
                    Some(FeatureSet::AllFeatures) => (
                        OrgStatusKind::Active,
                        "all features: binds every member account except the management account",
                    ),
                };
                OrgStatus {
                    org_id: org.clone(),
                    status,
                    reason: reason.to_owned(),
                }
            })
            .collect()
    }

    /// Watches the policies directory and reloads ~250 ms after the last change of a burst.
    /// The reload runs on a plain thread (it reads files; it must not block an async worker).
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<PolicyWatcher, notify::Error> {
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => !e.kind.is_access(),
                    Err(_) => true,
                };
                if relevant {
                    // The receiver is gone only when the store's watcher was dropped.
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        let store = Arc::downgrade(self);
        thread::Builder::new()
            .name("tollgate-policy-watch".to_owned())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if !crate::debounce::settled(&rx, WATCH_DEBOUNCE) {
                        return;
                    }
                    let Some(store) = store.upgrade() else { return };
                    // Errors are recorded in the store and logged by `reload`.
                    let _ = store.reload(ReloadTrigger::FileChange);
                }
            })
            .map_err(notify::Error::io)?;
        Ok(PolicyWatcher { _watcher: watcher })
    }
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .field("version", &self.load().version())
            .finish_non_exhaustive()
    }
}

// === impl OrgStatusKind ===

impl OrgStatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

// === impl ReloadCounters ===

impl ReloadCounters {
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}
