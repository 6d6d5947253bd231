//! The read cache: decoded results of the main file's hot reads (an insured key's
//! qualifications, a reference's person, a person's members, and a subject's unrevoked consents
//! with its locations, in one entry), so that a retrieval of a person seen before reads no
//! B-tree.
//!
//! A snapshot uses an entry only when its own redb transaction holds the same. Every commit of
//! the main file takes a *turn*, one at a time: it makes the cache's version odd, raises the
//! stamp of every stripe whose keys it changes (or the floor, when it changes more than it
//! names) to that odd version, commits, and makes the version even again. A snapshot reads the
//! version before it begins its transaction and keeps the even value at or below it, its tag:
//! the transaction holds every commit up to the tag, and perhaps later ones. It uses an entry
//! made at tag `t` only if `t` is at or below its own tag and the stamp of the entry's stripe
//! (and the floor) is at or below `t`. Suppose a commit changed the key and is in one of the two
//! transactions (the reader's, the entry's) but not the other: both hold every commit up to
//! `t`, so it came after `t`, and it raised the stamp above `t` before it committed, so before
//! the later of the two transactions began; the reader, which looks at the stamp after both,
//! goes to its pages. So a snapshot's cached and paged reads agree, and a write is seen by
//! every read that begins after the write has returned.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use mpi_core::consent::Consent;
use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::location::SubjectLocation;
use mpi_core::store::QualificationEntry;

/// Stripes of stamps; a commit raises the stripes of the keys it changes.
const STRIPES: usize = 1 << 16;

/// What an entry holds, by the key it is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Every qualification entry of an insured key.
    Qualifications,
    /// A person reference's person.
    Person,
    /// A person's references.
    Members,
    /// A subject's unrevoked consents and its locations: one key, so one stripe, for both (a
    /// commit that changes either raises it), and one look-up for a retrieval that reads both.
    Subject,
}

/// A cache key: what, and of which key (a person key fills the first 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    kind: Kind,
    id: [u8; 32],
}

impl Key {
    pub(crate) fn of(kind: Kind, key: IdentifierKey) -> Self {
        Self { kind, id: key.0 }
    }

    pub(crate) fn person(person: PersonKey) -> Self {
        Self {
            kind: Kind::Members,
            id: person_id(person),
        }
    }
}

fn person_id(person: PersonKey) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&person.0);
    id
}

fn stripe(id: &[u8; 32]) -> usize {
    let mut low = [0u8; 8];
    low.copy_from_slice(&id[..8]);
    // Keys are keyed hashes or random: their low bytes are spread already.
    usize::try_from(u64::from_le_bytes(low) % STRIPES as u64).unwrap_or(0)
}

/// A cached result.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Qualifications(Arc<[QualificationEntry]>),
    Person(Option<PersonKey>),
    Members(Arc<[IdentifierKey]>),
    Subject {
        consents: Arc<[Consent]>,
        locations: Arc<[SubjectLocation]>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    tag: u64,
    value: Value,
}

/// Approximate bytes of an entry: the map's slot, the shared slice and what its elements own.
#[derive(Debug, Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<Key, Entry> for Weight {
    fn weight(&self, _key: &Key, entry: &Entry) -> u64 {
        const SLOT: usize = 96;
        let owned = match &entry.value {
            Value::Qualifications(all) => std::mem::size_of_val(&**all),
            Value::Person(_) => 0,
            Value::Members(all) => std::mem::size_of_val(&**all),
            Value::Subject {
                consents,
                locations,
            } => {
                let consents: usize = consents
                    .iter()
                    .map(|c| {
                        std::mem::size_of::<Consent>() + c.evidence.len() + c.recorded_by.len()
                    })
                    .sum();
                let locations: usize = locations
                    .iter()
                    .map(|l| {
                        std::mem::size_of::<SubjectLocation>()
                            + l.location.id.reference.as_str().len()
                    })
                    .sum();
                consents + locations
            }
        };
        u64::try_from(SLOT + owned).unwrap_or(u64::MAX)
    }
}

/// What a commit changed, for the stamps.
#[derive(Debug, Default)]
pub(crate) struct Changed {
    /// Subjects, person references and insured keys whose cached results it may change.
    keys: Vec<[u8; 32]>,
    /// More than it names (a merge moves references between persons, and so changes members
    /// of persons): every entry goes.
    everything: bool,
}

impl Changed {
    /// Nothing any entry holds (the commit changed links only).
    pub(crate) fn nothing() -> Self {
        Self::default()
    }

