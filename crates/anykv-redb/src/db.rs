//! One open file, shared by every store of the process opened on it: the
//! redb database, the lock that orders its writes, and the backend kit's
//! tables for history and watches, leases, locks and TTL deadlines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use anykv_core::backend::{ChangeLog, ExpiryTimer, LeaseTable, LockTable, PauseGate};
use anykv_core::{Error, LeaseId, Result};
use parking_lot::{Condvar, Mutex, RwLock};
use redb::{Database, ReadTransaction, ReadableDatabase};

use crate::batch::{wall_now, Batch, Effects};
use crate::config::{Durability, RedbConfig, BACKEND, MIN_TTL};
use crate::recover::{load, open_database, recover, Loaded};
use crate::tables::{db_err, Counters};
use crate::workers::{blocking, Workers};

/// With [`Durability::Eventual`], how many revisions one durable commit
/// reserves: a crash never makes the store hand out a revision again.
const RESERVE: u64 = 10_000;

/// The open files of the process, by canonical path. An entry whose `Db`
/// is gone is a file still closing: an open of it waits for [`CLOSED`].
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Db>>>> = LazyLock::new(Mutex::default);
static CLOSED: Condvar = Condvar::new();

/// The threads reading a file.
const READERS: usize = 2;

/// How long an open waits for the same file to finish closing.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Stops the flush thread: set, then notified.
type StopSignal = (Mutex<bool>, Condvar);

/// One open file.
pub(crate) struct Db {
    /// The canonical path.
    pub(crate) path: PathBuf,
    /// The settings of the first open (later opens share the file as it is).
    pub(crate) config: RedbConfig,
    /// `None` only while a restart reopens the file, or after that failed.
    database: RwLock<Option<Database>>,
    /// Every write holds it from its transaction's start until the log has
    /// the change: the log sees changes in revision order.
    write: Mutex<WriteState>,
    pub(crate) log: ChangeLog,
    pub(crate) leases: LeaseTable,
    pub(crate) locks: LockTable,
    expiry: ExpiryTimer<(u64, String)>,
    pub(crate) gate: PauseGate,
    flusher: Mutex<Option<Arc<StopSignal>>>,
    registered: AtomicBool,
    /// The thread writes run on, in the order they were asked.
    writer: Option<Workers>,
    /// The threads reads run on.
    readers: Option<Workers>,
}

pub(crate) struct WriteState {
    pub(crate) counters: Counters,
    /// Commits not yet durable ([`Durability::Eventual`]).
    dirty: bool,
    /// The deadline each TTL key is scheduled at, to cancel it when the key
    /// is rewritten or deleted.
    scheduled: HashMap<String, (u64, Instant)>,
}

impl Db {
    /// The open file at `config.path`, shared if this process has it open.
    pub(crate) fn open(config: &RedbConfig) -> Result<Arc<Db>> {
        let path = canonical(&config.path)?;
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut open = OPEN.lock();
        loop {
            match open.get(&path).map(Weak::upgrade) {
                Some(Some(db)) => return Ok(db),
                Some(None) => {
                    if CLOSED.wait_until(&mut open, deadline).timed_out() {
                        return Err(Error::Unavailable {
                            backend: BACKEND,
                            message: format!(
                                "the file {} is still closing after {CLOSE_WAIT:?}",
                                path.display()
                            ),
                            source: None,
                        });
                    }
                }
                None => break,
            }
        }
        let database = open_database(&path)?;
        let counters = recover(&database, config, true)?.0;
        let loaded = load(&database)?;
        let db = Db::new(path.clone(), config.clone(), database, counters);
        db.start(loaded);
        open.insert(path, Arc::downgrade(&db));
        db.registered.store(true, Ordering::SeqCst);
        Ok(db)
    }

