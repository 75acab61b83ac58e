//! # sessionkit-file
//!
//! A [`Store`] keeping one file per session, safe for several processes on one machine (the
//! seeds' file store with fcntl locking, done right). URL: `file:///var/lib/app/sessions` or
//! `file://relative/dir`.
//!
//! Opening creates the directories if they are missing, as an application wants. In
//! [`OpenMode::Existing`] ([`FileStore::open_with_mode`], or
//! [`sessionkit_core::Registry::open_existing`]) it creates nothing: a root that does not exist
//! or holds no `sessions` directory is an
//! [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) error that says to run
//! `sessionkit setup`.
//!
//! ## On-disk layout
//!
//! ```text
//! <root>/sessions/<2 hex>/<64 hex>     one session: Record::to_blob (MessagePack, versioned)
//! <root>/sessions/<2 hex>/.lock        the shard's lock file (flock)
//! <root>/sessions/<2 hex>/.tmp-<hex>   a write in progress (or left by a crash)
//! <root>/owners/<64 hex>/<64 hex>      owner index: an empty marker per (SHA-256 of owner, session)
//! ```
//!
//! Session files are named by the session key (the SHA-256 of the id) and sharded by its first
//! byte into 256 directories. The shard is the unit of locking: every read-merge-write holds an
//! exclusive `flock` on the shard's `.lock`, so concurrent applies from any number of threads and
//! processes to one session all land (sessions in the same shard briefly wait for each other).
//!
//! ## Never a torn file
//! A write goes to a temp file in the same directory, is fsynced, renamed over the session file,
//! and the directory is fsynced. A reader (which takes no lock) sees the old file or the new one,
//! never a mix, and a crash at any point leaves every session file whole; the cleanup removes temp
//! files a crash left behind.
//!
//! ## Owner index and crashes
//! Markers are written **before** the session file that names the owner, and removed **after**
//! the session file stops naming it. A crash in between leaves an extra marker, never a missing
//! one; readers verify each marker against the session file and remove stale ones under the
//! shard lock, so the index repairs itself.
//!
//! ## Cleanup and purge reports
//! `delete_expired` walks the shards one at a time, re-checking each expired file under the
//! shard lock before it deletes it (a concurrent apply may have extended it). The store
//! **reports purged sessions** (`capabilities().reports_purged`):
//! [`Store::delete_expired_batch_reporting`] deletes up to `limit` expired files the same way
//! and lists each session it deleted (key, owner, deadline, read under the lock from the file
//! it removed); grace pointers are counted but not listed, and files that do not decode are
//! left alone, as `delete_expired` leaves them. Deletion is file by file: if a delete fails
//! after others in the same step succeeded, the step ends there and reports what it deleted
//! (the next step meets the failure again), so a deleted session is never left unreported.
//!
//! ## Costs
//! `load` is one file read; `apply`/`create`/`delete` take the shard lock and do one atomic
//! write. `list`, `delete_expired` and `stats` walk the tree and decode every file: linear in the
//! number of sessions, fine for tens of thousands, slow for millions (use SQLite or a server
//! store there). `by_owner` reads only the owner's markers and sessions.

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sessionkit_core::backend::blocking;
use sessionkit_core::backend::path_only;
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, OpenMode, Page,
    PageRequest, PurgeReport, PurgedSession, Record, Registry, Result, SessionId, SessionKey,
    Store, StoredSession, Timestamp, async_trait,
};
use sha2::{Digest, Sha256};

/// Temp files older than this are crash leftovers, removed by cleanup.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The file store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: Arc<PathBuf>,
}

/// An exclusive `flock` on one shard, released when dropped (the descriptor closes).
struct ShardLock {
    _file: File,
}

fn io_error(context: impl Into<String>, err: std::io::Error) -> Error {
    match err.kind() {
        IoKind::PermissionDenied | IoKind::NotFound => Error::unavailable(context, err),
        _ => Error::backend(context, err),
    }
}

