//! The index behind access disclosure ("which events disclosed this subject's data?"), kept off
//! the audit chain's commit path.
//!
//! The chain's group commits must stay cheap, and an index keyed by subject (a keyed hash: a
//! random key) dirties a random page per entry. So each commit only appends, per event, the
//! subjects it disclosed to `audit_subjects` (keyed by sequence: an append at the end of the
//! tree), in the same transaction as the event. A background thread folds those rows into the
//! subject-keyed index in a file of its own (`audit-index.redb`), many at a time in key order,
//! and records up to which sequence it has folded. Queries read the index up to that watermark
//! and `audit_subjects` after it, so they are exact at every moment, and nothing is lost in a
//! crash: whatever was not folded is still in `audit_subjects`, and folding resumes from the
//! watermark.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mpi_core::keys::IdentifierKey;
use mpi_core::store::{StoreError, StoreResult};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{AUDIT_HEAD, engine, key32};

/// In `audit.redb`: sequence → the subjects (32 bytes each) the event disclosed.
pub(crate) const AUDIT_SUBJECTS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("audit_subjects");
/// In `audit-index.redb`: subject · sequence → ().
const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("audit_index");
/// In `audit-index.redb`: `folded_to` → the last sequence folded.
const INDEX_META: TableDefinition<&str, u64> = TableDefinition::new("audit_index_meta");

/// Rows folded in one transaction at most.
const FOLD_ROWS: usize = 500_000;
/// How often the folder looks for new rows. Each entry costs about a page write while a fold
/// has fewer entries than the index has pages, so folds are rare and large; a query reads at
/// most this long's worth of unfolded rows from `audit_subjects`.
const FOLD_EVERY: Duration = Duration::from_secs(30);
/// The folder's nice value: its work (a second or so of CPU per fold at full load) is never on
/// a request's path and shares no lock with one, so it yields the core to request handling
/// instead of taking an equal share of it while requests queue (docs/benchmarks.md). Its idle
/// I/O class keeps a fold's writes (tens of megabytes of random pages, then their sync) out of
/// the way of the audit log's appends on the same disk: every audited call waits for an
/// append's `fdatasync`, and a sync queued behind a fold waited for all of it (p99 at half the
/// maximum 50-200 ms with the fold in the window, 8-15 ms in the idle class;
/// docs/benchmarks.md). A fold then takes longer while the disk is busy; nothing waits for it
/// (queries read the rows not yet folded).
const FOLDER_NICE: i32 = 19;

fn index_key(subject: &IdentifierKey, sequence: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&subject.0);
    key[32..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The subjects of one `audit_subjects` row.
fn subjects_of(value: &[u8]) -> StoreResult<Vec<IdentifierKey>> {
    if !value.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt("audit subjects length".into()));
    }
    value.chunks(32).map(key32).collect()
}

/// The `audit_subjects` value of an event.
pub(crate) fn subjects_value(subjects: &[IdentifierKey]) -> Vec<u8> {
    subjects.iter().flat_map(|s| s.0).collect()
}

/// The index file and its folder thread.
pub(crate) struct DisclosureIndex {
    db: Arc<Database>,
    audit_db: Arc<Database>,
    stop: Arc<AtomicBool>,
    folder: Option<std::thread::JoinHandle<()>>,
}

