//! The audit chain's commit path: an append-only log beside `audit.redb`.
//!
//! A redb commit of a few audit events costs about 200 µs of CPU and 350 µs of wall time on the
//! reference machine (it rewrites the B-tree paths of three tables, the header and the
//! allocator state); appending the same events to a file and `fdatasync`ing it costs about a
//! third of that (`docs/benchmarks.md`). So [`AuditWal::append`] makes a group of events
//! durable by appending it to the current segment of `audit-wal/` and syncing it, and a folder
//! thread moves what was appended into `audit.redb` (events, anchored head, disclosed subjects)
//! many at a time, then deletes the segments it has emptied.
//!
//! Every read of the chain first folds what is pending, so reads are exact. A crash loses
//! nothing acknowledged: on open, the segments are read again and every event after the head of
//! `audit.redb` is folded in. The chain itself tells a complete frame from a torn one (each
//! event carries its sequence, the previous hash and its own hash over its content), so a write
//! interrupted by the crash is cut off at the last event that continues the chain; anything
//! that does not continue it anywhere else is reported as corruption.
//!
//! A segment is a sequence of frames: payload length (u32, little-endian), then the payload:
//! sequence (u64, big-endian), number of disclosed subjects (u16, little-endian), the subjects
//! (32 bytes each), and the row value of `audit_codec::row_value`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mpi_core::audit::{ChainHead, event_hash};
use mpi_core::keys::IdentifierKey;
use mpi_core::store::{AuditRow, StoreError, StoreResult, audit_codec, continue_chain};
use redb::{Database, ReadableDatabase};

use crate::{AUDIT, AUDIT_HEAD, disclosure_index, engine, key32};

/// A segment's size. Segments are written full of zeros before use, so that a sync of an
/// append changes no file metadata (no journal commit): the file system only flushes data.
const SEGMENT_BYTES: u64 = 32 << 20;
/// The name of the next segment, zero-filled ahead of time by the spare filler.
const SPARE: &str = "spare.tmp";
/// The name of a segment the writer fills itself, when it needs one and no spare is ready
/// (and of the first segment at open): never the spare filler's file.
const URGENT: &str = "urgent.tmp";
/// The folder folds at least this often.
const FOLD_EVERY: Duration = Duration::from_millis(100);
/// Pending events at which the writer wakes the folder early.
const FOLD_AT: usize = 8192;
/// No frame is larger (an event is a few hundred bytes).
const FRAME_MAX: usize = 1 << 20;

/// An event appended to the log, not yet in `audit.redb`.
pub(crate) struct Staged {
    row: AuditRow,
    subjects: Vec<IdentifierKey>,
}