    fn new(path: PathBuf, config: RedbConfig, database: Database, counters: Counters) -> Arc<Db> {
        Arc::new_cyclic(|me: &Weak<Db>| {
            let (revoked, due) = (me.clone(), me.clone());
            Db {
                log: ChangeLog::new(BACKEND, config.history, config.history_bytes),
                leases: LeaseTable::new(BACKEND, MIN_TTL, move |lease, keys| {
                    if let Some(db) = revoked.upgrade() {
                        blocking_here(|| db.revoke(lease, &keys));
                    }
                }),
                locks: LockTable::new(BACKEND),
                expiry: ExpiryTimer::new("anykv-redb-ttl", move |(deadline, key), _| {
                    if let Some(db) = due.upgrade() {
                        db.due(deadline, key);
                    }
                }),
                gate: PauseGate::new(),
                path,
                config,
                database: RwLock::new(Some(database)),
                write: Mutex::new(WriteState {
                    counters,
                    dirty: false,
                    scheduled: HashMap::new(),
                }),
                flusher: Mutex::new(None),
                registered: AtomicBool::new(false),
                writer: Workers::start("anykv-redb-write", 1),
                readers: Workers::start("anykv-redb-read", READERS),
            }
        })
    }

    /// Fills the change log from the file's history and schedules its
    /// deadlines; starts the flusher of [`Durability::Eventual`].
    fn start(self: &Arc<Self>, loaded: Loaded) {
        let mut st = self.write.lock();
        for (revision, change) in &loaded.history {
            match &change.value {
                Some(v) => self.log.record_put(&change.key, v, revision.to_owned()),
                None => self.log.record_delete(&change.key, *revision),
            }
        }
        // The log starts where the file's history does. Without history
        // (all of it compacted), a placeholder change at the last revision
        // lets the log know it, then goes with the compaction.
        let floor = if loaded.history.is_empty() {
            st.counters.revision
        } else {
            st.counters.compacted
        };
        if floor > 0 {
            if loaded.history.is_empty() {
                self.log.record_delete("", floor);
            }
            self.log.compact(floor);
        }
        for (deadline, key) in loaded.deadlines {
            self.schedule(&mut st, deadline, key);
        }
        drop(st);
        if self.config.durability == Durability::Eventual {
            let signal = Arc::new((Mutex::new(false), Condvar::new()));
            *self.flusher.lock() = Some(signal.clone());
            let weak = Arc::downgrade(self);
            let interval = self.config.flush_interval;
            let spawned = std::thread::Builder::new()
                .name("anykv-redb-flush".into())
                .spawn(move || flush_loop(&weak, &signal, interval));
            if let Err(e) = spawned {
                tracing::error!("anykv-redb: could not start the flush thread: {e}");
            }
        }
    }