impl DisclosureIndex {
    /// Opens (or creates) the index file and starts folding.
    pub(crate) fn open(path: &std::path::Path, audit_db: Arc<Database>) -> StoreResult<Self> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(crate::AUDIT_INDEX_CACHE_BYTES)
                .create(path)
                .map_err(engine)?,
        );
        let txn = db.begin_write().map_err(engine)?;
        {
            txn.open_table(INDEX).map_err(engine)?;
            txn.open_table(INDEX_META).map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let folder = {
            let (db, audit_db, stop) = (db.clone(), audit_db.clone(), stop.clone());
            std::thread::Builder::new()
                .name("audit-index".into())
                .spawn(move || {
                    crate::yield_to_requests("disclosure index folder", FOLDER_NICE);
                    while !stop.load(Ordering::Acquire) {
                        match fold(&db, &audit_db) {
                            // More may be waiting: go on at once.
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(error) => {
                                tracing::error!(error = %error, "folding the disclosure index failed");
                            }
                        }
                        std::thread::park_timeout(FOLD_EVERY);
                    }
                })
                .map_err(|error| StoreError::Engine(format!("cannot start the folder: {error}")))?
        };
        Ok(Self {
            db,
            audit_db,
            stop,
            folder: Some(folder),
        })
    }

    /// Folds everything not yet folded (for tests and tools that want the index complete).
    #[cfg(test)]
    pub(crate) fn fold_all(&self) -> StoreResult<()> {
        while fold(&self.db, &self.audit_db)? {}
        Ok(())
    }

    /// Sequences `>= from` of events that disclosed any of `subjects`, each once, in order, at
    /// most `limit`.
    pub(crate) fn sequences_of(
        &self,
        subjects: &[IdentifierKey],
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        let mut found = BTreeSet::new();
        // The index first, then the unfolded rows after its watermark (read afterwards, so a
        // fold in between can only make them overlap, never leave a gap).
        let txn = self.db.begin_read().map_err(engine)?;
        let folded_to = folded_to(&txn.open_table(INDEX_META).map_err(engine)?)?;
        let index = txn.open_table(INDEX).map_err(engine)?;
        for subject in subjects {
            let start = index_key(subject, from);
            let end = index_key(subject, u64::MAX);
            for item in index
                .range(start.as_slice()..=end.as_slice())
                .map_err(engine)?
                .take(limit)
            {
                let (key, _) = item.map_err(engine)?;
                let mut sequence = [0u8; 8];
                sequence.copy_from_slice(&key.value()[32..]);
                found.insert(u64::from_be_bytes(sequence));
            }
        }
        let txn = self.audit_db.begin_read().map_err(engine)?;
        let staged = txn.open_table(AUDIT_SUBJECTS).map_err(engine)?;
        for item in staged
            .range(from.max(folded_to.saturating_add(1))..)
            .map_err(engine)?
        {
            let (sequence, value) = item.map_err(engine)?;
            if subjects_of(value.value())?
                .iter()
                .any(|subject| subjects.contains(subject))
            {
                found.insert(sequence.value());
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }
}

impl Drop for DisclosureIndex {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(folder) = self.folder.take() {
            folder.thread().unpark();
            let _ = folder.join();
        }
    }
}

fn folded_to(meta: &impl ReadableTable<&'static str, u64>) -> StoreResult<u64> {
    crate::counter(meta, "folded_to")
}

/// Folds up to [`FOLD_ROWS`] unfolded rows into the index in one transaction, in key order.
/// Returns true when rows may remain.
fn fold(db: &Database, audit_db: &Database) -> StoreResult<bool> {
    let from = {
        let txn = db.begin_read().map_err(engine)?;
        folded_to(&txn.open_table(INDEX_META).map_err(engine)?)?
    };
    let (pairs, through, more) = {
        let txn = audit_db.begin_read().map_err(engine)?;
        let head = txn
            .open_table(AUDIT_HEAD)
            .map_err(engine)?
            .get("head")
            .map_err(engine)?
            .map(|value| mpi_core::store::audit_codec::decode_head(value.value()))
            .transpose()?
            .map_or(0, |head| head.sequence);
        if head <= from {
            return Ok(false);
        }
        let staged = txn.open_table(AUDIT_SUBJECTS).map_err(engine)?;
        let mut pairs = Vec::new();
        let mut through = head;
        for (rows, item) in staged.range(from + 1..=head).map_err(engine)?.enumerate() {
            let (sequence, value) = item.map_err(engine)?;
            if rows == FOLD_ROWS {
                // Stop before this row: everything below it is folded.
                through = sequence.value() - 1;
                break;
            }
            for subject in subjects_of(value.value())? {
                pairs.push(index_key(&subject, sequence.value()));
            }
        }
        let more = through < head;
        (pairs, through, more)
    };
    let mut pairs = pairs;
    pairs.sort_unstable();
    let txn = db.begin_write().map_err(engine)?;
    {
        let mut index = txn.open_table(INDEX).map_err(engine)?;
        for key in &pairs {
            index.insert(key.as_slice(), ()).map_err(engine)?;
        }
        txn.open_table(INDEX_META)
            .map_err(engine)?
            .insert("folded_to", through)
            .map_err(engine)?;
    }
    txn.commit().map_err(engine)?;
    Ok(more)
}