impl Staged {
    pub(crate) fn sequence(&self) -> u64 {
        self.row.sequence
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
}

struct Writer {
    file: File,
    /// Where the next frame goes in `file`.
    offset: u64,
    /// The number of the next segment.
    next_number: u64,
    /// Oldest first; the last one is being appended to.
    segments: Vec<Segment>,
    /// The chain head after everything appended.
    head: ChainHead,
    /// A write or sync failed: nothing more is appended until a restart recovers the log.
    failed: bool,
    /// The frames of the append being written: kept between appends for its capacity.
    frames: Vec<u8>,
}

struct Shared {
    dir: PathBuf,
    audit_db: Arc<Database>,
    /// A segment's size: [`SEGMENT_BYTES`] but in tests.
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// A zero-filled file at [`SPARE`] ready to become the next segment. The filler holds the
    /// lock only to look and to publish, never while it fills; a writer holds it from taking
    /// the spare until the file is renamed away from [`SPARE`], so that a new fill cannot
    /// begin under that name before.
    spare: Mutex<Option<File>>,
    /// Segments the writer had to fill itself (no spare was ready).
    #[cfg(test)]
    urgent_fills: AtomicU64,
    /// Appended, not yet folded, in sequence order.
    pending: Mutex<Vec<Staged>>,
    /// Held while folding, so folds happen one at a time and in order. It keeps the buffer of
    /// the last fold, emptied, to become `pending` at the next: the writer then appends into
    /// capacity it has had before instead of growing a fresh buffer every fold, whose new
    /// pages the kernel zeroes (docs/benchmarks.md, "Stalls on the server's core, and on the
    /// client's").
    folding: Mutex<Vec<Staged>>,
    stop: AtomicBool,
    /// Tests stop folding to leave events only in the log, as a crash would.
    #[cfg(test)]
    paused: AtomicBool,
}

/// The log, its folder thread and its spare filler thread.
pub(crate) struct AuditWal {
    shared: Arc<Shared>,
    folder: Option<std::thread::JoinHandle<()>>,
    filler: Option<std::thread::JoinHandle<()>>,
}

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Engine(format!("{what} {}: {error}", path.display()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves nothing half-done that the next holder
    // could misread (the writer's state changes only after a successful sync), so go on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.wal"))
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// How much of a spare segment the filler writes before syncing it: a sync waits for every
/// write queued on the disk, so an appender's `fdatasync` that comes while the spare is being
/// filled waits for at most this much zeros, not for the whole segment (docs/benchmarks.md:
/// 10–20 ms stalls after each new segment before).
const PACED_FILL_BYTES: u64 = 256 << 10;

/// The spare filler's nice value. A fill costs 15–20 ms of CPU per 32 MiB segment on the
/// reference machine (page cache pages allocated and zeroed); at the default priority it took
/// an equal share of the one core from request handling in those bursts, and calls queued
/// (docs/benchmarks.md, "Stalls on the server's core, and on the client's"). It shares no
/// lock with a request but for a moment at publication, and the writer fills a segment itself
/// if no spare is ready.
const FILLER_NICE: i32 = 19;

/// Creates `path` holding `bytes` zeros, durably. Paced (`Some(stop)`), it syncs after every
/// [`PACED_FILL_BYTES`] (off the appending path) and gives up, returning `None`, once `stop`
/// is set; unpaced is faster in all and always finishes.
fn zero_filled(path: &Path, bytes: u64, paced: Option<&AtomicBool>) -> StoreResult<Option<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| io("cannot create", path, e))?;
    let zeros = vec![0u8; PACED_FILL_BYTES.min(bytes) as usize];
    let mut left = bytes;
    while left > 0 {
        if paced.is_some_and(|stop| stop.load(Ordering::Acquire)) {
            return Ok(None);
        }
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .map_err(|e| io("cannot fill", path, e))?;
        left -= n as u64;
        if paced.is_some() {
            file.sync_data().map_err(|e| io("cannot sync", path, e))?;
        }
    }
    file.sync_all().map_err(|e| io("cannot sync", path, e))?;
    Ok(Some(file))
}

/// Makes the spare (or, if none is ready, a new zero-filled file of `bytes`) segment `number`,
/// whose first event will be `first`.
fn new_segment(
    dir: &Path,
    spare: Option<File>,
    bytes: u64,
    number: u64,
    first: u64,
) -> StoreResult<(File, Segment)> {
    let path = segment_path(dir, number);
    let (file, from) = match spare {
        Some(file) => (file, dir.join(SPARE)),
        None => {
            let from = dir.join(URGENT);
            let file = zero_filled(&from, bytes, None)?.ok_or_else(|| {
                StoreError::Engine(format!("cannot fill {}: stopped", from.display()))
            })?;
            (file, from)
        }
    };
    std::fs::rename(&from, &path).map_err(|e| io("cannot rename", &from, e))?;
    // The new name must be durable before anything acknowledged depends on it.
    sync_dir(dir)?;
    Ok((file, Segment { first, path }))
}

fn encode_frame(out: &mut Vec<u8>, row: &AuditRow, subjects: &[IdentifierKey]) {
    let value = audit_codec::row_value(row);
    let length = 8 + 2 + 32 * subjects.len() + value.len();
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&row.sequence.to_be_bytes());
    out.extend_from_slice(&(subjects.len() as u16).to_le_bytes());
    for subject in subjects {
        out.extend_from_slice(&subject.0);
    }
    out.extend_from_slice(&value);
}

/// The frames of a segment that parse, each with the offset just after it; stops at the first
/// that does not (a torn or foreign tail).
pub(crate) fn decode_frames(bytes: &[u8]) -> (Vec<(Staged, usize)>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let Some(frame) = decode_frame(&bytes[at..]) else {
            return (frames, at);
        };
        let (staged, used) = frame;
        at += used;
        frames.push((staged, at));
    }
}

