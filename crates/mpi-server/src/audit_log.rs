//! The audit log writer: group commit. Requests hand their events to one writer thread, which
//! takes every event waiting, chains them after the head, appends them in one durable store
//! transaction, and only then answers each request. Many requests share one fsync; none is
//! answered before its event is durable.

use std::sync::Arc;

use mpi_core::audit::{ChainHead, NewAuditEvent, chain_rows};
use mpi_core::keys::IdentifierKey;
use mpi_core::store::{Store, StoreError};
use mpi_core::{ServiceError, ServiceResult};
use tokio::sync::{mpsc, oneshot};

/// Events taken into one commit at most.
const GROUP_MAX: usize = 4096;
/// Events waiting for the writer at most; further requests wait to hand theirs over.
const QUEUE: usize = 16_384;

struct Pending {
    event: NewAuditEvent,
    /// The person references whose data the event disclosed, indexed with its sequence.
    disclosed: Vec<IdentifierKey>,
    done: oneshot::Sender<Result<u64, String>>,
}

/// A handle to the writer; cloning it is cheap. The writer stops when every handle is gone.
#[derive(Clone)]
pub struct AuditLog {
    /// `None` only in the benchmark that measures what auditing costs (see
    /// `Prepared::unaudited_for_benchmark`).
    sender: Option<mpsc::Sender<Pending>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog(..)")
    }
}

impl AuditLog {
    /// Starts the writer thread over `store`, continuing its chain. The writer finishes once
    /// every `AuditLog` handle is dropped; [`AuditWriter::join`] waits for that.
    pub fn start(store: Arc<dyn Store>) -> Result<(Self, AuditWriter), StoreError> {
        let head = store.audit_head()?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(store, head, receiver))
            .map_err(|error| {
                StoreError::Engine(format!("cannot start the audit writer: {error}"))
            })?;
        Ok((
            Self {
                sender: Some(sender),
            },
            AuditWriter(thread),
        ))
    }

    /// A log that writes nothing: for measuring what the audit log costs, never for serving.
    pub(crate) fn discarding() -> Self {
        Self { sender: None }
    }

    /// Appends one event and waits until it is durable; returns its sequence number.
    /// `disclosed` names the person references whose data it disclosed (for access disclosure).
    pub async fn record(
        &self,
        event: NewAuditEvent,
        disclosed: Vec<IdentifierKey>,
    ) -> ServiceResult<u64> {
        let Some(sender) = &self.sender else {
            return Ok(0);
        };
        let (done, answer) = oneshot::channel();
        let unavailable =
            || ServiceError::Store(StoreError::Engine("the audit log is not writing".into()));
        sender
            .send(Pending {
                event,
                disclosed,
                done,
            })
            .await
            .map_err(|_| unavailable())?;
        match answer.await {
            Ok(Ok(sequence)) => Ok(sequence),
            Ok(Err(cause)) => Err(ServiceError::Store(StoreError::Engine(format!(
                "audit append failed: {cause}"
            )))),
            Err(_) => Err(unavailable()),
        }
    }
}

/// The writer thread; it holds the store until it finishes.
pub struct AuditWriter(std::thread::JoinHandle<()>);

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditWriter(..)")
    }
}

impl AuditWriter {
    /// Waits (at most `timeout`) for the writer to finish its last commit and release the
    /// store. Returns false if it is still running (some handle is still alive).
    pub async fn join(self, timeout: std::time::Duration) -> bool {
        let waiting = tokio::task::spawn_blocking(move || self.0.join().is_ok());
        matches!(tokio::time::timeout(timeout, waiting).await, Ok(Ok(true)))
    }
}

/// Under load (the previous commit ended less than [`BUSY`] ago and took more than one event)
/// the writer waits this long after the first event of a group before taking every event then
/// waiting: fewer, larger commits for this much added latency. A server whose events come one
/// at a time commits each at once: waiting would gather nothing.
const GATHER: std::time::Duration = std::time::Duration::from_micros(300);
/// See [`GATHER`].
const BUSY: std::time::Duration = std::time::Duration::from_millis(2);

/// How a writer of durable appends takes its groups: the audit log's policy, public so that
/// the benchmark's durable echo (`mpi-bench floor`), which measures the least a durable append
/// per call costs, groups its appends exactly as the audit log does.
#[derive(Debug)]
pub struct Groups {
    /// When the last group was durable (or failed).
    last_commit: std::time::Instant,
    /// How many events the last group took.
    last_size: usize,
}

impl Default for Groups {
    fn default() -> Self {
        let now = std::time::Instant::now();
        Self {
            last_commit: now.checked_sub(BUSY).unwrap_or(now),
            last_size: 0,
        }
    }
}

impl Groups {
    /// Waits for an item, then takes it with every item waiting (at most 4,096), after pausing
    /// [`GATHER`] under load (see there). `None` once every sender is gone.
    pub fn next<T>(&mut self, receiver: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
        let first = receiver.blocking_recv()?;
        let mut group = vec![first];
        if self.last_size > 1 && self.last_commit.elapsed() < BUSY {
            // One sleep, not a polling loop: every wake-up is a context switch.
            std::thread::sleep(GATHER);
        }
        while group.len() < GROUP_MAX {
            match receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        self.last_size = group.len();
        Some(group)
    }

    /// The group taken last is durable, or failed: gathering measures from now.
    pub fn committed(&mut self) {
        self.last_commit = std::time::Instant::now();
    }
}

fn write_loop(store: Arc<dyn Store>, mut head: ChainHead, mut receiver: mpsc::Receiver<Pending>) {
    let mut groups = Groups::default();
    while let Some(group) = groups.next(&mut receiver) {
        let (rows, _) = chain_rows(head, group.iter().map(|pending| &pending.event));
        let index: Vec<(u64, IdentifierKey)> = group
            .iter()
            .zip(&rows)
            .flat_map(|(pending, row)| {
                pending
                    .disclosed
                    .iter()
                    .map(move |subject| (row.sequence, *subject))
            })
            .collect();
        let appended = store.append_audit(&rows, &index);
        groups.committed();
        match appended {
            Ok(new_head) => {
                head = new_head;
                for (pending, row) in group.into_iter().zip(&rows) {
                    let _ = pending.done.send(Ok(row.sequence));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, events = rows.len(), "audit append failed");
                for pending in group {
                    let _ = pending.done.send(Err(error.to_string()));
                }
                // Continue from what the store holds, whatever the failure left.
                if let Ok(stored) = store.audit_head() {
                    head = stored;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_group_takes_every_item_waiting_and_no_more_than_the_most() {
        let (sender, mut receiver) = mpsc::channel(GROUP_MAX + 10);
        for item in 0..GROUP_MAX + 3 {
            sender.try_send(item).unwrap();
        }
        let mut groups = Groups::default();
        let first = groups.next(&mut receiver).unwrap();
        assert_eq!(first, (0..GROUP_MAX).collect::<Vec<_>>());
        groups.committed();
        assert_eq!(
            groups.next(&mut receiver).unwrap(),
            vec![GROUP_MAX, GROUP_MAX + 1, GROUP_MAX + 2]
        );
        sender.try_send(7).unwrap();
        drop(sender);
        assert_eq!(
            groups.next(&mut receiver).unwrap(),
            vec![7],
            "what was sent before the end"
        );
        assert!(groups.next(&mut receiver).is_none(), "every sender is gone");
    }
}
