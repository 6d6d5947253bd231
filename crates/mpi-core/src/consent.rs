//! Consents (同意), their revocation (撤回) and opt-outs (オプトアウト), and the disclosure rule
//! of DESIGN.md §2 that decides, for every read, what a caller may see. Default deny.
//!
//! Consents are append-only: a revocation is a new state of the stored consent, never a
//! deletion, so the full history stays. A consent is attached to the person reference that the
//! patient resolved to when it was recorded (its *subject*); a person's consents are those of
//! every reference in its cluster.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::{FacilityCode, NetworkId};
use crate::location::RecordKind;
use crate::store::{StoreError, StoreResult};

/// Why patient data is asked for (purpose of use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Care of the patient by the requesting clinician.
    Treatment,
    /// Emergency care.
    Emergency,
    /// Coordination between facilities.
    CareCoordination,
    /// The patient's own request through an operator.
    PatientRequest,
    /// Maintaining the identity index.
    IdentityManagement,
    /// Audit and oversight.
    Audit,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 6] = [
        Self::Treatment,
        Self::Emergency,
        Self::CareCoordination,
        Self::PatientRequest,
        Self::IdentityManagement,
        Self::Audit,
    ];

    /// The API enum number.
    pub fn code(self) -> u8 {
        match self {
            Self::Treatment => 1,
            Self::Emergency => 2,
            Self::CareCoordination => 3,
            Self::PatientRequest => 4,
            Self::IdentityManagement => 5,
            Self::Audit => 6,
        }
    }

    /// From the API enum number.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|purpose| purpose.code() == code)
    }
}

/// Names one consent; random, shown to callers as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConsentId(pub [u8; 16]);

impl ConsentId {
    /// A fresh random ID.
    pub fn random() -> Self {
        Self(crate::keys::PersonKey::random().0)
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        crate::keys::hex(&self.0)
    }

    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        crate::store::MergeId::parse(text).map(|id| Self(id.0))
    }
}

/// Whose pointers a disclosure consent lets be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceNetworks {
    /// Only the network the consent was given to.
    Recording,
    /// These networks.
    Listed(Vec<NetworkId>),
    /// Every network.
    All,
}

/// Who may retrieve under a disclosure consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Any facility in any network.
    AnyFacility,
    /// Facilities of these networks.
    Networks(Vec<NetworkId>),
    /// These facilities.
    Facilities(Vec<FacilityCode>),
}

/// The scope of a disclosure consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureScope {
    /// Whose pointers.
    pub sources: SourceNetworks,
    /// To whom.
    pub recipients: Recipients,
    /// Which kinds; empty means every kind.
    pub kinds: Vec<RecordKind>,
    /// Which purposes; empty means every purpose except emergency.
    pub purposes: Vec<Purpose>,
}

/// What a consent grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentGrant {
    /// The patient lets the network index their records and link their regional ID.
    Participation {
        /// The network.
        network: NetworkId,
    },
    /// Whose pointers may be shown to whom.
    Disclosure {
        /// The network the consent was given to.
        network: NetworkId,
        /// The scope.
        scope: DisclosureScope,
    },
    /// Global dissent: overrides every grant, emergency included.
    OptOut,
}

impl ConsentGrant {
    /// The network the consent was given to (none for an opt-out).
    pub fn network(&self) -> Option<NetworkId> {
        match self {
            Self::Participation { network } | Self::Disclosure { network, .. } => Some(*network),
            Self::OptOut => None,
        }
    }
}

/// Who revoked a consent, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The principal, as `role:binding`.
    pub by: String,
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The stated reason.
    pub reason: String,
    /// The network's pointers and links for the patient were deleted with it.
    pub purged: bool,
}

/// A stored consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Its ID.
    pub id: ConsentId,
    /// What it grants.
    pub grant: ConsentGrant,
    /// First day in force.
    pub valid_from: NaiveDate,
    /// Last day in force, if it ends.
    pub valid_until: Option<NaiveDate>,
    /// The consent form or document ID.
    pub evidence: String,
    /// The principal that recorded it.
    pub recorded_by: String,
    /// When, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The revocation, once revoked.
    pub revocation: Option<Revocation>,
}

/// The state of a consent on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    /// Not revoked and not past its end (it may not have begun yet).
    Active,
    /// Revoked.
    Revoked,
    /// Past its last day.
    Expired,
}