fn decode_frame(bytes: &[u8]) -> Option<(Staged, usize)> {
    let length = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if !(10..=FRAME_MAX).contains(&length) {
        return None;
    }
    let payload = bytes.get(4..4 + length)?;
    let sequence = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let count = u16::from_le_bytes(payload[8..10].try_into().ok()?) as usize;
    let subjects_end = 10 + 32 * count;
    let subjects = payload
        .get(10..subjects_end)?
        .chunks(32)
        .map(key32)
        .collect::<StoreResult<Vec<_>>>()
        .ok()?;
    let row = audit_codec::decode_row(sequence, payload.get(subjects_end..)?).ok()?;
    Some((Staged { row, subjects }, 4 + length))
}

/// Whether `row` is the event right after `head`, with its own hash intact.
fn continues(head: ChainHead, row: &AuditRow) -> bool {
    continue_chain(head, std::slice::from_ref(row)).is_ok()
        && event_hash(&row.previous_hash, row.sequence, &row.content) == row.hash
}

fn redb_head(audit_db: &Database) -> StoreResult<ChainHead> {
    let txn = audit_db.begin_read().map_err(engine)?;
    let anchor = txn.open_table(AUDIT_HEAD).map_err(engine)?;
    anchor
        .get("head")
        .map_err(engine)?
        .map(|value| audit_codec::decode_head(value.value()))
        .transpose()
        .map(|head| head.unwrap_or(ChainHead::EMPTY))
}

/// Writes `staged` into `audit.redb` in one transaction: the events, their subjects, the head.
fn fold_into(audit_db: &Database, staged: &[Staged]) -> StoreResult<()> {
    let Some(last) = staged.last() else {
        return Ok(());
    };
    let txn = audit_db.begin_write().map_err(engine)?;
    {
        let mut audit = txn.open_table(AUDIT).map_err(engine)?;
        let mut subjects = txn
            .open_table(disclosure_index::AUDIT_SUBJECTS)
            .map_err(engine)?;
        for item in staged {
            audit
                .insert(
                    item.row.sequence,
                    audit_codec::row_value(&item.row).as_slice(),
                )
                .map_err(engine)?;
            if !item.subjects.is_empty() {
                subjects
                    .insert(
                        item.row.sequence,
                        disclosure_index::subjects_value(&item.subjects).as_slice(),
                    )
                    .map_err(engine)?;
            }
        }
        let head = ChainHead {
            sequence: last.row.sequence,
            hash: last.row.hash,
        };
        txn.open_table(AUDIT_HEAD)
            .map_err(engine)?
            .insert("head", audit_codec::head_value(head).as_slice())
            .map_err(engine)?;
    }
    txn.commit().map_err(engine)
}

/// The sequence of an intact event framed anywhere in `bytes`, if there is one.
fn whole_event_in(bytes: &[u8]) -> Option<u64> {
    (0..bytes.len()).find_map(|at| {
        let (staged, _) = decode_frame(&bytes[at..])?;
        let row = &staged.row;
        (event_hash(&row.previous_hash, row.sequence, &row.content) == row.hash)
            .then_some(row.sequence)
    })
}

/// Reads the segments in `dir` and returns the events after `head` that continue the chain,
/// leaving out a torn tail of the last segment, with the segment paths found and whether the
/// last one had such a tail.
fn recover(dir: &Path, head: ChainHead) -> StoreResult<(Vec<Staged>, Vec<PathBuf>, bool)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io("cannot read", dir, e))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    paths.sort();
    let mut recovered = Vec::new();
    let mut current = head;
    let mut torn = false;
    for (index, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| io("cannot read", path, e))?;
        let (frames, parsed) = decode_frames(&bytes);
        let mut valid_to = 0;
        // After the last frame a segment holds zeros (it was filled with them before use).
        let mut broken = bytes[parsed..].iter().any(|byte| *byte != 0);
        for (staged, end) in frames {
            if staged.row.sequence <= current.sequence && recovered.is_empty() {
                // Already in audit.redb (folded before the restart).
                valid_to = end;
                continue;
            }
            if !continues(current, &staged.row) {
                broken = true;
                break;
            }
            current = ChainHead {
                sequence: staged.row.sequence,
                hash: staged.row.hash,
            };
            recovered.push(staged);
            valid_to = end;
        }
        if broken {
            if index + 1 != paths.len() {
                return Err(StoreError::Corrupt(format!(
                    "audit log segment {} is broken after sequence {} and is not the last",
                    path.display(),
                    current.sequence
                )));
            }
            // A write the process did not finish leaves a torn tail: part of one group, then
            // zeros. A whole event after the break means acknowledged events were damaged.
            if let Some(sequence) = whole_event_in(bytes.get(valid_to + 1..).unwrap_or_default()) {
                return Err(StoreError::Corrupt(format!(
                    "audit log segment {} is broken after sequence {} but holds event {sequence} after the break",
                    path.display(),
                    current.sequence
                )));
            }
            // So this tail was never acknowledged. The segment is kept aside (renamed `.torn`)
            // for inspection.
            torn = true;
            tracing::warn!(
                segment = %path.display(),
                after_sequence = current.sequence,
                bytes_after = bytes.len() - valid_to,
                "audit log ended in an incomplete write; cut off"
            );
        }
    }
    Ok((recovered, paths, torn))
}

