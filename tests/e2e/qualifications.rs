//! The history feed and resolution over the wire: validation, per-record rejections,
//! idempotent replay, limits, and household-level numbers.

use mpi_proto::v1 as pb;
use numbers::*;
use pb::SamePersonAnswer::*;
use pb::Sex::*;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn malformed_identifiers_are_invalid_argument_naming_field_and_rule() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let good = at(insured(KYOKAI, "9101", "4501", "01"), "");
    let cases: Vec<(pb::InsuredIdAtDate, &str, &str)> = vec![
        (
            at(insured("01139012", "9101", "4501", "01"), ""),
            "first.patient.insured_id.parts.insurer_number",
            "check digit must be 3, found 2",
        ),
        (
            at(insured("0113901", "9101", "4501", "01"), ""),
            "first.patient.insured_id.parts.insurer_number",
            "must have 6 or 8 digits, found 7",
        ),
        (
            at(insured(KYOKAI, "9101", "4501", "1"), ""),
            "first.patient.insured_id.parts.branch",
            "exactly two digits",
        ),
        (
            at(insured(KYOKAI, "91あ", "4501", "01"), ""),
            "first.patient.insured_id.parts.symbol",
            "not mixed",
        ),
        (
            at(insured(KYOKAI, "", "", "01"), ""),
            "first.patient.insured_id.parts.number",
            "number is required",
        ),
        (
            at(insured(KYOKAI, "", &"1".repeat(39), "01"), ""),
            "first.patient.insured_id.parts.number",
            "at most 38 bytes",
        ),
        (
            at(member("01139013:9101:4501"), ""),
            "first.patient.insured_id.member_id",
            "four fields",
        ),
        (
            at(insured(KYOKAI, "9101", "4501", "01"), "2024-02-30"),
            "first.as_of",
            "not a calendar date",
        ),
        (
            at_with(
                insured(KYOKAI, "9101", "4501", "01"),
                "",
                "1980-01-01",
                pb::Sex::Unspecified,
            ),
            "first.patient.sex",
            "required when birth_date",
        ),
    ];
    for (first, field, rule) in cases {
        let status = same(&mut client, first, good.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let found = violations(&status);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, field);
        assert!(
            found[0].1.contains(rule),
            "{} does not say {rule}",
            found[0].1
        );
        assert!(
            status.message().contains(field),
            "the message names the field too"
        );
    }
    let request = pb::AreSamePersonRequest {
        first: None,
        second: Some(good),
        purpose: 0,
    };
    let status = client.are_same_person(request).await.unwrap_err();
    let fields: Vec<_> = violations(&status)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        ["first", "purpose"],
        "every violation is reported at once"
    );
}

#[tokio::test]
async fn rejected_records_are_named_and_nothing_of_them_is_stored() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let hanako_old = insured(KYOKAI, "9101", "4501", "01");
    let hanako_new = insured(KENPO, "7702", "31", "00");
    let stray = insured(KENPO, "7702", "99", "00");
    let records = vec![
        record(
            "synth-0001",
            hanako_old.clone(),
            "2015-04-01",
            "2021-03-31",
            "1988-06-14",
            Female,
        ),
        record(
            "synth-0001",
            insured("06279013", "7702", "31", "00"),
            "2021-04-01",
            "",
            "1988-06-14",
            Female,
        ),
        record(
            "synth-0001",
            hanako_new.clone(),
            "2021-04-01",
            "",
            "1988-06-14",
            Female,
        ),
        // A valid insured ID with an impossible birth date: rejected whole.
        record(
            "synth-0009",
            stray.clone(),
            "2021-04-01",
            "",
            "1988-02-30",
            Male,
        ),
        record(
            "synth 0010",
            stray.clone(),
            "2021-04-01",
            "2020-01-01",
            "1988-02-03",
            pb::Sex::Unspecified,
        ),
    ];
    let summary = import(&mut client, records).await;
    assert_eq!(
        (summary.accepted, summary.unchanged, summary.rejected),
        (2, 0, 3)
    );
    let named: Vec<_> = summary
        .rejections
        .iter()
        .map(|r| (r.record_index, r.field.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (1, "insured_id.parts.insurer_number"),
            (3, "birth_date"),
            (4, "provider_person_ref"),
            (4, "sex"),
        ]
    );
    assert!(!summary.rejections_truncated);
    let answer = same(
        &mut client,
        at(stray.clone(), "2022-01-01"),
        at(stray, "2022-01-01"),
    )
    .await
    .unwrap();
    assert_eq!(answer, Unknown, "nothing of a rejected record is stored");
    let answer = same(
        &mut client,
        at(hanako_old, "2020-01-01"),
        at(hanako_new, "2022-01-01"),
    )
    .await
    .unwrap();
    assert_eq!(
        answer, Same,
        "the accepted records of the same feed are stored"
    );
}

