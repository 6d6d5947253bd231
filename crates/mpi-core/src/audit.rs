//! The tamper-evident audit chain: every event carries the hash of the one before it, and its
//! own hash covers its sequence number, its content and that previous hash. Changing, removing
//! or reordering any stored event breaks the chain at that event; removing events from the end
//! is caught by the chain head, which the store keeps apart from the events.
//!
//! Events hold no insured number, name or regional ID: the patient appears only as the
//! pseudonymous person key.

use sha2::{Digest, Sha256};

use crate::keys::{PersonKey, hex};

/// The previous-hash of the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// An event before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The caller, as `role:binding`.
    pub principal: String,
    /// The RPC or operation, for example `FindLocations`.
    pub action: String,
    /// Purpose of use, as its API enum number (0 when none was stated).
    pub purpose: u8,
    /// The person concerned, when there was exactly one.
    pub person_key: Option<PersonKey>,
    /// `ok`, `denied`, `not_found`, …
    pub outcome: String,
    /// How many items were disclosed or changed.
    pub count: u32,
    /// Emergency access.
    pub emergency: bool,
    /// The stated emergency reason.
    pub emergency_reason: String,
    /// The consents that decided the outcome.
    pub deciding_consents: Vec<String>,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// 1, 2, 3, … without gaps.
    pub sequence: u64,
    /// The content.
    pub event: NewAuditEvent,
    /// The hash of the event before (GENESIS for the first).
    pub previous_hash: [u8; 32],
    /// This event's hash.
    pub hash: [u8; 32],
}

/// The last event of the chain: its sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last event (0 for an empty chain).
    pub sequence: u64,
    /// Hash of the last event (GENESIS for an empty chain).
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty chain.
    pub const EMPTY: ChainHead = ChainHead {
        sequence: 0,
        hash: GENESIS,
    };
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The canonical bytes of an event's content: what the hash covers and what the store keeps.
pub fn encode_content(event: &NewAuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + event.principal.len() + event.action.len());
    out.push(1); // layout version
    out.extend_from_slice(&event.at_micros.to_be_bytes());
    put_text(&mut out, &event.principal);
    put_text(&mut out, &event.action);
    out.push(event.purpose);
    match event.person_key {
        Some(key) => {
            out.push(1);
            out.extend_from_slice(&key.0);
        }
        None => out.push(0),
    }
    put_text(&mut out, &event.outcome);
    out.extend_from_slice(&event.count.to_be_bytes());
    out.push(u8::from(event.emergency));
    put_text(&mut out, &event.emergency_reason);
    out.extend_from_slice(&(event.deciding_consents.len() as u32).to_be_bytes());
    for consent in &event.deciding_consents {
        put_text(&mut out, consent);
    }
    out
}

/// Why stored bytes are not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event bytes are malformed: {0}")]
pub struct DecodeError(&'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn text(&mut self) -> Result<String, DecodeError> {
        let length = u32::from_be_bytes(self.array()?) as usize;
        String::from_utf8(self.take(length)?.to_vec()).map_err(|_| DecodeError("text is not UTF-8"))
    }
}

/// Decodes the content bytes written by [`encode_content`].
pub fn decode_content(bytes: &[u8]) -> Result<NewAuditEvent, DecodeError> {
    let mut reader = Reader(bytes);
    if reader.array::<1>()? != [1] {
        return Err(DecodeError("unknown layout version"));
    }
    let at_micros = i64::from_be_bytes(reader.array()?);
    let principal = reader.text()?;
    let action = reader.text()?;
    let [purpose] = reader.array::<1>()?;
    let person_key = match reader.array::<1>()? {
        [0] => None,
        [1] => Some(PersonKey(reader.array()?)),
        _ => return Err(DecodeError("person flag")),
    };
    let outcome = reader.text()?;
    let count = u32::from_be_bytes(reader.array()?);
    let emergency = match reader.array::<1>()? {
        [0] => false,
        [1] => true,
        _ => return Err(DecodeError("emergency flag")),
    };
    let emergency_reason = reader.text()?;
    let consents = u32::from_be_bytes(reader.array()?) as usize;
    if consents > reader.0.len() / 4 {
        return Err(DecodeError("consent count"));
    }
    let deciding_consents = (0..consents)
        .map(|_| reader.text())
        .collect::<Result<_, _>>()?;
    if !reader.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(NewAuditEvent {
        at_micros,
        principal,
        action,
        purpose,
        person_key,
        outcome,
        count,
        emergency,
        emergency_reason,
        deciding_consents,
    })
}