impl AuditWal {
    /// Opens the log in `dir` (creating it), folds whatever a previous run left in it into
    /// `audit_db`, and starts the folder and the spare filler.
    pub(crate) fn open(dir: &Path, audit_db: Arc<Database>) -> StoreResult<Self> {
        Self::open_sized(dir, audit_db, SEGMENT_BYTES, true)
    }

    /// [`AuditWal::open`] with segments of `segment_bytes`, and without a spare filler unless
    /// `spares` (tests roll over small segments, with spares and without).
    fn open_sized(
        dir: &Path,
        audit_db: Arc<Database>,
        segment_bytes: u64,
        spares: bool,
    ) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let stored = redb_head(&audit_db)?;
        let (recovered, old, torn) = recover(dir, stored)?;
        let next_number = old
            .last()
            .and_then(|path| path.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |number| number + 1);
        for chunk in recovered.chunks(FOLD_AT) {
            fold_into(&audit_db, chunk)?;
        }
        let head = recovered.last().map_or(stored, |last| ChainHead {
            sequence: last.row.sequence,
            hash: last.row.hash,
        });
        // Everything is in audit.redb now: start afresh.
        for (index, path) in old.iter().enumerate() {
            if torn && index + 1 == old.len() {
                let aside = path.with_extension("wal.torn");
                std::fs::rename(path, &aside).map_err(|e| io("cannot rename", path, e))?;
            } else {
                std::fs::remove_file(path).map_err(|e| io("cannot remove", path, e))?;
            }
        }
        let (file, segment) =
            new_segment(dir, None, segment_bytes, next_number, head.sequence + 1)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            audit_db,
            segment_bytes,
            writer: Mutex::new(Writer {
                file,
                offset: 0,
                next_number: next_number + 1,
                segments: vec![segment],
                head,
                failed: false,
                frames: Vec::new(),
            }),
            spare: Mutex::new(None),
            #[cfg(test)]
            urgent_fills: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            folding: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            #[cfg(test)]
            paused: AtomicBool::new(false),
        });
        let folder = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("audit-fold".into())
                .spawn(move || {
                    while !shared.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(FOLD_EVERY);
                        if let Err(error) = shared.fold() {
                            tracing::error!(error = %error, "folding the audit log failed");
                        }
                    }
                })
                .map_err(|e| StoreError::Engine(format!("cannot start the audit folder: {e}")))?
        };
        let filler = if !spares {
            None
        } else {
            let shared = shared.clone();
            let filler = std::thread::Builder::new()
                .name("audit-spare".into())
                .spawn(move || {
                    crate::yield_to_requests("audit log's spare filler", FILLER_NICE);
                    while !shared.stop.load(Ordering::Acquire) {
                        if let Err(error) = shared.prepare_spare() {
                            tracing::error!(error = %error, "preparing an audit log segment failed");
                        }
                        // A writer that takes the spare wakes the filler at once.
                        std::thread::park_timeout(FOLD_EVERY);
                    }
                })
                .map_err(|e| {
                    StoreError::Engine(format!("cannot start the audit log's spare filler: {e}"))
                })?;
            Some(filler)
        };
        Ok(Self {
            shared,
            folder: Some(folder),
            filler,
        })
    }

    /// Appends `rows` (which must continue the chain) and the subjects each disclosed; durable
    /// when this returns.
    pub(crate) fn append(
        &self,
        rows: &[AuditRow],
        index: &[(u64, IdentifierKey)],
    ) -> StoreResult<ChainHead> {
        let mut by_sequence: BTreeMap<u64, Vec<IdentifierKey>> = BTreeMap::new();
        for (sequence, subject) in index {
            by_sequence.entry(*sequence).or_default().push(*subject);
        }
        let mut writer = lock(&self.shared.writer);
        if writer.failed {
            return Err(StoreError::Engine(
                "the audit log stopped after a failed write; restart the server to recover".into(),
            ));
        }
        let head = continue_chain(writer.head, rows)?;
        let mut staged = Vec::with_capacity(rows.len());
        let mut frames = std::mem::take(&mut writer.frames);
        frames.clear();
        for row in rows {
            let subjects = by_sequence.remove(&row.sequence).unwrap_or_default();
            if subjects.len() > usize::from(u16::MAX) {
                return Err(StoreError::Conflict(format!(
                    "audit row {} names too many subjects",
                    row.sequence
                )));
            }
            encode_frame(&mut frames, row, &subjects);
            staged.push(Staged {
                row: row.clone(),
                subjects,
            });
        }
        if frames.is_empty() {
            return Ok(head);
        }
        if writer.offset > 0 && writer.offset + frames.len() as u64 > self.shared.segment_bytes {
            // Held until the spare is renamed away from its name (see `Shared::spare`).
            let mut spare = lock(&self.shared.spare);
            let ready = spare.take();
            if ready.is_none() {
                #[cfg(test)]
                self.shared.urgent_fills.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "no spare audit log segment was ready: this append fills one itself"
                );
            }
            let (file, segment) = new_segment(
                &self.shared.dir,
                ready,
                self.shared.segment_bytes,
                writer.next_number,
                writer.head.sequence + 1,
            )?;
            drop(spare);
            if let Some(filler) = &self.filler {
                filler.thread().unpark();
            }
            writer.file = file;
            writer.offset = 0;
            writer.next_number += 1;
            writer.segments.push(segment);
        }
        let written = {
            let writer = &mut *writer;
            writer
                .file
                .write_all_at(&frames, writer.offset)
                .and_then(|()| writer.file.sync_data())
        };
        if let Err(error) = written {
            // Whatever reached the file is unacknowledged, and after a failed sync the kernel
            // may have dropped pages it still reports clean: append nothing more after it. A
            // restart cuts the tail off and continues from the last durable event.
            writer.failed = true;
            let path = writer.segments.last().map(|s| s.path.clone());
            return Err(io("cannot append to", &path.unwrap_or_default(), error));
        }
        writer.offset += frames.len() as u64;
        writer.frames = frames;
        writer.head = head;
        let wake = {
            let mut pending = lock(&self.shared.pending);
            pending.extend(staged);
            pending.len() >= FOLD_AT
        };
        drop(writer);
        if wake && let Some(folder) = &self.folder {
            folder.thread().unpark();
        }
        Ok(head)
    }

    /// The head after everything appended.
    pub(crate) fn head(&self) -> ChainHead {
        lock(&self.shared.writer).head
    }

    /// Moves everything appended so far into `audit.redb` (reads call this first).
    pub(crate) fn fold(&self) -> StoreResult<()> {
        self.shared.fold()
    }
}