    /// Runs `f` on the writer thread (Tokio's blocking pool if it could
    /// not be started), and waits for it without blocking the caller.
    /// The handle moves to that thread, so the file may close there.
    pub(crate) async fn on_writer<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self.writer.as_ref().map(Workers::queue) {
            Some(q) => q.run(move || f(&self)).await,
            None => blocking(move || f(&self)).await,
        }
    }

    /// Runs `f` on a reader thread, as [`Db::on_writer`] does.
    pub(crate) async fn on_reader<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self.readers.as_ref().map(Workers::queue) {
            Some(q) => q.run(move || f(&self)).await,
            None => blocking(move || f(&self)).await,
        }
    }

    /// Runs `f` on a read transaction of the file.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let database = self.database.read();
        let database = database.as_ref().ok_or_else(|| self.unavailable())?;
        let txn = database.begin_read().map_err(db_err)?;
        f(&txn)
    }

    /// Runs `f` on a write transaction and commits it, unless `f` fails
    /// (nothing is written then) or changed nothing; then tells the log,
    /// the timer and the lease table what changed. Holds the write lock
    /// throughout; `f` may bind keys to leases (the lease table's lock
    /// comes after it).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Batch) -> Result<T>) -> Result<T> {
        let mut st = self.write.lock();
        let database = self.database.read();
        let database = database.as_ref().ok_or_else(|| self.unavailable())?;
        let txn = database.begin_write().map_err(db_err)?;
        let mut batch = Batch::new(
            txn,
            st.counters,
            self.config.history,
            self.config.history_bytes,
        );
        let out = f(&mut batch)?;
        if batch.is_empty() && batch.counters == st.counters {
            return Ok(out);
        }
        let durability = match self.config.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Eventual if batch.counters.revision > batch.counters.reserved => {
                batch.counters.reserved = batch.counters.revision + RESERVE;
                redb::Durability::Immediate
            }
            Durability::Eventual => redb::Durability::None,
        };
        let (counters, effects) = batch.finish(durability)?;
        st.dirty = matches!(durability, redb::Durability::None);
        self.apply(&mut st, counters, effects);
        Ok(out)
    }

    /// What the process learns of a committed write.
    fn apply(&self, st: &mut WriteState, counters: Counters, effects: Effects) {
        st.counters = counters;
        for (revision, change) in effects.changes {
            match change.value {
                Some(v) => self.log.record_put(&change.key, &v, revision),
                None => self.log.record_delete(&change.key, revision),
            }
        }
        for (deadline, key) in effects.cancelled {
            if st.scheduled.get(&key).is_some_and(|(d, _)| *d == deadline) {
                if let Some((_, at)) = st.scheduled.remove(&key) {
                    self.expiry.cancel(at, (deadline, key));
                }
            }
        }
        for (deadline, key) in effects.scheduled {
            self.schedule(st, deadline, key);
        }
        for (lease, key) in effects.unbound {
            self.leases.unbind(lease, &key);
        }
    }

    fn schedule(&self, st: &mut WriteState, deadline: u64, key: String) {
        let left = Duration::from_nanos(deadline.saturating_sub(wall_now()));
        let at = Instant::now().checked_add(left).unwrap_or_else(far_future);
        if let Some((d, old)) = st.scheduled.insert(key.clone(), (deadline, at)) {
            self.expiry.cancel(old, (d, key.clone()));
        }
        self.expiry.schedule(at, (deadline, key));
    }

    /// A deadline passed: deletes every key now due (one transaction, one
    /// revision each). A wall clock behind the timer's waits again.
    fn due(&self, deadline: u64, key: String) {
        let now = wall_now();
        if deadline > now {
            let mut st = self.write.lock();
            if st.scheduled.get(&key).is_some_and(|(d, _)| *d == deadline) {
                self.schedule(&mut st, deadline, key);
            }
            return;
        }
        {
            let mut st = self.write.lock();
            if st.scheduled.get(&key).is_some_and(|(d, _)| *d == deadline) {
                st.scheduled.remove(&key);
            }
        }
        if let Err(e) = self.write(|b| b.expire_due(now)) {
            tracing::error!("anykv-redb: expiring keys of {}: {e}", self.path.display());
        }
    }

    /// A lease was revoked: deletes its keys still bound to it.
    fn revoke(&self, lease: LeaseId, keys: &[String]) {
        let deleted = self.write(|b| {
            for k in keys {
                let header = b.header(k).ok().flatten();
                if header.is_some_and(|h| h.lease == Some(lease)) {
                    b.delete(k)?;
                }
            }
            Ok(())
        });
        if let Err(e) = deleted {
            tracing::error!(
                "anykv-redb: deleting the keys of revoked lease {} in {}: {e}",
                lease.0,
                self.path.display()
            );
        }
    }

    /// Discards the history up to and including `revision`.
    pub(crate) fn compact(&self, revision: u64) -> Result<()> {
        self.write(|b| b.compact(revision))?;
        self.log.compact(revision);
        Ok(())
    }

    /// The last revision granted.
    pub(crate) fn revision(&self) -> u64 {
        self.write.lock().counters.revision
    }

    /// Runs `f` under the write lock: nothing is written meanwhile (a
    /// watch's snapshot and registration).
    pub(crate) fn quiet<T>(&self, f: impl FnOnce(u64) -> T) -> T {
        let st = self.write.lock();
        f(st.counters.revision)
    }

    /// Makes the commits so far durable ([`Durability::Eventual`]).
    fn flush(&self) -> Result<()> {
        let mut st = self.write.lock();
        if !st.dirty {
            return Ok(());
        }
        let database = self.database.read();
        let database = database.as_ref().ok_or_else(|| self.unavailable())?;
        let txn = database.begin_write().map_err(db_err)?;
        let batch = Batch::new(
            txn,
            st.counters,
            self.config.history,
            self.config.history_bytes,
        );
        batch.finish(redb::Durability::Immediate)?;
        st.dirty = false;
        Ok(())
    }

    /// Closes the file cleanly (everything durable, no revision reserved
    /// beyond the last) and opens it again, as a server restarts; the
    /// process's leases, locks and watches go on. Calls wait meanwhile.
    pub(crate) fn restart(&self, outage: Duration) -> Result<()> {
        let mut st = self.write.lock();
        let mut slot = self.database.write();
        if let Some(database) = slot.take() {
            close_cleanly(database, &mut st)?;
        }
        std::thread::sleep(outage);
        let database = open_database(&self.path)?;
        let (counters, effects) = recover(&database, &self.config, false)?;
        *slot = Some(database);
        drop(slot);
        self.apply(&mut st, counters, effects);
        Ok(())
    }

    fn unavailable(&self) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!("the file {} is not open", self.path.display()),
            source: None,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(signal) = self.flusher.get_mut().take() {
            *signal.0.lock() = true;
            signal.1.notify_all();
        }
        let database = self.database.get_mut().take();
        let st = self.write.get_mut();
        if let Some(database) = database {
            let closed = blocking_here(|| close_cleanly(database, st));
            if let Err(e) = closed {
                tracing::error!("anykv-redb: closing {}: {e}", self.path.display());
            }
        }
        if self.registered.load(Ordering::SeqCst) {
            let mut open = OPEN.lock();
            if open.get(&self.path).is_some_and(|w| w.strong_count() == 0) {
                open.remove(&self.path);
            }
            CLOSED.notify_all();
        }
    }
}

