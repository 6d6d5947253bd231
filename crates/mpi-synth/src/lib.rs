//! Synthetic populations: people with life histories from 2009 to a horizon date, the
//! insured-number history feed the history provider would send for them, and the ground truth
//! the tests check the MPI against. Nothing here describes a real person: names are common
//! ones drawn at random, numbers are invented (with valid check digits), and the same seed
//! always gives the same population.
//!
//! The histories cover the cases where hash-based linkage fails (DOMAIN.md §1): job changes
//! between 協会けんぽ, 健保組合 and 共済; retirement into 市町村国保 (6-digit insurer numbers);
//! 後期高齢者医療 at 75; marriage with a change of family name and, for some, a move onto the
//! spouse's insurance as a dependent; families sharing a household number before the 2021
//! 枝番, same-sex twins among them; deaths.

pub mod names;
pub mod records;

use std::collections::BTreeMap;
use std::io::{self, Write};

use chrono::{Datelike, Days, Months, NaiveDate};
use mpi_core::ids::InsuredId;
use mpi_core::ids::luhn::check_digit;
use mpi_core::qualification::{ReasonOfLoss, Sex};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use names::{FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, RecordedName, record_name};

/// The first day of the histories.
pub const HISTORY_START: NaiveDate = date(2009, 1, 1);
/// From this day on every insured ID carries a personal 枝番 (except 後期高齢者医療).
pub const BRANCH_START: NaiveDate = date(2021, 4, 1);

const fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => date,
        None => NaiveDate::MIN,
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Exactly this many persons.
    pub persons: usize,
    /// The seed; the same seed and horizon give the same output.
    pub seed: u64,
    /// The horizon: histories run until this day (inclusive); periods still held are open.
    pub until: NaiveDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsurerKind {
    Kyokai,
    Kenpo,
    Kyosai,
    Kokuho,
    LateElderly,
}

#[derive(Debug)]
struct Insurer {
    /// As written: 8 digits, or 6 for 国保.
    number: String,
    kind: InsurerKind,
    symbols: Vec<String>,
    next_number: u64,
}

/// One insurance account: (insurer, 記号, 番号). A household shares one before 2021.
type Account = (usize, String, String);

#[derive(Debug, Clone)]
struct Spell {
    from: NaiveDate,
    /// Exclusive end; `None` while held at the horizon.
    to: Option<NaiveDate>,
    account: Account,
    ended_by: Option<ReasonOfLoss>,
}

/// One person of the population, with the ground truth about them.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// The history provider's reference.
    pub reference: String,
    /// Birth date.
    #[serde(serialize_with = "iso_date")]
    pub birth_date: NaiveDate,
    /// Sex.
    #[serde(serialize_with = "sex_code")]
    pub sex: Sex,
    /// Household number in the simulation (not an identifier of anything real).
    pub household: u32,
    /// The reference of a twin, if any.
    pub twin_of: Option<String>,
    /// Day of death, if before the horizon.
    #[serde(serialize_with = "optional_date")]
    pub died: Option<NaiveDate>,
    /// Day of a marriage that changed this person's family name, if by the horizon.
    #[serde(serialize_with = "optional_date")]
    pub married_on: Option<NaiveDate>,
    /// Every insured ID held, in order.
    pub holdings: Vec<Holding>,
}

impl Person {
    /// The holding by which the person can be named by their card on `day`: held that day and
    /// not ambiguous then.
    pub fn card_on(&self, day: NaiveDate) -> Option<usize> {
        self.holdings
            .iter()
            .position(|h| h.holds_on(day) && !h.ambiguous_on(day))
    }
}