impl Shared {
    /// Zero-fills the next segment ahead of time, off the appending path, unless one is ready.
    fn prepare_spare(&self) -> StoreResult<()> {
        if lock(&self.spare).is_some() {
            return Ok(());
        }
        // Filled without the lock: a writer that needs a segment meanwhile fills its own under
        // another name. Only this thread makes spares, so nothing else writes `SPARE` now.
        let started = std::time::Instant::now();
        let Some(file) = zero_filled(&self.dir.join(SPARE), self.segment_bytes, Some(&self.stop))?
        else {
            return Ok(());
        };
        *lock(&self.spare) = Some(file);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "audit log spare segment ready"
        );
        Ok(())
    }

    fn fold(&self) -> StoreResult<()> {
        #[cfg(test)]
        if self.paused.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut emptied_buffer = lock(&self.folding);
        let mut staged = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::replace(&mut *pending, std::mem::take(&mut *emptied_buffer))
        };
        let Some(last) = staged.last().map(|s| s.row.sequence) else {
            return Ok(());
        };
        if let Err(error) = fold_into(&self.audit_db, &staged) {
            // Put them back in front of anything appended meanwhile, for the next try.
            let mut pending = lock(&self.pending);
            let newer = std::mem::replace(&mut *pending, staged);
            pending.extend(newer);
            return Err(error);
        }
        staged.clear();
        *emptied_buffer = staged;
        // Segments wholly at or below `last` are in audit.redb now; never the current one.
        let emptied: Vec<PathBuf> = {
            let mut writer = lock(&self.writer);
            let keep_from = writer
                .segments
                .windows(2)
                .position(|pair| pair[1].first > last + 1)
                .unwrap_or(writer.segments.len() - 1);
            writer
                .segments
                .drain(..keep_from)
                .map(|segment| segment.path)
                .collect()
        };
        for path in emptied {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %error, "cannot remove an emptied audit log segment");
            }
        }
        Ok(())
    }
}