impl FileStore {
    /// Opens (creating if needed) a store rooted at `root`.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if the directories
    /// cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with_mode(root, OpenMode::Create).await
    }

    /// Opens a store rooted at `root` in `mode`: [`OpenMode::Create`] as [`FileStore::open`];
    /// [`OpenMode::Existing`] creates nothing, and `root` must be a store's directory (one
    /// holding its `sessions` directory).
    ///
    /// # Errors
    /// As [`FileStore::open`]; in [`OpenMode::Existing`],
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) if `root` or its `sessions`
    /// directory does not exist.
    pub async fn open_with_mode(root: impl Into<PathBuf>, mode: OpenMode) -> Result<Self> {
        let store = Self {
            root: Arc::new(root.into()),
        };
        if mode == OpenMode::Create {
            store.setup().await?;
        } else if !store.root.is_dir() {
            return Err(Error::config(format!(
                "the file store directory {} does not exist (create it with `sessionkit setup`)",
                store.root.display()
            )));
        } else if !store.sessions_dir().is_dir() {
            return Err(Error::config(format!(
                "{} is not a file store: it has no sessions directory (create one with `sessionkit setup`)",
                store.root.display()
            )));
        }
        Ok(store)
    }

    /// Opens the store a `file://` URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a URL without a path or with
    /// options; otherwise as [`FileStore::open`].
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open_url_with_mode(url, OpenMode::Create).await
    }

    /// Opens the store a `file://` URL names, in `mode` (see [`FileStore::open_with_mode`]).
    ///
    /// # Errors
    /// As [`FileStore::open_url`] and [`FileStore::open_with_mode`].
    pub async fn open_url_with_mode(url: &str, mode: OpenMode) -> Result<Self> {
        let path = path_only(url, "file:///path/to/dir")?;
        Self::open_with_mode(path, mode).await
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    fn shard_dir(&self, key: &SessionKey) -> PathBuf {
        self.sessions_dir().join(&key.to_hex()[..2])
    }

    fn session_path(&self, key: &SessionKey) -> PathBuf {
        self.shard_dir(key).join(key.to_hex())
    }

    fn owner_dir(&self, owner: &str) -> PathBuf {
        let digest: [u8; 32] = Sha256::digest(owner.as_bytes()).into();
        self.root
            .join("owners")
            .join(SessionKey::from_bytes(digest).to_hex())
    }

    fn lock_shard(&self, shard: &Path) -> Result<ShardLock> {
        fs::create_dir_all(shard)
            .map_err(|e| io_error(format!("creating {}", shard.display()), e))?;
        let path = shard.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
        file.lock()
            .map_err(|e| io_error(format!("locking {}", path.display()), e))?;
        Ok(ShardLock { _file: file })
    }

    /// Locks the shards of `a` and `b` in a fixed order (one lock if they share a shard).
    fn lock_two(&self, a: &SessionKey, b: &SessionKey) -> Result<Vec<ShardLock>> {
        let (first, second) = if a.to_hex()[..2] <= b.to_hex()[..2] {
            (a, b)
        } else {
            (b, a)
        };
        let mut locks = vec![self.lock_shard(&self.shard_dir(first))?];
        if first.to_hex()[..2] != second.to_hex()[..2] {
            locks.push(self.lock_shard(&self.shard_dir(second))?);
        }
        Ok(locks)
    }

    /// Reads a session file; `Ok(None)` if there is none. Expired records are returned too.
    fn read(&self, key: &SessionKey) -> Result<Option<Record>> {
        read_record(&self.session_path(key))
    }

    /// Writes `record` as `key`'s file atomically: temp file, fsync, rename, fsync directory.
    fn write(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let blob = record.to_blob()?;
        let dir = self.shard_dir(key);
        let temp = dir.join(format!(".tmp-{}", random_hex()?));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(&blob)?;
            file.sync_all()?;
            fs::rename(&temp, self.session_path(key))?;
            File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(|e| io_error(format!("writing session file in {}", dir.display()), e))
    }

    fn remove(&self, key: &SessionKey) -> Result<bool> {
        match fs::remove_file(self.session_path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == IoKind::NotFound => Ok(false),
            Err(e) => Err(io_error("deleting a session file", e)),
        }
    }

    fn add_marker(&self, owner: &str, key: &SessionKey) -> Result<()> {
        let dir = self.owner_dir(owner);
        fs::create_dir_all(&dir).map_err(|e| io_error("creating an owner index directory", e))?;
        File::create(dir.join(key.to_hex()))
            .map_err(|e| io_error("writing an owner index marker", e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing the owner index", e))
    }

    fn remove_marker(&self, owner: &str, key: &SessionKey) -> Result<()> {
        match fs::remove_file(self.owner_dir(owner).join(key.to_hex())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing an owner index marker", e)),
        }
    }

    /// Replaces `key`'s record, keeping the owner index right across the change of owner:
    /// the new owner's marker first, the old owner's marker last.
    fn replace(&self, key: &SessionKey, old_owner: Option<&str>, record: &Record) -> Result<()> {
        if let Some(owner) = &record.owner
            && old_owner != Some(owner.as_str())
        {
            self.add_marker(owner, key)?;
        }
        self.write(key, record)?;
        if let Some(old) = old_owner
            && record.owner.as_deref() != Some(old)
        {
            self.remove_marker(old, key)?;
        }
        Ok(())
    }

    /// Deletes `key`'s file and its owner marker (file first, marker after).
    fn delete_locked(&self, key: &SessionKey) -> Result<Option<Record>> {
        let record = match self.read(key) {
            Ok(record) => record,
            Err(err) if err.kind() == sessionkit_core::ErrorKind::Codec => {
                // A corrupt file is still deleted on request; it has no readable owner marker.
                self.remove(key)?;
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let Some(record) = record else {
            return Ok(None);
        };
        self.remove(key)?;
        if let Some(owner) = &record.owner {
            self.remove_marker(owner, key)?;
        }
        Ok(Some(record))
    }

    /// Sorted shard directory names (`00`..`ff`) that exist.
    fn shards(&self) -> Result<Vec<String>> {
        let mut shards = match fs::read_dir(self.sessions_dir()) {
            Ok(entries) => entries
                .filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == IoKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("listing session shards", e)),
        };
        shards.sort();
        Ok(shards)
    }

    /// The session keys in one shard, sorted; temp and lock files are skipped.
    fn keys_in(&self, shard: &str) -> Result<Vec<SessionKey>> {
        let dir = self.sessions_dir().join(shard);
        let mut keys: Vec<SessionKey> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|name| SessionKey::from_hex(&name).ok())
                .collect(),
            Err(e) if e.kind() == IoKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(format!("listing {}", dir.display()), e)),
        };
        keys.sort();
        Ok(keys)
    }

    fn sweep_temp_files(&self, shard: &str) {
        let dir = self.sessions_dir().join(shard);
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.filter_map(std::result::Result::ok) {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp-"));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP);
            if is_temp && old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The keys in `shard` whose records are expired now (unreadable files are skipped with a
    /// warning, as cleanup leaves them alone).
    fn expired_in(&self, shard: &str) -> Result<Vec<SessionKey>> {
        let now = Timestamp::now();
        Ok(self
            .keys_in(shard)?
            .into_iter()
            .filter(|key| match self.read(key) {
                Ok(Some(record)) => record.is_expired(now),
                Ok(None) => false,
                Err(err) => {
                    tracing::warn!(key = %key.short(), error = %err, "skipping an unreadable session file");
                    false
                }
            })
            .collect())
    }

    /// Deletes up to `limit` expired records, shard by shard, each re-checked under its
    /// shard's lock; lists the sessions among them. A failure after something was deleted
    /// ends the step with what it deleted (logged); before, it is the step's error.
    fn delete_expired_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let outcome = (|| {
            for shard in self.shards()? {
                if report.deleted >= limit as u64 {
                    break;
                }
                let expired = self.expired_in(&shard)?;
                if !expired.is_empty() {
                    let _lock = self.lock_shard(&self.sessions_dir().join(&shard))?;
                    for key in expired {
                        if report.deleted >= limit as u64 {
                            break;
                        }
                        // Re-check under the lock: an apply may have extended it meanwhile.
                        if !self
                            .read(&key)?
                            .is_some_and(|r| r.is_expired(Timestamp::now()))
                        {
                            continue;
                        }
                        if let Some(record) = self.delete_locked(&key)? {
                            report.deleted += 1;
                            if record.moved_to.is_none() {
                                report.sessions.push(PurgedSession::new(
                                    key,
                                    record.owner,
                                    record.expires_at,
                                ));
                            }
                        }
                    }
                }
                self.sweep_temp_files(&shard);
            }
            Ok(())
        })();
        match outcome {
            Err(err) if report.deleted == 0 => Err(err),
            Err(err) => {
                tracing::warn!(error = %err, deleted = report.deleted, "session cleanup step ended early");
                Ok(report)
            }
            Ok(()) => Ok(report),
        }
    }

    fn live(record: Option<Record>, now: Timestamp) -> Option<Record> {
        record.filter(|r| !r.is_expired(now) && r.moved_to.is_none())
    }
}

fn read_record(path: &Path) -> Result<Option<Record>> {
    match fs::read(path) {
        Ok(blob) => Record::from_blob(&blob).map(Some),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()), e)),
    }
}