/// One qualification period of one person: what the feed says, plus the truth about it.
#[derive(Debug, Clone, Serialize)]
pub struct Holding {
    /// 保険者番号 as the feed writes it (6-digit 国保 numbers sometimes space-padded).
    pub insurer_number: String,
    /// 記号 as written.
    pub symbol: String,
    /// 番号 as written (sometimes in full-width digits).
    pub number: String,
    /// 枝番, empty before 2021 and for 後期高齢者医療.
    pub branch: String,
    /// First day held.
    #[serde(serialize_with = "iso_date")]
    pub start: NaiveDate,
    /// Last day held, if it ended by the horizon.
    #[serde(serialize_with = "optional_date")]
    pub end: Option<NaiveDate>,
    /// Why it ended.
    #[serde(serialize_with = "reason_code")]
    pub reason_of_loss: Option<ReasonOfLoss>,
    /// How the insurer's system wrote the person's name.
    pub recorded_name: RecordedName,
    /// Day spans (inclusive) on which another person with the same birth date and sex held the
    /// same household-level number: resolution must answer "ambiguous" there.
    pub ambiguous: Vec<(String, String)>,
}

impl Holding {
    /// The insured ID (it is valid by construction).
    pub fn insured_id(&self) -> Option<InsuredId> {
        InsuredId::from_parts(
            &self.insurer_number,
            &self.symbol,
            &self.number,
            &self.branch,
        )
        .ok()
    }

    /// True when the day lies in the period.
    pub fn holds_on(&self, day: NaiveDate) -> bool {
        self.start <= day && self.end.is_none_or(|end| day <= end)
    }

    /// True when the day lies in one of the ambiguous spans.
    pub fn ambiguous_on(&self, day: NaiveDate) -> bool {
        let text = day.format("%Y-%m-%d").to_string();
        self.ambiguous
            .iter()
            .any(|(from, to)| from.as_str() <= text.as_str() && text.as_str() <= to.as_str())
    }
}

fn iso_date<S: serde::Serializer>(date: &NaiveDate, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&date.format("%Y-%m-%d").to_string())
}

fn optional_date<S: serde::Serializer>(
    date: &Option<NaiveDate>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match date {
        Some(date) => iso_date(date, serializer),
        None => serializer.serialize_none(),
    }
}

fn sex_code<S: serde::Serializer>(sex: &Sex, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(sex.code())
}

fn reason_code<S: serde::Serializer>(
    reason: &Option<ReasonOfLoss>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match reason {
        Some(reason) => serializer.serialize_u8(reason.code()),
        None => serializer.serialize_none(),
    }
}

/// A generated population.
#[derive(Debug)]
pub struct Population {
    /// Every person, in reference order.
    pub persons: Vec<Person>,
    /// The horizon.
    pub until: NaiveDate,
}

struct Builder {
    rng: ChaCha8Rng,
    until: NaiveDate,
    insurers: Vec<Insurer>,
    by_kind: BTreeMap<(u8, u8), Vec<usize>>,
    people: Vec<Draft>,
    account_members: BTreeMap<Account, Vec<usize>>,
}

struct Draft {
    birth: NaiveDate,
    sex: Sex,
    household: u32,
    prefecture: u8,
    family: usize,
    /// Family name index after marriage, from that day.
    married: Option<(NaiveDate, usize)>,
    given: (&'static str, &'static str),
    twin_of: Option<usize>,
    died: Option<NaiveDate>,
    spells: Vec<Spell>,
}

fn kind_code(kind: InsurerKind) -> u8 {
    match kind {
        InsurerKind::Kyokai => 0,
        InsurerKind::Kenpo => 1,
        InsurerKind::Kyosai => 2,
        InsurerKind::Kokuho => 3,
        InsurerKind::LateElderly => 4,
    }
}

fn add_years(day: NaiveDate, years: u32) -> NaiveDate {
    day.checked_add_months(Months::new(12 * years))
        .unwrap_or(day)
}