    /// Every entry.
    pub(crate) fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    /// The results of these keys (subjects, references, insured keys).
    pub(crate) fn keys(keys: impl IntoIterator<Item = IdentifierKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|key| key.0).collect(),
            ..Self::default()
        }
    }
}

/// The cache. With a capacity of zero it holds nothing, and every read goes to the pages.
pub(crate) struct ReadCache {
    entries: Option<quick_cache::sync::Cache<Key, Entry, Weight>>,
    /// Even between commits, odd during one.
    version: AtomicU64,
    /// The version of the last commit that changed everything.
    floor: AtomicU64,
    /// The version of the last commit that changed a key of each stripe.
    stamps: Box<[AtomicU64]>,
    /// One commit of the main file at a time, from its stamps to its even version.
    turns: std::sync::Mutex<()>,
    /// Look-ups answered from the cache, and the others.
    hits: AtomicU64,
    misses: AtomicU64,
    capacity: u64,
}

/// What the read cache has done and holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    /// Look-ups it answered.
    pub hits: u64,
    /// Look-ups that read the pages (nothing held, or what was held a write has changed since).
    pub misses: u64,
    /// Entries held.
    pub entries: u64,
    /// Their weight, approximate bytes.
    pub bytes: u64,
    /// The most it holds, approximate bytes (`store.read_cache_mib`).
    pub capacity_bytes: u64,
}

impl ReadCache {
    /// A cache of about `bytes` (zero: none).
    pub(crate) fn new(bytes: u64) -> Self {
        // A retrieval's four entries weigh about 2 KiB at ten locations a person: 500 bytes an
        // entry on average.
        let estimated = usize::try_from(bytes / 500).unwrap_or(usize::MAX).max(16);
        Self {
            entries: (bytes > 0)
                .then(|| quick_cache::sync::Cache::with_weighter(estimated, bytes, Weight)),
            version: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            stamps: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            turns: std::sync::Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            capacity: bytes,
        }
    }

    /// Its counts so far and what it holds now.
    pub(crate) fn stats(&self) -> ReadCacheStats {
        let (entries, bytes) = self.entries.as_ref().map_or((0, 0), |entries| {
            (
                u64::try_from(entries.len()).unwrap_or(u64::MAX),
                entries.weight(),
            )
        });
        ReadCacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            entries,
            bytes,
            capacity_bytes: self.capacity,
        }
    }

    /// The tag of a snapshot whose transaction begins after this call.
    pub(crate) fn tag(&self) -> u64 {
        self.version.load(SeqCst) & !1
    }

    /// Waits for the turn to commit to the main file. Take it before the write transaction, and
    /// commit through it.
    pub(crate) fn turn(&self) -> Turn<'_> {
        Turn {
            cache: self,
            _held: self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    fn stamp_of(&self, id: &[u8; 32]) -> u64 {
        self.stamps[stripe(id)]
            .load(SeqCst)
            .max(self.floor.load(SeqCst))
    }

    /// The entry under `key`, if a snapshot tagged `tag` would read the same from its pages.
    pub(crate) fn get(&self, tag: u64, key: &Key) -> Option<Value> {
        let entries = self.entries.as_ref()?;
        let found = entries
            .get(key)
            .filter(|entry| entry.tag <= tag && self.stamp_of(&key.id) <= entry.tag);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Relaxed);
        found.map(|entry| entry.value)
    }

    /// Keeps what a snapshot tagged `tag` read under `key`, unless a commit since has changed it.
    pub(crate) fn put(&self, tag: u64, key: Key, value: Value) {
        if let Some(entries) = &self.entries
            && self.stamp_of(&key.id) <= tag
        {
            entries.insert(key, Entry { tag, value });
        }
    }
}

/// The turn of one commit of the main file.
pub(crate) struct Turn<'a> {
    cache: &'a ReadCache,
    _held: std::sync::MutexGuard<'a, ()>,
}