/// The hash of an event: SHA-256 over a label, the previous hash, the sequence number and the
/// content bytes.
pub fn event_hash(previous_hash: &[u8; 32], sequence: u64, content: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"kouiki-mpi/audit-event/v1");
    hasher.update(previous_hash);
    hasher.update(sequence.to_be_bytes());
    hasher.update(content);
    hasher.finalize().into()
}

/// Places new events after `head`, returning them chained and the new head.
pub fn chain(head: ChainHead, events: Vec<NewAuditEvent>) -> (Vec<AuditEvent>, ChainHead) {
    let mut current = head;
    let chained = events
        .into_iter()
        .map(|event| {
            let sequence = current.sequence + 1;
            let hash = event_hash(&current.hash, sequence, &encode_content(&event));
            let chained = AuditEvent {
                sequence,
                event,
                previous_hash: current.hash,
                hash,
            };
            current = ChainHead { sequence, hash };
            chained
        })
        .collect();
    (chained, current)
}

/// Places new events after `head` as stored rows, encoding each event's content once; returns
/// the rows and the new head. This is what the audit writer appends.
pub fn chain_rows<'a>(
    head: ChainHead,
    events: impl IntoIterator<Item = &'a NewAuditEvent>,
) -> (Vec<crate::store::AuditRow>, ChainHead) {
    let mut current = head;
    let rows = events
        .into_iter()
        .map(|event| {
            let sequence = current.sequence + 1;
            let content = encode_content(event);
            let hash = event_hash(&current.hash, sequence, &content);
            let row = crate::store::AuditRow {
                sequence,
                previous_hash: current.hash,
                hash,
                content,
            };
            current = ChainHead { sequence, hash };
            row
        })
        .collect();
    (rows, current)
}

/// The result of verifying a range of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Events that verified, in order, before any break.
    pub verified: u64,
    /// The first sequence number that does not verify, with why; `None` when intact.
    pub broken: Option<(u64, String)>,
    /// The last verified event.
    pub head: ChainHead,
}