fn age_on(birth: NaiveDate, day: NaiveDate) -> i32 {
    let mut age = day.year() - birth.year();
    if (day.month(), day.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

fn with_check(body: &str) -> String {
    format!("{body}{}", check_digit(body.as_bytes()).unwrap_or(0))
}

fn full_width_digits(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

impl Builder {
    fn new(config: &Config) -> Self {
        let mut builder = Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            until: config.until,
            insurers: Vec::new(),
            by_kind: BTreeMap::new(),
            people: Vec::new(),
            account_members: BTreeMap::new(),
        };
        builder.make_insurers();
        builder
    }

    fn add_insurer(
        &mut self,
        kind: InsurerKind,
        prefecture: u8,
        number: String,
        symbols: Vec<String>,
    ) {
        self.by_kind
            .entry((kind_code(kind), prefecture))
            .or_default()
            .push(self.insurers.len());
        self.insurers.push(Insurer {
            number,
            kind,
            symbols,
            next_number: 1,
        });
    }

    /// Invented insurers with valid check digits: serials 900-999 keep them apart from the
    /// numbers of real insurers, which are assigned from the low end.
    fn make_insurers(&mut self) {
        for prefecture in 1u8..=47 {
            let symbols = (0..20)
                .map(|_| format!("{}", self.rng.random_range(10_000_000u32..99_999_999)))
                .collect();
            self.add_insurer(
                InsurerKind::Kyokai,
                prefecture,
                with_check(&format!("01{prefecture:02}901")),
                symbols,
            );
            for serial in 0..4u32 {
                let symbols = if serial == 3 {
                    vec!["カ".into(), "ミ".into(), "ソ".into()]
                } else {
                    (0..5)
                        .map(|_| format!("{}", self.rng.random_range(1u32..9_999)))
                        .collect()
                };
                let body = format!("06{prefecture:02}{}", 910 + serial);
                self.add_insurer(InsurerKind::Kenpo, prefecture, with_check(&body), symbols);
            }
            let houbetsu = 31 + u32::from(prefecture) % 4;
            let symbols = vec!["公立１".into(), "警察２".into(), "市町村３".into()];
            self.add_insurer(
                InsurerKind::Kyosai,
                prefecture,
                with_check(&format!("{houbetsu}{prefecture:02}950")),
                symbols,
            );
            for serial in 0..3u32 {
                let symbols = vec![format!("{:02}", serial + 1), "世田".into(), "北１".into()];
                let body = format!("{prefecture:02}{}", 960 + serial);
                self.add_insurer(InsurerKind::Kokuho, prefecture, with_check(&body), symbols);
            }
            self.add_insurer(
                InsurerKind::LateElderly,
                prefecture,
                with_check(&format!("39{prefecture:02}990")),
                vec![],
            );
        }
    }

    fn pick_insurer(&mut self, kind: InsurerKind, prefecture: u8) -> usize {
        let pool = self
            .by_kind
            .get(&(kind_code(kind), prefecture))
            .cloned()
            .unwrap_or_default();
        *pool.choose(&mut self.rng).unwrap_or(&0)
    }

    /// A new account (a new card) at an insurer of `kind`.
    fn new_account(&mut self, kind: InsurerKind, prefecture: u8) -> Account {
        let insurer = self.pick_insurer(kind, prefecture);
        let serial = self.insurers[insurer].next_number;
        self.insurers[insurer].next_number += 1;
        let symbols = self.insurers[insurer].symbols.clone();
        let symbol = symbols.choose(&mut self.rng).cloned().unwrap_or_default();
        let number = match kind {
            InsurerKind::LateElderly => format!("{:08}", 10_000_000 + serial * 7),
            InsurerKind::Kyokai => format!("{}", 1000 + serial),
            _ => format!("{}", 100 + serial),
        };
        (insurer, symbol, number)
    }

    fn random_day(&mut self, from: NaiveDate, to: NaiveDate) -> NaiveDate {
        let span = (to - from).num_days().max(1);
        from + Days::new(self.rng.random_range(0..span) as u64)
    }

    fn push_spell(
        &mut self,
        person: usize,
        from: NaiveDate,
        to: Option<NaiveDate>,
        account: Account,
        ended_by: Option<ReasonOfLoss>,
    ) {
        if to.is_some_and(|to| to <= from) {
            return;
        }
        let members = self.account_members.entry(account.clone()).or_default();
        if !members.contains(&person) {
            members.push(person);
        }
        self.people[person].spells.push(Spell {
            from,
            to,
            account,
            ended_by,
        });
    }

    /// The last day (exclusive) a person can hold anything: death, or past the horizon.
    fn life_end(&self, person: usize) -> Option<NaiveDate> {
        self.people[person].died
    }

    /// Own insurance from `from` until `to` (exclusive, `None` = the horizon): employment until
    /// retirement, then 国保, then 後期高齢者医療 at 75. `employed` false starts in 国保.
    fn career(&mut self, person: usize, from: NaiveDate, to: Option<NaiveDate>, employed: bool) {
        let birth = self.people[person].birth;
        let prefecture = self.people[person].prefecture;
        let retire = add_years(birth, self.rng.random_range(60..=65));
        let elderly = add_years(birth, 75);
        let horizon = self.until.succ_opt().unwrap_or(self.until);
        let stop = to.unwrap_or(horizon).min(horizon);
        let mut day = from;
        while day < stop {
            let (kind, next) = if day >= elderly {
                (InsurerKind::LateElderly, stop)
            } else if day >= retire || !employed {
                (InsurerKind::Kokuho, elderly.min(stop))
            } else {
                let years = -8.0 * (1.0 - self.rng.random::<f64>()).ln();
                let length = Days::new((years * 365.0).max(180.0) as u64);
                let kind = match self.rng.random_range(0..10) {
                    0..=4 => InsurerKind::Kyokai,
                    5..=7 => InsurerKind::Kenpo,
                    _ => InsurerKind::Kyosai,
                };
                (kind, (day + length).min(retire).min(stop))
            };
            let account = self.new_account(kind, prefecture);
            let ends = next < horizon;
            let reason = if !ends {
                None
            } else if self.life_end(person) == Some(next) {
                Some(ReasonOfLoss::Death)
            } else {
                Some(ReasonOfLoss::OtherInsurance)
            };
            self.push_spell(person, day, ends.then_some(next), account, reason);
            day = next;
        }
    }

    /// Coverage as a dependent of `earner` from `from` to `to`; where the earner has no
    /// account that can carry dependents (後期高齢者医療, death), the person gets 国保 alone.
    fn dependent(&mut self, person: usize, earner: usize, from: NaiveDate, to: Option<NaiveDate>) {
        let horizon = self.until.succ_opt().unwrap_or(self.until);
        let stop = to.unwrap_or(horizon).min(horizon);
        let earner_spells = self.people[earner].spells.clone();
        let mut day = from;
        for spell in earner_spells {
            let spell_end = spell.to.unwrap_or(horizon);
            let carries = self.insurers[spell.account.0].kind != InsurerKind::LateElderly;
            if !carries || spell_end <= day || spell.from >= stop {
                continue;
            }
            if spell.from > day {
                self.career(person, day, Some(spell.from), false);
                day = spell.from;
            }
            let until = spell_end.min(stop);
            let ends = until < horizon;
            let reason = if !ends {
                None
            } else if self.life_end(person) == Some(until) {
                Some(ReasonOfLoss::Death)
            } else {
                Some(ReasonOfLoss::OtherInsurance)
            };
            self.push_spell(
                person,
                day,
                ends.then_some(until),
                spell.account.clone(),
                reason,
            );
            day = until;
        }
        if day < stop {
            self.career(person, day, to, false);
        }
    }

    fn draft(
        &mut self,
        birth: NaiveDate,
        sex: Sex,
        household: u32,
        prefecture: u8,
        family: usize,
    ) -> usize {
        let given = match sex {
            Sex::Male => *MALE_NAMES.choose(&mut self.rng).unwrap_or(&MALE_NAMES[0]),
            _ => *FEMALE_NAMES
                .choose(&mut self.rng)
                .unwrap_or(&FEMALE_NAMES[0]),
        };
        let age_at_horizon = age_on(birth, self.until);
        let died = if age_at_horizon >= 60
            && self
                .rng
                .random_bool(f64::from((age_at_horizon - 55).min(40)) / 100.0)
        {
            let earliest = add_years(birth, 60).max(HISTORY_START);
            (earliest < self.until).then(|| self.random_day(earliest, self.until))
        } else {
            None
        };
        self.people.push(Draft {
            birth,
            sex,
            household,
            prefecture,
            family,
            married: None,
            given,
            twin_of: None,
            died,
            spells: Vec::new(),
        });
        self.people.len() - 1
    }

    fn random_sex(&mut self) -> Sex {
        if self.rng.random_bool(0.5) {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// One household of at most `room` persons.
    fn household(&mut self, household: u32, room: usize) {
        let prefecture = self.rng.random_range(1u8..=47);
        let earner_birth = self.random_day(date(1935, 1, 1), date(1992, 12, 31));
        let earner_sex = self.random_sex();
        let family = self.rng.random_range(0..FAMILY_NAMES.len());
        let earner = self.draft(earner_birth, earner_sex, household, prefecture, family);
        let death = |builder: &Self, person: usize| builder.people[person].died;
        let start = add_years(earner_birth, 22).max(HISTORY_START);
        self.career(earner, start, death(self, earner), true);
        if room == 1 || self.rng.random_bool(0.25) {
            return;
        }

        let partner_sex = if earner_sex == Sex::Male {
            Sex::Female
        } else {
            Sex::Male
        };
        let offset = self.rng.random_range(-1500i64..1500);
        let partner_birth = (earner_birth + chrono::Duration::days(offset)).min(date(1992, 12, 31));
        let partner_family = self.rng.random_range(0..FAMILY_NAMES.len());
        let partner = self.draft(
            partner_birth,
            partner_sex,
            household,
            prefecture,
            partner_family,
        );
        let younger = earner_birth.max(partner_birth);
        let marriage = add_years(younger, self.rng.random_range(24..=34))
            + Days::new(self.rng.random_range(0..365));
        let partner_start = add_years(partner_birth, 22).max(HISTORY_START);
        let partner_end = death(self, partner);
        let quits = self.rng.random_bool(0.5);
        if marriage <= self.until {
            self.people[partner].married = Some((marriage, family));
        }
        if marriage > self.until {
            // Not married by the horizon: two working adults who merely share a household here.
            self.career(partner, partner_start, partner_end, true);
        } else if marriage <= partner_start {
            if quits {
                self.dependent(partner, earner, partner_start, partner_end);
            } else {
                self.career(partner, partner_start, partner_end, true);
            }
        } else {
            // Marriage inside the history: the name changes, and some move onto the spouse's
            // insurance as a dependent on that very day.
            self.career(partner, partner_start, Some(marriage), true);
            if partner_end.is_none_or(|end| end > marriage) {
                if quits {
                    self.dependent(partner, earner, marriage, partner_end);
                } else {
                    self.career(partner, marriage, partner_end, true);
                }
            }
        }
        if marriage > self.until {
            return;
        }

        let mut children = 0;
        let wanted = self.rng.random_range(0..=3);
        let mother_birth = if earner_sex == Sex::Female {
            earner_birth
        } else {
            partner_birth
        };
        let mut birth = marriage + Days::new(self.rng.random_range(300..1500));
        while children < wanted
            && self.people.len() - earner < room
            && birth <= self.until
            && age_on(mother_birth, birth) <= 44
        {
            let twins = self.people.len() - earner + 1 < room && self.rng.random_bool(0.04);
            let sex = self.random_sex();
            let first = self.child(earner, birth, sex, household, prefecture, family);
            if twins {
                let twin_sex = if self.rng.random_bool(0.6) {
                    sex
                } else {
                    self.random_sex()
                };
                let second = self.child(earner, birth, twin_sex, household, prefecture, family);
                self.people[first].twin_of = Some(second);
                self.people[second].twin_of = Some(first);
            }
            children += 1;
            birth = birth + Days::new(self.rng.random_range(500..2000));
        }
    }

    fn child(
        &mut self,
        earner: usize,
        birth: NaiveDate,
        sex: Sex,
        household: u32,
        prefecture: u8,
        family: usize,
    ) -> usize {
        let child = self.draft(birth, sex, household, prefecture, family);
        let adult = add_years(birth, 22);
        let died = self.people[child].died;
        let from = birth.max(HISTORY_START);
        let dependent_until = died.map_or(adult, |died| died.min(adult));
        if dependent_until > from {
            self.dependent(child, earner, from, Some(dependent_until));
        }
        if died.is_none_or(|died| died > adult) {
            self.career(child, adult.max(HISTORY_START), died, true);
        }
        child
    }

    fn finish(mut self) -> Population {
        let mut persons = Vec::with_capacity(self.people.len());
        let people = std::mem::take(&mut self.people);
        for (index, draft) in people.iter().enumerate() {
            let mut holdings = Vec::new();
            for spell in &draft.spells {
                let (insurer_index, symbol, number) = &spell.account;
                let insurer = &self.insurers[*insurer_index];
                let branch = self
                    .account_members
                    .get(&spell.account)
                    .and_then(|members| members.iter().position(|member| *member == index))
                    .map(|position| format!("{position:02}"))
                    .unwrap_or_default();
                let personal = insurer.kind == InsurerKind::LateElderly;
                let to = spell.to;
                let mut pieces = Vec::new();
                if !personal && spell.from < BRANCH_START && to.is_none_or(|to| to > BRANCH_START) {
                    pieces.push((
                        spell.from,
                        Some(BRANCH_START),
                        String::new(),
                        Some(ReasonOfLoss::Other),
                    ));
                    pieces.push((BRANCH_START, to, branch, spell.ended_by));
                } else if personal || spell.from < BRANCH_START {
                    pieces.push((spell.from, to, String::new(), spell.ended_by));
                } else {
                    pieces.push((spell.from, to, branch, spell.ended_by));
                }
                for (from, to, branch, reason) in pieces {
                    let family = match draft.married {
                        Some((day, family)) if from >= day => family,
                        _ => draft.family,
                    };
                    let recorded_name = record_name(&mut self.rng, family, draft.given);
                    let insurer_number =
                        if insurer.kind == InsurerKind::Kokuho && self.rng.random_bool(0.2) {
                            format!("  {}", insurer.number)
                        } else {
                            insurer.number.clone()
                        };
                    let number =
                        if self.rng.random_bool(0.1) && symbol.chars().all(|c| !c.is_ascii()) {
                            full_width_digits(number)
                        } else if symbol.is_empty() || symbol.is_ascii() {
                            number.clone()
                        } else {
                            full_width_digits(number)
                        };
                    holdings.push(Holding {
                        insurer_number,
                        symbol: symbol.clone(),
                        number,
                        branch,
                        start: from,
                        end: to.and_then(|to| to.pred_opt()),
                        reason_of_loss: reason.filter(|_| to.is_some()),
                        recorded_name,
                        ambiguous: Vec::new(),
                    });
                }
            }
            persons.push(Person {
                reference: reference(index),
                birth_date: draft.birth,
                sex: draft.sex,
                household: draft.household,
                twin_of: draft.twin_of.map(reference),
                died: draft.died,
                married_on: draft.married.map(|(day, _)| day),
                holdings,
            });
        }
        mark_ambiguity(&mut persons);
        Population {
            persons,
            until: self.until,
        }
    }
}

fn reference(index: usize) -> String {
    format!("synth-{index:08}")
}

/// Marks the spans where two persons with the same birth date and sex held the same
/// household-level number at once.
fn mark_ambiguity(persons: &mut [Person]) {
    let mut groups: BTreeMap<(String, NaiveDate, u8), Vec<(usize, usize)>> = BTreeMap::new();
    for (p, person) in persons.iter().enumerate() {
        for (h, holding) in person.holdings.iter().enumerate() {
            let Some(id) = holding.insured_id() else {
                continue;
            };
            if !id.is_personal() {
                groups
                    .entry((
                        id.canonical().to_owned(),
                        person.birth_date,
                        person.sex.code(),
                    ))
                    .or_default()
                    .push((p, h));
            }
        }
    }
    for members in groups.values().filter(|members| members.len() > 1) {
        for (i, &(p, h)) in members.iter().enumerate() {
            for &(q, k) in &members[i + 1..] {
                if p == q {
                    continue;
                }
                let (a, b) = (&persons[p].holdings[h], &persons[q].holdings[k]);
                let from = a.start.max(b.start);
                let to = match (a.end, b.end) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                if to.is_none_or(|to| from <= to) {
                    let span_to = to.unwrap_or(NaiveDate::MAX).min(date(2199, 12, 31));
                    let span = (
                        from.format("%Y-%m-%d").to_string(),
                        span_to.format("%Y-%m-%d").to_string(),
                    );
                    persons[p].holdings[h].ambiguous.push(span.clone());
                    persons[q].holdings[k].ambiguous.push(span);
                }
            }
        }
    }
}

/// Generates a population.
pub fn generate(config: &Config) -> Population {
    let mut builder = Builder::new(config);
    let mut household = 0u32;
    while builder.people.len() < config.persons {
        let room = config.persons - builder.people.len();
        builder.household(household, room.min(6));
        household += 1;
    }
    builder.finish()
}

impl Population {
    /// Number of qualification records in the feed.
    pub fn record_count(&self) -> usize {
        self.persons
            .iter()
            .map(|person| person.holdings.len())
            .sum()
    }

    /// Writes the history feed as JSON Lines of `kouiki.mpi.v1.QualificationRecord` (proto3
    /// JSON, proto field names).
    pub fn write_feed(&self, out: &mut impl Write) -> io::Result<()> {
        for person in &self.persons {
            for holding in &person.holdings {
                serde_json::to_writer(&mut *out, &feed_record(person, holding))?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Writes the ground truth: one JSON object per person.
    pub fn write_truth(&self, out: &mut impl Write) -> io::Result<()> {
        for person in &self.persons {
            serde_json::to_writer(&mut *out, person)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Counts of the cases the population covers, for reports.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            persons: self.persons.len(),
            records: self.record_count(),
            ..Summary::default()
        };
        for person in &self.persons {
            summary.twins += usize::from(person.twin_of.is_some());
            summary.deaths += usize::from(person.died.is_some());
            let insurers: std::collections::BTreeSet<&str> = person
                .holdings
                .iter()
                .map(|h| h.insurer_number.trim())
                .collect();
            summary.insurer_changes += usize::from(insurers.len() > 1);
            summary.kokuho += usize::from(
                person
                    .holdings
                    .iter()
                    .any(|h| h.insurer_number.trim().len() == 6),
            );
            summary.late_elderly += usize::from(
                person
                    .holdings
                    .iter()
                    .any(|h| h.insurer_number.starts_with("39")),
            );
            summary.ambiguous_records += person
                .holdings
                .iter()
                .filter(|h| !h.ambiguous.is_empty())
                .count();
        }
        summary
    }
}

/// What a population contains.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Persons.
    pub persons: usize,
    /// Feed records.
    pub records: usize,
    /// Persons who are twins.
    pub twins: usize,
    /// Persons who died before the horizon.
    pub deaths: usize,
    /// Persons with more than one insurer.
    pub insurer_changes: usize,
    /// Persons with a 国保 period.
    pub kokuho: usize,
    /// Persons with a 後期高齢者医療 period.
    pub late_elderly: usize,
    /// Records with an ambiguous span.
    pub ambiguous_records: usize,
}

fn feed_record(person: &Person, holding: &Holding) -> serde_json::Value {
    let mut record = serde_json::json!({
        "provider_person_ref": person.reference,
        "insured_id": {"parts": {
            "insurer_number": holding.insurer_number,
            "symbol": holding.symbol,
            "number": holding.number,
            "branch": holding.branch,
        }},
        "qualification_start": holding.start.format("%Y-%m-%d").to_string(),
        "birth_date": person.birth_date.format("%Y-%m-%d").to_string(),
        "sex": match person.sex { Sex::Male => "SEX_MALE", Sex::Female => "SEX_FEMALE", Sex::NotRecorded => "SEX_NOT_RECORDED" },
    });
    if let Some(end) = holding.end {
        record["qualification_end"] = end.format("%Y-%m-%d").to_string().into();
    }
    if let Some(reason) = holding.reason_of_loss {
        record["reason_of_loss"] = match reason {
            ReasonOfLoss::Death => "REASON_OF_LOSS_DEATH",
            ReasonOfLoss::Welfare => "REASON_OF_LOSS_WELFARE",
            ReasonOfLoss::OtherInsurance => "REASON_OF_LOSS_OTHER_INSURANCE",
            ReasonOfLoss::Other => "REASON_OF_LOSS_OTHER",
        }
        .into();
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(persons: usize, seed: u64) -> Config {
        Config {
            persons,
            seed,
            until: date(2026, 11, 1),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_output() {
        let feed = |seed| {
            let mut out = Vec::new();
            generate(&config(500, seed)).write_feed(&mut out).unwrap();
            out
        };
        assert_eq!(feed(7), feed(7));
        assert_ne!(feed(7), feed(8));
    }

    #[test]
    fn every_record_is_valid_and_periods_are_ordered() {
        let population = generate(&config(3000, 1));
        assert_eq!(population.persons.len(), 3000);
        for person in &population.persons {
            for holding in &person.holdings {
                let id = holding.insured_id();
                assert!(id.is_some(), "{holding:?}");
                assert!(holding.start >= HISTORY_START && holding.start >= person.birth_date);
                assert!(
                    holding.end.is_none_or(|end| end >= holding.start),
                    "{holding:?}"
                );
                assert!(holding.end.is_none_or(|end| end <= population.until));
                if holding.start >= BRANCH_START && !holding.insurer_number.starts_with("39") {
                    assert_eq!(holding.branch.len(), 2, "individual numbers after 2021");
                }
            }
            for pair in person.holdings.windows(2) {
                assert!(
                    pair[0].end.is_some_and(|end| end < pair[1].start),
                    "{} periods overlap",
                    person.reference
                );
            }
        }
    }

    #[test]
    fn the_hard_cases_are_all_present() {
        let population = generate(&config(5000, 3));
        let summary = population.summary();
        assert!(
            summary.twins > 0 && summary.ambiguous_records > 0,
            "{summary:?}"
        );
        assert!(summary.insurer_changes > summary.persons / 3, "{summary:?}");
        assert!(
            summary.kokuho > 0 && summary.late_elderly > 0 && summary.deaths > 0,
            "{summary:?}"
        );
        let name_changes = population
            .persons
            .iter()
            .filter(|p| {
                let family = |h: &Holding| h.recorded_name.kana.chars().take(3).collect::<String>();
                p.holdings.windows(2).any(|w| {
                    names::hiragana(&family(&w[0])) != names::hiragana(&family(&w[1]))
                        && !w[0].recorded_name.kana.is_ascii()
                })
            })
            .count();
        assert!(name_changes > 0);
        // Twins of the same sex on a household number before 2021 are ambiguous there only.
        let twin = population
            .persons
            .iter()
            .find(|p| p.holdings.iter().any(|h| !h.ambiguous.is_empty()))
            .unwrap();
        for holding in &twin.holdings {
            if !holding.ambiguous.is_empty() {
                assert!(holding.branch.is_empty());
            }
        }
    }
}