impl Turn<'_> {
    /// Commits `txn`, which changed what `changed` names, so that no reader uses an entry the
    /// commit makes untrue. The version is even again when this returns, committed or not.
    pub(crate) fn commit(
        self,
        txn: redb::WriteTransaction,
        changed: &Changed,
    ) -> Result<(), redb::CommitError> {
        struct Even<'a>(&'a AtomicU64);
        impl Drop for Even<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let cache = self.cache;
        let odd = cache.version.fetch_add(1, SeqCst) + 1;
        let _even = Even(&cache.version);
        if changed.everything {
            cache.floor.fetch_max(odd, SeqCst);
        }
        for id in &changed.keys {
            cache.stamps[stripe(id)].fetch_max(odd, SeqCst);
        }
        txn.commit()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(byte: u8) -> Key {
        Key::of(Kind::Person, IdentifierKey([byte; 32]))
    }

    fn person(byte: u8) -> Value {
        Value::Person(Some(PersonKey([byte; 16])))
    }

    fn held(cache: &ReadCache, tag: u64, byte: u8) -> Option<PersonKey> {
        match cache.get(tag, &key(byte))? {
            Value::Person(found) => found,
            other => panic!("{other:?}"),
        }
    }

    fn commit(cache: &ReadCache, changed: &Changed) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let turn = cache.turn();
        turn.commit(db.begin_write().unwrap(), changed).unwrap();
    }

    #[test]
    fn an_entry_serves_snapshots_tagged_at_or_after_it_until_its_key_changes() {
        let cache = ReadCache::new(1 << 20);
        let tag = cache.tag();
        cache.put(tag, key(1), person(1));
        cache.put(tag, key(2), person(2));
        assert_eq!(held(&cache, tag, 1), Some(PersonKey([1; 16])));
        assert_eq!((cache.stats().hits, cache.stats().misses), (1, 0));
        commit(&cache, &Changed::keys([IdentifierKey([1; 32])]));
        let later = cache.tag();
        assert_eq!(later, tag + 2);
        assert_eq!(held(&cache, later, 1), None, "its key changed");
        assert_eq!(held(&cache, tag, 1), None, "for the older snapshot too");
        assert_eq!(
            held(&cache, later, 2),
            Some(PersonKey([2; 16])),
            "another key's stays"
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
        assert!(
            stats.bytes > 0 && stats.capacity_bytes == 1 << 20,
            "{stats:?}"
        );
        // Made by the later snapshot: not for the older one, whose pages may differ.
        cache.put(later, key(1), person(9));
        assert_eq!(held(&cache, later, 1), Some(PersonKey([9; 16])));
        assert_eq!(held(&cache, tag, 1), None);
        commit(&cache, &Changed::everything());
        assert_eq!(held(&cache, cache.tag(), 2), None, "everything changed");
        assert_eq!(held(&cache, cache.tag(), 1), None);
    }

    #[test]
    fn what_a_snapshot_read_during_a_commit_is_not_kept_for_the_keys_it_changes() {
        let cache = ReadCache::new(1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let before = cache.tag();
        let turn = cache.turn();
        let txn = db.begin_write().unwrap();
        // A snapshot begun while the commit is under way may or may not hold it.
        let stamps_raised = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                // Wait for the odd version, then read as a snapshot begun now would.
                while cache.version.load(SeqCst).is_multiple_of(2) {
                    std::hint::spin_loop();
                }
                let during = cache.tag();
                while cache.stamp_of(&[3; 32]) == 0 {
                    std::hint::spin_loop();
                }
                cache.put(during, key(3), person(3));
                cache.put(during, key(4), person(4));
                during
            });
            turn.commit(txn, &Changed::keys([IdentifierKey([3; 32])]))
                .unwrap();
            reader.join().unwrap()
        });
        assert_eq!(stamps_raised, before);
        let after = cache.tag();
        assert_eq!(held(&cache, after, 3), None, "changed by the commit");
        assert_eq!(
            held(&cache, after, 4),
            Some(PersonKey([4; 16])),
            "untouched"
        );
    }

    #[test]
    fn a_person_s_members_go_only_with_everything() {
        let cache = ReadCache::new(1 << 20);
        let person = PersonKey([5; 16]);
        let members = Key::person(person);
        cache.put(
            cache.tag(),
            members,
            Value::Members(Arc::from(vec![IdentifierKey([5; 32])])),
        );
        commit(&cache, &Changed::keys([IdentifierKey([6; 32])]));
        assert!(cache.get(cache.tag(), &members).is_some());
        commit(&cache, &Changed::everything());
        assert!(cache.get(cache.tag(), &members).is_none());
    }

    #[test]
    fn a_cache_of_no_bytes_holds_nothing() {
        let cache = ReadCache::new(0);
        cache.put(cache.tag(), key(1), person(1));
        assert_eq!(held(&cache, cache.tag(), 1), None);
        assert_eq!(cache.stats(), ReadCacheStats::default(), "nor counts");
    }
}