/// Makes everything durable, marks no revision reserved beyond the last
/// (so the next open knows nothing was lost), and closes the file.
fn close_cleanly(database: Database, st: &mut WriteState) -> Result<()> {
    if st.dirty || st.counters.reserved != st.counters.revision {
        let txn = database.begin_write().map_err(db_err)?;
        let mut counters = st.counters;
        counters.reserved = counters.revision;
        let batch = Batch::new(txn, counters, usize::MAX, usize::MAX);
        let (counters, _) = batch.finish(redb::Durability::Immediate)?;
        st.counters = counters;
        st.dirty = false;
    }
    database.close().map_err(db_err)
}

fn flush_loop(db: &Weak<Db>, signal: &StopSignal, interval: Duration) {
    loop {
        {
            let mut stop = signal.0.lock();
            if !*stop {
                signal.1.wait_for(&mut stop, interval);
            }
            if *stop {
                return;
            }
        }
        let Some(db) = db.upgrade() else {
            return;
        };
        if let Err(e) = db.flush() {
            tracing::error!("anykv-redb: flushing {}: {e}", db.path.display());
        }
    }
}

/// The canonical path of a file that may not exist yet: its directory's
/// canonical path and its name.
fn canonical(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = dir.canonicalize().map_err(|e| {
        Error::Config(format!(
            "cannot open the redb file {}: its directory: {e}",
            path.display()
        ))
    })?;
    Ok(dir.join(name))
}

/// Runs blocking work from code that may be on an async runtime's thread
/// (a lease dropped in a task, the last store dropped): on a multi-thread
/// Tokio runtime it tells the runtime first, so other tasks move to other
/// threads; elsewhere it just runs.
pub(crate) fn blocking_here<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if !multi {
        return f();
    }
    let mut f = Some(f);
    let run =
        std::panic::AssertUnwindSafe(|| tokio::task::block_in_place(|| f.take().map(|f| f())));
    match std::panic::catch_unwind(run) {
        Ok(Some(out)) => out,
        // block_in_place refused (a LocalSet on the runtime): just run it.
        Ok(None) => match f.take() {
            Some(f) => f(),
            None => unreachable_none(),
        },
        Err(panic) => match f.take() {
            Some(f) => f(),
            None => std::panic::resume_unwind(panic),
        },
    }
}

/// `block_in_place` ran the work or refused before taking it; never both
/// absent.
#[cold]
fn unreachable_none() -> ! {
    unreachable!("block_in_place returned without running the work")
}

/// As far ahead as an `Instant` goes, for a deadline beyond it.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(u64::from(u32::MAX)))
        .unwrap_or(now)
}