impl Consent {
    /// Its state on `today`.
    pub fn status(&self, today: NaiveDate) -> ConsentStatus {
        if self.revocation.is_some() {
            ConsentStatus::Revoked
        } else if self.valid_until.is_some_and(|until| until < today) {
            ConsentStatus::Expired
        } else {
            ConsentStatus::Active
        }
    }

    /// True when it decides anything on `today`: not revoked, begun and not ended.
    pub fn in_force(&self, today: NaiveDate) -> bool {
        self.status(today) == ConsentStatus::Active && self.valid_from <= today
    }
}

/// The opt-out in force on `today`, if any.
pub fn opt_out(consents: &[Consent], today: NaiveDate) -> Option<&Consent> {
    consents
        .iter()
        .find(|c| matches!(c.grant, ConsentGrant::OptOut) && c.in_force(today))
}

/// The participation consent for `network` in force on `today`, if any. An opt-out in force
/// withdraws every participation.
pub fn participation(
    consents: &[Consent],
    network: NetworkId,
    today: NaiveDate,
) -> Option<&Consent> {
    if opt_out(consents, today).is_some() {
        return None;
    }
    consents.iter().find(|c| {
        c.in_force(today)
            && matches!(c.grant, ConsentGrant::Participation { network: n } if n == network)
    })
}

/// Who asks, for what, and whether the server honours the emergency bypass.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    /// The caller's network.
    pub network: NetworkId,
    /// The caller's facility (clinicians only).
    pub facility: Option<FacilityCode>,
    /// The stated purpose.
    pub purpose: Purpose,
    /// The purpose is emergency, a reason was stated, and the server allows the bypass.
    pub emergency_bypass: bool,
}

/// Why something was disclosed: the consents that decided it, and whether the emergency bypass
/// was what allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The consents that decided it (participation, and the grant when one was needed).
    pub deciding: Vec<ConsentId>,
    /// The emergency bypass stood in for a disclosure grant.
    pub by_emergency: bool,
}

fn grant_covers(
    consent: &Consent,
    source: NetworkId,
    kind: Option<RecordKind>,
    requester: &Requester,
) -> bool {
    let ConsentGrant::Disclosure { network, scope } = &consent.grant else {
        return false;
    };
    let source_ok = match &scope.sources {
        SourceNetworks::Recording => *network == source,
        SourceNetworks::Listed(networks) => networks.contains(&source),
        SourceNetworks::All => true,
    };
    let recipient_ok = match &scope.recipients {
        Recipients::AnyFacility => true,
        Recipients::Networks(networks) => networks.contains(&requester.network),
        Recipients::Facilities(facilities) => requester
            .facility
            .is_some_and(|facility| facilities.contains(&facility)),
    };
    // A disclosure that is not about one record kind (a regional ID) needs a grant for every kind.
    let kind_ok = match kind {
        Some(kind) => scope.kinds.is_empty() || scope.kinds.contains(&kind),
        None => scope.kinds.is_empty(),
    };
    let purpose_ok = if scope.purposes.is_empty() {
        requester.purpose != Purpose::Emergency
    } else {
        scope.purposes.contains(&requester.purpose)
    };
    source_ok && recipient_ok && kind_ok && purpose_ok
}

/// The disclosure rule (DESIGN.md §2): may data that `source` holds (of `kind`, or not about one
/// kind) be shown to `requester` on `today`? No opt-out in force; a participation for the
/// source in force; and either the requester is in the source network, or a disclosure grant in
/// force covers source, requester, kind and purpose, or the emergency bypass applies (never
/// against an opt-out or without participation).
pub fn decide(
    consents: &[Consent],
    source: NetworkId,
    kind: Option<RecordKind>,
    requester: &Requester,
    today: NaiveDate,
) -> Option<Allowed> {
    let participation = participation(consents, source, today)?;
    let mut deciding = vec![participation.id];
    if requester.network == source {
        return Some(Allowed {
            deciding,
            by_emergency: false,
        });
    }
    if let Some(grant) = consents
        .iter()
        .find(|c| c.in_force(today) && grant_covers(c, source, kind, requester))
    {
        deciding.push(grant.id);
        return Some(Allowed {
            deciding,
            by_emergency: false,
        });
    }
    requester.emergency_bypass.then_some(Allowed {
        deciding,
        by_emergency: true,
    })
}