#[tokio::test]
async fn replaying_a_feed_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let feed = vec![
        record(
            "synth-0001",
            insured(KYOKAI, "9101", "4501", "01"),
            "2015-04-01",
            "2021-03-31",
            "1988-06-14",
            Female,
        ),
        record(
            "synth-0001",
            insured(KENPO, "7702", "31", "00"),
            "2021-04-01",
            "",
            "1988-06-14",
            Female,
        ),
    ];
    let first = import(&mut client, feed.clone()).await;
    assert_eq!((first.accepted, first.unchanged), (2, 0));
    let replay = import(&mut client, feed).await;
    assert_eq!(
        (replay.accepted, replay.unchanged, replay.rejected),
        (0, 2, 0)
    );
    // The same number written in the full-width one-string form is the same record.
    let full_width = vec![record(
        "synth-0001",
        member("06279012:７７０２:３１:00"),
        "2021-04-01",
        "",
        "1988-06-14",
        Female,
    )];
    let again = import(&mut client, full_width).await;
    assert_eq!((again.accepted, again.unchanged), (0, 1));
}

#[tokio::test]
async fn resolution_is_as_of_a_date() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let old = insured(KYOKAI, "9101", "4501", "01");
    let new = insured(KENPO, "7702", "31", "00");
    let other = insured(KENPO, "7702", "32", "00");
    import(
        &mut client,
        vec![
            record(
                "synth-0001",
                old.clone(),
                "2015-04-01",
                "2021-03-31",
                "1988-06-14",
                Female,
            ),
            record(
                "synth-0001",
                new.clone(),
                "2021-04-01",
                "",
                "1988-06-14",
                Female,
            ),
            record(
                "synth-0002",
                other.clone(),
                "2021-04-01",
                "",
                "1990-01-01",
                Male,
            ),
        ],
    )
    .await;
    assert_eq!(
        same(
            &mut client,
            at(old.clone(), "2021-03-31"),
            at(new.clone(), "2021-04-01")
        )
        .await
        .unwrap(),
        Same
    );
    assert_eq!(
        same(
            &mut client,
            at(old.clone(), "2021-04-01"),
            at(new.clone(), "2021-04-01")
        )
        .await
        .unwrap(),
        Unknown
    );
    assert_eq!(
        same(&mut client, at(new.clone(), ""), at(other.clone(), ""))
            .await
            .unwrap(),
        Different
    );
    assert_eq!(
        same(&mut client, at(old, "2015-03-31"), at(other, ""))
            .await
            .unwrap(),
        Unknown
    );
}

#[tokio::test]
async fn twins_on_a_household_number_are_ambiguous_never_guessed() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let household = insured(KOKUHO, "", "880123", "");
    import(
        &mut client,
        vec![
            record(
                "synth-0002",
                household.clone(),
                "2012-05-20",
                "",
                "2012-05-20",
                Male,
            ),
            record(
                "synth-0003",
                household.clone(),
                "2012-05-20",
                "",
                "2012-05-20",
                Male,
            ),
            record(
                "synth-0004",
                household.clone(),
                "2009-04-01",
                "",
                "1981-02-03",
                Female,
            ),
        ],
    )
    .await;
    let twin = at_with(household.clone(), "2020-01-01", "2012-05-20", Male);
    let mother = at_with(household.clone(), "2020-01-01", "1981-02-03", Female);
    assert_eq!(
        same(&mut client, twin.clone(), mother.clone())
            .await
            .unwrap(),
        Ambiguous
    );
    assert_eq!(
        same(&mut client, mother.clone(), mother).await.unwrap(),
        Same
    );
    let no_demographics = at(household, "2020-01-01");
    assert_eq!(
        same(&mut client, no_demographics.clone(), no_demographics)
            .await
            .unwrap(),
        Ambiguous
    );
}