impl Drop for AuditWal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for thread in [self.folder.take(), self.filler.take()]
            .into_iter()
            .flatten()
        {
            thread.thread().unpark();
            let _ = thread.join();
        }
        if let Err(error) = self.shared.fold() {
            tracing::error!(error = %error, "folding the audit log at close failed; the next open folds it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpi_core::audit::{NewAuditEvent, chain_rows};
    use redb::ReadableTableMetadata;

    fn event(n: u64) -> NewAuditEvent {
        NewAuditEvent {
            at_micros: 1_700_000_000_000_000 + n as i64,
            principal: "clinician:1310000001".into(),
            action: "FindLocations".into(),
            purpose: 1,
            person_key: None,
            outcome: "OK".into(),
            count: 3,
            emergency: false,
            emergency_reason: String::new(),
            deciding_consents: vec![format!("consent-{n}")],
        }
    }

    fn subject(n: u64) -> IdentifierKey {
        IdentifierKey([n as u8; 32])
    }

    /// Appends `groups` groups of `size` events after `head`, each event disclosing one subject.
    fn append_groups(wal: &AuditWal, mut head: ChainHead, groups: u64, size: u64) -> ChainHead {
        for _ in 0..groups {
            let events: Vec<_> = (0..size).map(|i| event(head.sequence + 1 + i)).collect();
            let (rows, next) = chain_rows(head, events.iter());
            let index: Vec<_> = rows
                .iter()
                .map(|r| (r.sequence, subject(r.sequence)))
                .collect();
            assert_eq!(wal.append(&rows, &index).unwrap(), next);
            head = next;
        }
        head
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        wal_dir: PathBuf,
        db: Arc<Database>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("audit.redb")).unwrap());
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(AUDIT).unwrap();
            txn.open_table(AUDIT_HEAD).unwrap();
            txn.open_table(disclosure_index::AUDIT_SUBJECTS).unwrap();
        }
        txn.commit().unwrap();
        Fixture {
            wal_dir: dir.path().join("audit-wal"),
            _dir: dir,
            db,
        }
    }

    /// Appends as a crashed run would leave it: in the log, not in audit.redb.
    fn crashed_run(f: &Fixture, groups: u64, size: u64) -> ChainHead {
        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        wal.shared.paused.store(true, Ordering::Release);
        let head = append_groups(&wal, wal.head(), groups, size);
        drop(wal);
        assert_eq!(
            redb_head(&f.db).unwrap(),
            ChainHead::EMPTY,
            "nothing was folded"
        );
        head
    }

    fn stored_rows(db: &Database) -> Vec<AuditRow> {
        let txn = db.begin_read().unwrap();
        let audit = txn.open_table(AUDIT).unwrap();
        audit
            .range(0..)
            .unwrap()
            .map(|item| {
                let (sequence, value) = item.unwrap();
                audit_codec::decode_row(sequence.value(), value.value()).unwrap()
            })
            .collect()
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segments: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        assert_eq!(segments.len(), 1, "{segments:?}");
        segments[0].clone()
    }

    #[test]
    fn reads_after_append_see_every_event_and_the_head_is_anchored() {
        let f = fixture();
        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        let head = append_groups(&wal, ChainHead::EMPTY, 5, 7);
        assert_eq!(wal.head(), head);
        wal.fold().unwrap();
        assert_eq!(redb_head(&f.db).unwrap(), head);
        let rows = stored_rows(&f.db);
        assert_eq!(rows.len(), 35);
        assert_eq!(continue_chain(ChainHead::EMPTY, &rows).unwrap(), head);
        // The subjects went along, one per event.
        let txn = f.db.begin_read().unwrap();
        let subjects = txn.open_table(disclosure_index::AUDIT_SUBJECTS).unwrap();
        assert_eq!(subjects.len().unwrap(), 35);
        // A group that does not continue the chain is refused and changes nothing.
        let (stale, _) = chain_rows(ChainHead::EMPTY, [event(1)].iter());
        assert!(matches!(
            wal.append(&stale, &[]),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(wal.head(), head);
    }

    /// Segments of this size roll over every few groups of [`append_groups`].
    const SMALL_SEGMENT: u64 = 8 << 10;

    fn spare_ready(wal: &AuditWal) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if lock(&wal.shared.spare).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Appends `groups` groups of `size` in a run whose folder is paused, with a spare filler
    /// if `spares`, each group after `before_each`; returns the head, the number of segments
    /// written and how many of them the writer filled itself.
    fn run_over_small_segments(
        f: &Fixture,
        spares: bool,
        groups: u64,
        size: u64,
        before_each: impl Fn(&AuditWal),
    ) -> (ChainHead, usize, u64) {
        let wal = AuditWal::open_sized(&f.wal_dir, f.db.clone(), SMALL_SEGMENT, spares).unwrap();
        wal.shared.paused.store(true, Ordering::Release);
        let mut head = wal.head();
        for _ in 0..groups {
            before_each(&wal);
            head = append_groups(&wal, head, 1, size);
        }
        let segments = lock(&wal.shared.writer).segments.len();
        let urgent = wal.shared.urgent_fills.load(Ordering::Relaxed);
        drop(wal);
        (head, segments, urgent)
    }

    /// No segment the writer filled itself is left under its fill's name, and, as nothing was
    /// folded, a reopen reads all `events` back from the segments, in chain order up to `head`.
    fn assert_recovered_from_segments(f: &Fixture, head: ChainHead, events: usize) {
        let names = files_in(&f.wal_dir);
        assert!(!names.iter().any(|n| n == URGENT), "{names:?}");
        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        assert_eq!(wal.head(), head);
        let rows = stored_rows(&f.db);
        assert_eq!(rows.len(), events);
        assert_eq!(continue_chain(ChainHead::EMPTY, &rows).unwrap(), head);
    }

    #[test]
    fn segments_roll_over_onto_spares_filled_ahead_and_every_event_is_recovered() {
        let f = fixture();
        let (head, segments, urgent) = run_over_small_segments(&f, true, 12, 20, |wal| {
            assert!(spare_ready(wal), "the filler makes a spare within 10 s");
        });
        assert!(segments >= 4, "{segments} segments");
        assert_eq!(urgent, 0, "every roll took the spare");
        assert_recovered_from_segments(&f, head, 240);
    }

    #[test]
    fn a_roll_with_no_spare_ready_fills_its_own_segment_and_leaves_the_spare_alone() {
        let f = fixture();
        let marker = b"a spare being filled";
        let once = std::sync::Once::new();
        let (head, segments, urgent) = run_over_small_segments(&f, false, 12, 20, |wal| {
            // No spare ready, ever (no filler runs), and the file under the spare's name is
            // one a filler would still be filling, which an append must not take or cut.
            once.call_once(|| std::fs::write(wal.shared.dir.join(SPARE), marker).unwrap());
        });
        assert!(segments >= 4, "{segments} segments");
        assert_eq!(
            urgent,
            segments as u64 - 1,
            "each roll filled its own segment"
        );
        // Before the reopen, whose filler fills the spare anew.
        assert_eq!(std::fs::read(f.wal_dir.join(SPARE)).unwrap(), marker);
        assert_recovered_from_segments(&f, head, 240);
    }

    #[test]
    fn acknowledged_events_only_in_the_log_are_folded_on_open() {
        let f = fixture();
        let head = crashed_run(&f, 4, 25);
        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        assert_eq!(wal.head(), head);
        assert_eq!(redb_head(&f.db).unwrap(), head);
        assert_eq!(stored_rows(&f.db).len(), 100);
        // Appending goes on after them, and a second restart changes nothing.
        let head = append_groups(&wal, head, 1, 3);
        drop(wal);
        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        assert_eq!(wal.head(), head);
        assert_eq!(stored_rows(&f.db).len(), 103);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_kept_aside() {
        let f = fixture();
        let head = crashed_run(&f, 3, 10);
        // A group the crash interrupted: part of its first frame after the last whole event.
        let segment = only_segment(&f.wal_dir);
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        let (rows, _) = chain_rows(head, [event(31)].iter());
        let mut frame = Vec::new();
        encode_frame(&mut frame, &rows[0], &[subject(31)]);
        bytes[end..end + frame.len() / 2].copy_from_slice(&frame[..frame.len() / 2]);
        std::fs::write(&segment, &bytes).unwrap();

        let wal = AuditWal::open(&f.wal_dir, f.db.clone()).unwrap();
        assert_eq!(
            wal.head(),
            head,
            "every acknowledged event, nothing of the torn one"
        );
        assert_eq!(stored_rows(&f.db).len(), 30);
        assert!(segment.with_extension("wal.torn").exists());
        let head = append_groups(&wal, head, 1, 2);
        assert_eq!(head.sequence, 32);
    }

    #[test]
    fn damage_before_acknowledged_events_is_reported_not_cut_off() {
        let f = fixture();
        crashed_run(&f, 3, 10);
        let segment = only_segment(&f.wal_dir);
        let mut bytes = std::fs::read(&segment).unwrap();
        // Flip a byte inside the first event's content (after length, sequence, subject count,
        // one subject and two hashes): events 2..30 follow it.
        bytes[4 + 8 + 2 + 32 + 64 + 5] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        match AuditWal::open(&f.wal_dir, f.db.clone()) {
            Err(StoreError::Corrupt(message)) => assert!(message.contains("event 2"), "{message}"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("opened a damaged log"),
        }
        assert_eq!(
            redb_head(&f.db).unwrap(),
            ChainHead::EMPTY,
            "nothing was folded"
        );
    }

    #[test]
    fn a_broken_segment_that_is_not_the_last_is_reported() {
        let f = fixture();
        let head = crashed_run(&f, 1, 5);
        // A later segment continuing the chain, as after a rotation.
        let first = only_segment(&f.wal_dir);
        let mut bytes = std::fs::read(&first).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        let events: Vec<_> = (6..=8).map(event).collect();
        let (rows, _) = chain_rows(head, events.iter());
        let mut frames = Vec::new();
        for row in &rows {
            encode_frame(&mut frames, row, &[]);
        }
        std::fs::write(segment_path(&f.wal_dir, 99), &frames).unwrap();
        // The intact pair opens and folds all eight events...
        let copy = std::fs::read(&first).unwrap();
        drop(AuditWal::open(&f.wal_dir, f.db.clone()).unwrap());
        assert_eq!(stored_rows(&f.db).len(), 8);
        // ...a damaged first segment of the pair does not.
        let f = fixture();
        std::fs::create_dir_all(&f.wal_dir).unwrap();
        bytes.copy_from_slice(&copy);
        bytes[end - 3] ^= 0x01;
        std::fs::write(segment_path(&f.wal_dir, 1), &bytes).unwrap();
        std::fs::write(segment_path(&f.wal_dir, 2), &frames).unwrap();
        assert!(matches!(
            AuditWal::open(&f.wal_dir, f.db.clone()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn frames_round_trip_and_garbage_does_not_decode() {
        let (rows, _) = chain_rows(ChainHead::EMPTY, [event(1), event(2)].iter());
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, &rows[0], &[subject(1), subject(9)]);
        encode_frame(&mut bytes, &rows[1], &[]);
        let (frames, parsed) = decode_frames(&bytes);
        assert_eq!(parsed, bytes.len());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0.row, rows[0]);
        assert_eq!(frames[0].0.subjects, [subject(1), subject(9)]);
        assert!(frames[1].0.subjects.is_empty());
        for cut in 0..bytes.len() {
            let (frames, parsed) = decode_frames(&bytes[..cut]);
            assert!(parsed <= cut && frames.len() <= 1);
        }
        assert!(decode_frame(&[0xff; 64]).is_none());
        assert!(decode_frame(&[]).is_none());
    }
}