impl Verification {
    /// True when nothing broke.
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verifies stored events in sequence order, starting after `start` (the event before the
/// range, or `ChainHead::EMPTY`), as (sequence, previous hash, content bytes, stored hash).
/// When `anchor` (the head the store keeps apart) is given and the range reaches the end, a
/// chain that stops short of it, or ends elsewhere, is broken at the first missing sequence.
pub fn verify<'a>(
    start: ChainHead,
    events: impl IntoIterator<Item = (u64, [u8; 32], &'a [u8], [u8; 32])>,
    anchor: Option<ChainHead>,
) -> Verification {
    let mut head = start;
    let mut verified = 0;
    for (sequence, previous_hash, content, stored_hash) in events {
        let expected = head.sequence + 1;
        let broken = |why: &str| Verification {
            verified,
            broken: Some((expected, why.to_owned())),
            head,
        };
        if sequence != expected {
            return broken(&format!("event {expected} is missing (found {sequence})"));
        }
        if previous_hash != head.hash {
            return broken("previous hash does not match the event before");
        }
        if decode_content(content).is_err() {
            return broken("content does not decode");
        }
        if event_hash(&previous_hash, sequence, content) != stored_hash {
            return broken("hash does not match the content");
        }
        head = ChainHead {
            sequence,
            hash: stored_hash,
        };
        verified += 1;
    }
    if let Some(anchor) = anchor {
        if head.sequence < anchor.sequence {
            let missing = head.sequence + 1;
            return Verification {
                verified,
                broken: Some((
                    missing,
                    format!("events {missing} to {} are missing", anchor.sequence),
                )),
                head,
            };
        }
        if head != anchor {
            return Verification {
                verified,
                broken: Some((
                    head.sequence,
                    "the chain head does not match its anchor".into(),
                )),
                head,
            };
        }
    }
    Verification {
        verified,
        broken: None,
        head,
    }
}

/// Rows read per store call while verifying.
const VERIFY_PAGE: usize = 10_000;

/// Verifies the stored chain from `from` to `to` (inclusive; 0 means the first / the last
/// event), page by page. When the range reaches the end of the chain, the anchored head is
/// checked too, so events cut off the end are found.
pub fn verify_store(
    store: &dyn crate::store::Store,
    from: u64,
    to: u64,
) -> crate::store::StoreResult<Verification> {
    let anchor = store.audit_head()?;
    let from = from.max(1);
    let to = if to == 0 { u64::MAX } else { to };
    let start = if from == 1 {
        ChainHead::EMPTY
    } else {
        match store.audit_rows(from - 1, from - 1, 1)?.pop() {
            Some(row) => ChainHead {
                sequence: row.sequence,
                hash: row.hash,
            },
            None => {
                return Ok(Verification {
                    verified: 0,
                    broken: Some((from - 1, format!("event {} is missing", from - 1))),
                    head: ChainHead {
                        sequence: from - 1,
                        hash: GENESIS,
                    },
                });
            }
        }
    };
    let mut total = Verification {
        verified: 0,
        broken: None,
        head: start,
    };
    let mut next = from;
    loop {
        let rows = store.audit_rows(next, to, VERIFY_PAGE)?;
        let last_page = rows.len() < VERIFY_PAGE;
        let reaches_end = last_page && to >= anchor.sequence;
        let page = verify(
            total.head,
            rows.iter()
                .map(|r| (r.sequence, r.previous_hash, r.content.as_slice(), r.hash)),
            reaches_end.then_some(anchor),
        );
        total.verified += page.verified;
        total.head = page.head;
        if page.broken.is_some() || last_page {
            total.broken = page.broken;
            return Ok(total);
        }
        next = total.head.sequence + 1;
    }
}

impl std::fmt::Display for ChainHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.sequence, hex(&self.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(i: u32) -> NewAuditEvent {
        NewAuditEvent {
            at_micros: 1_764_000_000_000_000 + i64::from(i),
            principal: "clinician:13-0001:1310123458".into(),
            action: "FindLocations".into(),
            purpose: 1,
            person_key: i.is_multiple_of(2).then_some(PersonKey([i as u8; 16])),
            outcome: "ok".into(),
            count: i,
            emergency: i.is_multiple_of(5),
            emergency_reason: if i.is_multiple_of(5) {
                "意識障害で搬送".into()
            } else {
                String::new()
            },
            deciding_consents: vec![format!("consent-{i}")],
        }
    }

    type Stored = Vec<(u64, [u8; 32], Vec<u8>, [u8; 32])>;

    fn stored(count: u32) -> (Stored, ChainHead) {
        let (events, head) = chain(ChainHead::EMPTY, (1..=count).map(event).collect());
        let rows = events
            .iter()
            .map(|e| {
                (
                    e.sequence,
                    e.previous_hash,
                    encode_content(&e.event),
                    e.hash,
                )
            })
            .collect();
        (rows, head)
    }

    fn check(rows: &Stored, anchor: Option<ChainHead>) -> Verification {
        verify(
            ChainHead::EMPTY,
            rows.iter().map(|(s, p, c, h)| (*s, *p, c.as_slice(), *h)),
            anchor,
        )
    }

    #[test]
    fn an_untouched_chain_verifies_to_its_anchor() {
        let (rows, head) = stored(10);
        let result = check(&rows, Some(head));
        assert!(result.intact(), "{result:?}");
        assert_eq!((result.verified, result.head), (10, head));
        let (more, next) = chain(head, vec![event(11)]);
        assert_eq!(more[0].previous_hash, head.hash);
        assert_eq!(next.sequence, 11);
    }

    #[test]
    fn every_flipped_byte_breaks_the_chain_at_its_event() {
        let (rows, head) = stored(6);
        for target in 0..rows.len() {
            for byte in 0..rows[target].2.len() {
                let mut tampered = rows.clone();
                tampered[target].2[byte] ^= 0x01;
                let result = check(&tampered, Some(head));
                assert_eq!(
                    result.broken.as_ref().map(|b| b.0),
                    Some(target as u64 + 1),
                    "event {target} byte {byte}"
                );
            }
        }
    }

    #[test]
    fn removed_and_reordered_events_are_found() {
        let (rows, head) = stored(5);
        let mut without_last = rows.clone();
        without_last.pop();
        assert_eq!(
            check(&without_last, Some(head)).broken.map(|b| b.0),
            Some(5),
            "the anchor catches a cut tail"
        );
        assert!(
            check(&without_last, None).intact(),
            "without the anchor a cut tail is invisible"
        );
        let mut without_middle = rows.clone();
        without_middle.remove(2);
        assert_eq!(
            check(&without_middle, Some(head)).broken.map(|b| b.0),
            Some(3)
        );
        let mut swapped = rows;
        swapped.swap(1, 2);
        assert_eq!(check(&swapped, Some(head)).broken.map(|b| b.0), Some(2));
    }

    proptest! {
        #[test]
        fn contents_round_trip(at in any::<i64>(), count in any::<u32>(), purpose in any::<u8>(), texts in proptest::collection::vec(".{0,12}", 4)) {
            let event = NewAuditEvent {
                at_micros: at,
                principal: texts[0].clone(),
                action: texts[1].clone(),
                purpose,
                person_key: Some(PersonKey([purpose; 16])),
                outcome: texts[2].clone(),
                count,
                emergency: count.is_multiple_of(2),
                emergency_reason: texts[3].clone(),
                deciding_consents: texts.clone(),
            };
            prop_assert_eq!(decode_content(&encode_content(&event)).unwrap(), event);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_content(&bytes);
        }
    }
}