#[tokio::test]
async fn an_oversized_batch_is_resource_exhausted() {
    let server = TestServer::start_with(|config| config.limits.max_batch_items = 10).await;
    let mut client = server.history("history-provider").await;
    let records: Vec<_> = (0..11).map(numbered).collect();
    let messages = vec![pb::ImportQualificationsRequest { records }];
    let status = client
        .import_qualifications(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("at most 10 records"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|config| config.limits.max_message_bytes = 4096).await;
    let mut client = server.history("history-provider").await;
    let huge = at(insured(KYOKAI, "", &"1".repeat(5000), "01"), "");
    let status = same(&mut client, huge.clone(), huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    let small = at(insured(KYOKAI, "", "1", "01"), "");
    assert_eq!(
        same(&mut client, small.clone(), small).await.unwrap(),
        Unknown
    );
    // The same limit holds inside the import stream.
    let records = vec![
        record(
            "synth-1",
            insured(KYOKAI, "", &"1".repeat(38), "01"),
            "2020-01-01",
            "",
            "1980-01-01",
            Male
        );
        60
    ];
    let status = client
        .import_qualifications(tokio_stream::iter(vec![pb::ImportQualificationsRequest {
            records,
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn a_wrong_merge_undone_by_an_unmerge_restores_both_persons() {
    let server = TestServer::start().await;
    let mut provider = server.history("history-provider").await;
    let taro = insured(KYOKAI, "9101", "7001", "00");
    let jiro = insured(KENPO, "7702", "7002", "00");
    import(
        &mut provider,
        vec![
            record(
                "synth-0101",
                taro.clone(),
                "2015-04-01",
                "",
                "1975-03-03",
                Male,
            ),
            record(
                "synth-0102",
                jiro.clone(),
                "2016-04-01",
                "",
                "1977-07-07",
                Male,
            ),
        ],
    )
    .await;
    let pair = || {
        (
            at(taro.clone(), "2022-01-01"),
            at(jiro.clone(), "2022-01-01"),
        )
    };
    let (a, b) = pair();
    assert_eq!(same(&mut provider, a, b).await.unwrap(), Different);

    let merge = provider
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "synth-0101".into(),
            merged_person_ref: "synth-0102".into(),
            reason: "provider reported one person".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merge.merge_id.len(), 32);
    assert!(merge.merged_at.is_some());
    let (a, b) = pair();
    assert_eq!(same(&mut provider, a, b).await.unwrap(), Same);

    // Merging again, or merging unknown references, is refused.
    let again = provider
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "synth-0102".into(),
            merged_person_ref: "synth-0101".into(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = provider
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "synth-0101".into(),
            merged_person_ref: "synth-9999".into(),
            reason: "typo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("merged_person_ref"),
        "{}",
        unknown.message()
    );

    // The operator undoes it: each person again resolves alone.
    let mut operator = server.history("operator").await;
    let undone = operator
        .unmerge_persons(pb::UnmergePersonsRequest {
            merge_id: merge.merge_id.clone(),
            reason: "different birth dates".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(undone.unmerged_at.is_some());
    let (a, b) = pair();
    assert_eq!(same(&mut provider, a, b).await.unwrap(), Different);
    let twice = operator
        .unmerge_persons(pb::UnmergePersonsRequest {
            merge_id: merge.merge_id,
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn merge_requests_are_validated_and_role_checked() {
    let server = TestServer::start().await;
    let mut provider = server.history("history-provider").await;
    let status = provider
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "bad ref".into(),
            merged_person_ref: String::new(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<_> = violations(&status)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        ["surviving_person_ref", "merged_person_ref", "reason"]
    );
    let status = provider
        .unmerge_persons(pb::UnmergePersonsRequest {
            merge_id: "42".into(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "merge_id");
    let mut network = server.history("network-a").await;
    let status = network
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "a".into(),
            merged_person_ref: "b".into(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_idle_import_stream_is_closed_but_a_long_one_is_not() {
    let server = TestServer::start_with(|config| {
        config.limits.request_timeout = std::time::Duration::from_secs(1)
    })
    .await;
    let mut client = server.history("history-provider").await;
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let record = |i: u32| {
        record(
            &format!("synth-{i}"),
            insured(KYOKAI, "1", &i.to_string(), "01"),
            "2020-01-01",
            "",
            "1980-01-01",
            Male,
        )
    };
    // Busy for longer than the timeout in total, never idle that long: served to the end.
    let feeder = tokio::spawn(async move {
        for i in 0..6 {
            sender
                .send(pb::ImportQualificationsRequest {
                    records: vec![record(i)],
                })
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
    let summary = client
        .import_qualifications(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap();
    feeder.await.unwrap();
    assert_eq!(summary.into_inner().accepted, 6);
    // A client that stops sending is cut after the timeout. (tonic's client surfaces an early
    // answer only once its own stream ends, so the server's metrics show when it gave up.)
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(pb::ImportQualificationsRequest {
            records: vec![record(10)],
        })
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        client
            .import_qualifications(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let gave_up =
        r#"kouiki_mpi_grpc_requests_total{rpc="ImportQualifications",code="DEADLINE_EXCEEDED"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.metrics().await.contains(gave_up) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never closed the idle stream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(sender);
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_stream_of_many_commits_stores_every_record_once_and_names_rejections_by_stream_index() {
    // Commits of 100 records: the 1,050 records below are read, keyed and stored in eleven
    // transactions, each keyed while the one before commits.
    let server = TestServer::start_with(|config| config.limits.import_commit_records = 100).await;
    let mut client = server.history("history-provider").await;
    let earlier = insured(KYOKAI, "2", "1", "01");
    let later = insured(KENPO, "2", "2", "00");
    let records: Vec<_> = (0..1050)
        .map(|i| match i {
            // One person whose two records fall into the first and the last commit.
            5 => record(
                "synth-pair",
                earlier.clone(),
                "2010-04-01",
                "2015-03-31",
                "1970-05-05",
                Female,
            ),
            1045 => record(
                "synth-pair",
                later.clone(),
                "2015-04-01",
                "",
                "1970-05-05",
                Female,
            ),
            777 => record(
                "synth-bad",
                insured(KYOKAI, "1", "777", "01"),
                "2020-02-30",
                "",
                "1980-01-01",
                Male,
            ),
            _ => numbered(i),
        })
        .collect();
    let messages: Vec<_> = records
        .chunks(100)
        .map(|chunk| pb::ImportQualificationsRequest {
            records: chunk.to_vec(),
        })
        .collect();
    let summary = client
        .import_qualifications(tokio_stream::iter(messages.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (summary.accepted, summary.unchanged, summary.rejected),
        (1049, 0, 1)
    );
    let named: Vec<_> = summary
        .rejections
        .iter()
        .map(|r| (r.record_index, r.field.as_str()))
        .collect();
    assert_eq!(named, [(777, "qualification_start")]);
    // Both of the person's records were stored, in different transactions, as one person.
    let answer = same(
        &mut client,
        at(earlier, "2012-01-01"),
        at(later, "2020-01-01"),
    )
    .await
    .unwrap();
    assert_eq!(answer, Same);
    // The first and the last of the others are there too.
    for i in [0, 1049] {
        let id = insured(KYOKAI, "1", &i.to_string(), "01");
        let answer = same(
            &mut client,
            at(id.clone(), "2021-01-01"),
            at(id, "2021-01-01"),
        )
        .await
        .unwrap();
        assert_eq!(answer, Same, "record {i}");
    }
    // Replayed, nothing changes.
    let replay = client
        .import_qualifications(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (replay.accepted, replay.unchanged, replay.rejected),
        (0, 1049, 1)
    );
}

/// Person `synth-{i}`, holding insured number `i` under the 協会けんぽ since 2020-01-01.
fn numbered(i: usize) -> pb::QualificationRecord {
    record(
        &format!("synth-{i}"),
        insured(KYOKAI, "1", &i.to_string(), "01"),
        "2020-01-01",
        "",
        "1980-01-01",
        Male,
    )
}