fn random_hex() -> Result<String> {
    Ok(SessionId::generate()?.key().short())
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 1] = ["file"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, mode| async move {
        FileStore::open_url_with_mode(&url, mode).await
    });
}

#[async_trait]
impl Store for FileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
            .with_per_key_reads(false)
            .with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let (store, key, record) = (self.clone(), *key, record.clone());
        blocking("file", move || {
            let _lock = store.lock_shard(&store.shard_dir(&key))?;
            let existing = store.read(&key)?;
            if existing
                .as_ref()
                .is_some_and(|r| !r.is_expired(Timestamp::now()))
            {
                return Err(Error::conflict("a session with this key exists"));
            }
            let previous_owner = existing.and_then(|r| r.owner);
            store.replace(&key, previous_owner.as_deref(), &record)
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let (store, key) = (self.clone(), *key);
        blocking("file", move || {
            Ok(store
                .read(&key)?
                .filter(|r| !r.is_expired(Timestamp::now())))
        })
        .await
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let (store, key, change) = (self.clone(), *key, change.clone());
        blocking("file", move || {
            let _lock = store.lock_shard(&store.shard_dir(&key))?;
            let Some(mut record) = FileStore::live(store.read(&key)?, Timestamp::now()) else {
                return Ok(ApplyOutcome::Gone);
            };
            if !change.holds(&record.data) {
                return Ok(ApplyOutcome::Conflict);
            }
            let old_owner = record.owner.clone();
            change.apply_to(&mut record);
            store.replace(&key, old_owner.as_deref(), &record)?;
            Ok(ApplyOutcome::Applied {
                version: record.version,
            })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let (store, key) = (self.clone(), *key);
        blocking("file", move || {
            let _lock = store.lock_shard(&store.shard_dir(&key))?;
            let existed = store.session_path(&key).exists();
            store.delete_locked(&key)?;
            Ok(existed)
        })
        .await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let (store, old, new) = (self.clone(), *old, *new);
        blocking("file", move || {
            let _locks = store.lock_two(&old, &new)?;
            let now = Timestamp::now();
            let Some(mut record) = FileStore::live(store.read(&old)?, now) else {
                return Ok(CycleOutcome::Gone);
            };
            if store.read(&new)?.is_some_and(|r| !r.is_expired(now)) {
                return Err(Error::conflict("the new session key is taken"));
            }
            record.version += 1;
            store.replace(&new, None, &record)?;
            match grace_until {
                Some(until) => store.write(&old, &Record::moved(new, now, until))?,
                None => {
                    store.remove(&old)?;
                }
            }
            if let Some(owner) = &record.owner {
                store.remove_marker(owner, &old)?;
            }
            Ok(CycleOutcome::Cycled)
        })
        .await
    }

    async fn setup(&self) -> Result<()> {
        let store = self.clone();
        blocking("file", move || {
            for dir in [store.sessions_dir(), store.root.join("owners")] {
                fs::create_dir_all(&dir)
                    .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0;
        for shard in {
            let store = self.clone();
            blocking("file", move || store.shards()).await?
        } {
            let store = self.clone();
            // One shard per blocking task and lock hold: cleanup never stalls writers for long.
            total += blocking("file", move || {
                let expired = store.expired_in(&shard)?;
                let mut deleted = 0u64;
                if !expired.is_empty() {
                    let _lock = store.lock_shard(&store.sessions_dir().join(&shard))?;
                    for key in expired {
                        // Re-check under the lock: a concurrent cycle may have reused nothing,
                        // but a concurrent create may have replaced an expired record.
                        if store
                            .read(&key)?
                            .is_some_and(|r| r.is_expired(Timestamp::now()))
                        {
                            store.delete_locked(&key)?;
                            deleted += 1;
                        }
                    }
                }
                store.sweep_temp_files(&shard);
                Ok(deleted)
            })
            .await?;
        }
        Ok(total)
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let (store, limit) = (self.clone(), limit.max(1));
        blocking("file", move || store.delete_expired_reporting(limit)).await
    }

    async fn count_expired(&self) -> Result<u64> {
        // What `delete_expired` deletes: expired sessions and grace-period pointers, and not
        // the files that do not decode (it leaves those alone too).
        let store = self.clone();
        blocking("file", move || {
            let now = Timestamp::now();
            let mut count = 0u64;
            for shard in store.shards()? {
                for key in store.keys_in(&shard)? {
                    if let Ok(Some(record)) = store.read(&key)
                        && record.is_expired(now)
                    {
                        count += 1;
                    }
                }
            }
            Ok(count)
        })
        .await
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let (store, filter) = (self.clone(), filter.clone());
        blocking("file", move || {
            let now = Timestamp::now();
            let start = page.after.map(|k| k.to_hex()[..2].to_owned());
            let mut found = Vec::new();
            for shard in store.shards()? {
                if start.as_ref().is_some_and(|s| shard < *s) {
                    continue;
                }
                for key in store.keys_in(&shard)? {
                    if page.after.is_some_and(|after| key <= after) {
                        continue;
                    }
                    let entry = match store.read(&key) {
                        Ok(Some(record)) => {
                            if record.moved_to.is_some()
                                || !filter.state.admits(record.expires_at, now)
                                || (filter.owner.is_some() && record.owner != filter.owner)
                            {
                                continue;
                            }
                            Ok(StoredSession { key, record })
                        }
                        Ok(None) => continue,
                        // A file that does not decode is reported to the caller, not skipped.
                        Err(err) if err.kind() == sessionkit_core::ErrorKind::Codec => Err(key),
                        Err(err) => return Err(err),
                    };
                    found.push(entry);
                    if found.len() > page.limit {
                        return Ok(Page::from_sorted_entries(found, page.limit));
                    }
                }
            }
            Ok(Page::from_sorted_entries(found, page.limit))
        })
        .await
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let (store, owner) = (self.clone(), owner.to_owned());
        blocking("file", move || {
            let dir = store.owner_dir(&owner);
            let markers: Vec<SessionKey> = match fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(std::result::Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|name| SessionKey::from_hex(&name).ok())
                    .collect(),
                Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error("reading the owner index", e)),
            };
            let now = Timestamp::now();
            let mut sessions = Vec::new();
            for key in markers {
                let record = store.read(&key).unwrap_or_default();
                match record {
                    Some(record) if record.owner.as_deref() == Some(owner.as_str()) => {
                        if !record.is_expired(now) && record.moved_to.is_none() {
                            sessions.push(StoredSession { key, record });
                        }
                    }
                    _ => {
                        // Stale marker (crash, or a concurrent owner change): repair under the
                        // shard lock, where no writer is between marker and file.
                        let _lock = store.lock_shard(&store.shard_dir(&key))?;
                        let still_stale = store
                            .read(&key)
                            .unwrap_or_default()
                            .is_none_or(|r| r.owner.as_deref() != Some(owner.as_str()));
                        if still_stale {
                            store.remove_marker(&owner, &key)?;
                        }
                    }
                }
            }
            Ok(sessions)
        })
        .await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let now = Timestamp::now();
        let sessions = self.by_owner(owner).await?;
        let (store, owner) = (self.clone(), owner.to_owned());
        blocking("file", move || {
            let mut live = 0;
            for session in sessions {
                let _lock = store.lock_shard(&store.shard_dir(&session.key))?;
                if let Some(record) = store.read(&session.key)?
                    && record.owner.as_deref() == Some(owner.as_str())
                {
                    store.delete_locked(&session.key)?;
                    if !record.is_expired(now) {
                        live += 1;
                    }
                }
            }
            Ok(live)
        })
        .await
    }
}