/// The byte encoding of consents (JSON: consents are few and small, and the encoding is easy to
/// inspect and to evolve).
pub mod codec {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct StoredScope {
        sources: String,
        source_networks: Vec<String>,
        recipients: String,
        recipient_ids: Vec<String>,
        kinds: Vec<u8>,
        purposes: Vec<u8>,
    }

    #[derive(Serialize, Deserialize)]
    struct StoredRevocation {
        by: String,
        at: i64,
        reason: String,
        purged: bool,
    }

    #[derive(Serialize, Deserialize)]
    struct StoredConsent {
        v: u8,
        kind: String,
        network: Option<String>,
        scope: Option<StoredScope>,
        from: String,
        until: Option<String>,
        evidence: String,
        recorded_by: String,
        recorded_at: i64,
        revocation: Option<StoredRevocation>,
    }

    fn strings<T: ToString>(items: &[T]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    /// The first byte of a consent stored by [`value`]: version 2, postcard. Version 1 was
    /// JSON (it begins with `{`) and still decodes; decoding JSON was ≈ 1 µs per consent, a
    /// few per cent of a FindLocations (docs/benchmarks.md).
    const POSTCARD: u8 = 2;

    /// The stored bytes of a consent (its ID is the key).
    pub fn value(consent: &Consent) -> Vec<u8> {
        // Serializing plain strings, numbers and vectors cannot fail.
        postcard::to_extend(&stored(consent, POSTCARD), vec![POSTCARD]).unwrap_or_default()
    }

    /// A consent as version 1 stored it, for the tests of old stores.
    #[cfg(test)]
    pub(crate) fn value_v1(consent: &Consent) -> Vec<u8> {
        serde_json::to_vec(&stored(consent, 1)).unwrap_or_default()
    }

    fn stored(consent: &Consent, v: u8) -> StoredConsent {
        let (kind, network, scope) = match &consent.grant {
            ConsentGrant::Participation { network } => ("participation", Some(network), None),
            ConsentGrant::Disclosure { network, scope } => {
                let (sources, source_networks) = match &scope.sources {
                    SourceNetworks::Recording => ("recording", Vec::new()),
                    SourceNetworks::Listed(list) => ("listed", strings(list)),
                    SourceNetworks::All => ("all", Vec::new()),
                };
                let (recipients, recipient_ids) = match &scope.recipients {
                    Recipients::AnyFacility => ("any", Vec::new()),
                    Recipients::Networks(list) => ("networks", strings(list)),
                    Recipients::Facilities(list) => ("facilities", strings(list)),
                };
                let stored = StoredScope {
                    sources: sources.into(),
                    source_networks,
                    recipients: recipients.into(),
                    recipient_ids,
                    kinds: scope.kinds.iter().map(|k| k.code()).collect(),
                    purposes: scope.purposes.iter().map(|p| p.code()).collect(),
                };
                ("disclosure", Some(network), Some(stored))
            }
            ConsentGrant::OptOut => ("opt_out", None, None),
        };
        StoredConsent {
            v,
            kind: kind.into(),
            network: network.map(ToString::to_string),
            scope,
            from: consent.valid_from.to_string(),
            until: consent.valid_until.map(|d| d.to_string()),
            evidence: consent.evidence.clone(),
            recorded_by: consent.recorded_by.clone(),
            recorded_at: consent.recorded_at_micros,
            revocation: consent.revocation.as_ref().map(|r| StoredRevocation {
                by: r.by.clone(),
                at: r.at_micros,
                reason: r.reason.clone(),
                purged: r.purged,
            }),
        }
    }

    fn corrupt(what: &str) -> StoreError {
        StoreError::Corrupt(format!("consent {what}"))
    }

    fn networks(list: &[String]) -> StoreResult<Vec<NetworkId>> {
        list.iter()
            .map(|n| NetworkId::parse(n).map_err(|_| corrupt("network")))
            .collect()
    }

    fn date(text: &str) -> StoreResult<NaiveDate> {
        crate::dates::parse_date(text).map_err(|_| corrupt("date"))
    }

    /// Decodes a stored consent, rejecting anything malformed.
    pub fn decode(id: ConsentId, bytes: &[u8]) -> StoreResult<Consent> {
        let stored: StoredConsent = match bytes.split_first() {
            Some((&POSTCARD, rest)) => {
                let (stored, rest) = postcard::take_from_bytes::<StoredConsent>(rest)
                    .map_err(|_| corrupt("encoding"))?;
                if !rest.is_empty() || stored.v != POSTCARD {
                    return Err(corrupt("encoding"));
                }
                stored
            }
            Some((b'{', _)) => {
                let stored: StoredConsent =
                    serde_json::from_slice(bytes).map_err(|_| corrupt("json"))?;
                if stored.v != 1 {
                    return Err(corrupt("version"));
                }
                stored
            }
            _ => return Err(corrupt("encoding")),
        };
        let network = stored
            .network
            .as_deref()
            .map(|n| NetworkId::parse(n).map_err(|_| corrupt("network")))
            .transpose()?;
        let grant = match (stored.kind.as_str(), network, stored.scope) {
            ("participation", Some(network), None) => ConsentGrant::Participation { network },
            ("opt_out", None, None) => ConsentGrant::OptOut,
            ("disclosure", Some(network), Some(scope)) => {
                let sources = match scope.sources.as_str() {
                    "recording" => SourceNetworks::Recording,
                    "listed" => SourceNetworks::Listed(networks(&scope.source_networks)?),
                    "all" => SourceNetworks::All,
                    _ => return Err(corrupt("sources")),
                };
                let recipients = match scope.recipients.as_str() {
                    "any" => Recipients::AnyFacility,
                    "networks" => Recipients::Networks(networks(&scope.recipient_ids)?),
                    "facilities" => Recipients::Facilities(
                        scope
                            .recipient_ids
                            .iter()
                            .map(|f| FacilityCode::parse(f).map_err(|_| corrupt("facility")))
                            .collect::<StoreResult<_>>()?,
                    ),
                    _ => return Err(corrupt("recipients")),
                };
                let kinds = scope
                    .kinds
                    .iter()
                    .map(|k| RecordKind::from_code(*k).ok_or_else(|| corrupt("kind")))
                    .collect::<StoreResult<_>>()?;
                let purposes = scope
                    .purposes
                    .iter()
                    .map(|p| Purpose::from_code(*p).ok_or_else(|| corrupt("purpose")))
                    .collect::<StoreResult<_>>()?;
                ConsentGrant::Disclosure {
                    network,
                    scope: DisclosureScope {
                        sources,
                        recipients,
                        kinds,
                        purposes,
                    },
                }
            }
            _ => return Err(corrupt("kind")),
        };
        Ok(Consent {
            id,
            grant,
            valid_from: date(&stored.from)?,
            valid_until: stored.until.as_deref().map(date).transpose()?,
            evidence: stored.evidence,
            recorded_by: stored.recorded_by,
            recorded_at_micros: stored.recorded_at,
            revocation: stored.revocation.map(|r| Revocation {
                by: r.by,
                at_micros: r.at,
                reason: r.reason,
                purged: r.purged,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(text: &str) -> NetworkId {
        NetworkId::parse(text).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn consent(grant: ConsentGrant) -> Consent {
        Consent {
            id: ConsentId::random(),
            grant,
            valid_from: day(2024, 1, 1),
            valid_until: None,
            evidence: "form-1".into(),
            recorded_by: "operator:ops".into(),
            recorded_at_micros: 1,
            revocation: None,
        }
    }

    fn disclosure(network: &str, recipients: Recipients) -> Consent {
        consent(ConsentGrant::Disclosure {
            network: net(network),
            scope: DisclosureScope {
                sources: SourceNetworks::Recording,
                recipients,
                kinds: Vec::new(),
                purposes: Vec::new(),
            },
        })
    }

    fn clinician(network: &str, purpose: Purpose, bypass: bool) -> Requester {
        Requester {
            network: net(network),
            facility: Some(FacilityCode::parse("3410712362").unwrap()),
            purpose,
            emergency_bypass: bypass,
        }
    }

    #[test]
    fn default_deny_and_own_network() {
        let today = day(2025, 1, 1);
        let a = net("13-0001");
        let caller = clinician("14-0001", Purpose::Treatment, false);
        assert!(decide(&[], a, None, &caller, today).is_none());
        let participation = consent(ConsentGrant::Participation { network: a });
        let consents = vec![participation.clone()];
        assert!(decide(&consents, a, None, &caller, today).is_none());
        let own = clinician("13-0001", Purpose::Treatment, false);
        let allowed = decide(&consents, a, None, &own, today).unwrap();
        assert_eq!(allowed.deciding, vec![participation.id]);
    }

    #[test]
    fn grants_kinds_purposes_expiry_and_opt_out() {
        let today = day(2025, 1, 1);
        let a = net("13-0001");
        let caller = clinician("14-0001", Purpose::Treatment, false);
        let mut consents = vec![
            consent(ConsentGrant::Participation { network: a }),
            disclosure("13-0001", Recipients::Networks(vec![net("14-0001")])),
        ];
        assert!(decide(&consents, a, Some(RecordKind::Checkup), &caller, today).is_some());
        let other = clinician("15-0001", Purpose::Treatment, false);
        assert!(decide(&consents, a, Some(RecordKind::Checkup), &other, today).is_none());
        let emergency = clinician("14-0001", Purpose::Emergency, false);
        assert!(decide(&consents, a, Some(RecordKind::Checkup), &emergency, today).is_none());
        let bypass = clinician("15-0001", Purpose::Emergency, true);
        assert!(
            decide(&consents, a, Some(RecordKind::Checkup), &bypass, today)
                .unwrap()
                .by_emergency
        );
        if let ConsentGrant::Disclosure { scope, .. } = &mut consents[1].grant {
            scope.kinds = vec![RecordKind::Prescription];
        }
        assert!(decide(&consents, a, Some(RecordKind::Checkup), &caller, today).is_none());
        assert!(decide(&consents, a, Some(RecordKind::Prescription), &caller, today).is_some());
        assert!(decide(&consents, a, None, &caller, today).is_none());
        consents[1].valid_until = Some(day(2024, 12, 31));
        assert_eq!(consents[1].status(today), ConsentStatus::Expired);
        assert!(decide(&consents, a, Some(RecordKind::Prescription), &caller, today).is_none());
        consents.push(consent(ConsentGrant::OptOut));
        let own = clinician("13-0001", Purpose::Treatment, false);
        assert!(decide(&consents, a, None, &own, today).is_none());
        assert!(decide(&consents, a, None, &bypass, today).is_none());
    }

    #[test]
    fn codec_round_trips_every_shape() {
        let mut revoked = disclosure(
            "13-0001",
            Recipients::Facilities(vec![FacilityCode::parse("1840140055").unwrap()]),
        );
        revoked.revocation = Some(Revocation {
            by: "network:13-0001".into(),
            at_micros: 5,
            reason: "patient asked".into(),
            purged: false,
        });
        revoked.valid_until = Some(day(2030, 3, 31));
        let all = consent(ConsentGrant::Disclosure {
            network: net("13-0001"),
            scope: DisclosureScope {
                sources: SourceNetworks::Listed(vec![net("13-0001"), net("14-0002")]),
                recipients: Recipients::AnyFacility,
                kinds: vec![RecordKind::Checkup],
                purposes: vec![Purpose::Emergency, Purpose::Treatment],
            },
        });
        for original in [
            consent(ConsentGrant::OptOut),
            consent(ConsentGrant::Participation {
                network: net("00-0001"),
            }),
            revoked,
            all,
        ] {
            let bytes = codec::value(&original);
            assert_eq!(bytes[0], 2, "version 2");
            assert_eq!(codec::decode(original.id, &bytes).unwrap(), original);
            assert!(codec::decode(original.id, &bytes[..bytes.len() - 1]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(
                codec::decode(original.id, &longer).is_err(),
                "trailing bytes"
            );
            // What version 1 stored still decodes, and to the same consent.
            let v1 = codec::value_v1(&original);
            assert_eq!(v1[0], b'{');
            assert_eq!(codec::decode(original.id, &v1).unwrap(), original);
            assert!(codec::decode(original.id, &v1[..v1.len() - 1]).is_err());
        }
        assert!(codec::decode(ConsentId([0; 16]), b"{}").is_err());
        assert!(codec::decode(ConsentId([0; 16]), b"").is_err());
        assert!(codec::decode(ConsentId([0; 16]), &[2]).is_err());
        assert!(codec::decode(ConsentId([0; 16]), &[3, 1]).is_err());
    }
}
