//! The CLI as a person uses it: `ctl synth`, `ctl import-history`, `ctl consent` and `ctl who-looked`.

use std::process::Command;

use crate::support::*;

fn ctl(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .arg("ctl")
        .arg("--addr")
        .arg(server.addr.to_string())
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn synth_writes_the_same_population_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, out: &str| {
        let output = Command::new(BINARY)
            .args([
                "ctl",
                "synth",
                "--persons",
                "300",
                "--seed",
                seed,
                "--until",
                "2026-11-01",
                "--out",
            ])
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let feed = std::fs::read(dir.path().join(out).join("history.jsonl")).unwrap();
        let truth = std::fs::read(dir.path().join(out).join("truth.jsonl")).unwrap();
        (
            feed,
            truth,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (feed_a, truth_a, report) = run("5", "a");
    let (feed_b, truth_b, _) = run("5", "b");
    let (feed_c, _, _) = run("6", "c");
    assert_eq!(feed_a, feed_b);
    assert_eq!(truth_a, truth_b);
    assert_ne!(feed_a, feed_c);
    assert!(report.contains("persons: 300"), "{report}");
    assert_eq!(String::from_utf8(truth_a).unwrap().lines().count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_history_reads_csv_and_json_lines_and_names_rejected_lines() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("feed.csv");
    std::fs::write(
        &csv,
        "provider_person_ref,insurer_number,symbol,number,branch,qualification_start,qualification_end,birth_date,sex,reason_of_loss\n\
         synth-c1,  139014,,880123,,20120520,20210331,20120520,1,99\n\
         synth-c2,01139012,1,2,01,2020-01-01,,1980-01-01,2,\n\
         synth-c3,01139013,1,3,01,2020-01-01,,1980-01-01,7,\n\
         synth-c4,01139013,1,4,01,2020-01-01,,1980-01-01,2,\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| ctl(&server, &["import-history", csv.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("4 records in"), "{stdout}");
    assert!(
        stdout.contains("2 accepted, 0 unchanged, 2 rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "line 3: insured_id.parts.insurer_number: insurer number check digit must be 3, found 2"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 4: sex: sex must be 1, 2 or 3, found \"7\""),
        "{stdout}"
    );

    let jsonl = dir.path().join("feed.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"provider_person_ref":"synth-j1","insured_id":{"member_id":"06279012:7702:31:00"},"qualification_start":"2021-04-01","birth_date":"1988-06-14","sex":"SEX_FEMALE"}"#,
            "\n\n",
            "{not json\n",
            r#"{"provider_person_ref":"synth-j2","insured_id":{"member_id":"06279012:7702:32:0"},"qualification_start":"2021-04-01","birth_date":"1988-06-14","sex":"SEX_FEMALE"}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        ctl(
            &server,
            &["--json", "import-history", jsonl.to_str().unwrap()],
        )
    });
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["accepted"], 1);
    assert_eq!(report["rejected"], 2);
    let lines: Vec<(u64, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (3, "line".to_owned()),
            (4, "insured_id.member_id".to_owned())
        ]
    );

    // What was imported is there: the CSV's 国保 household member resolves.
    let mut client = server.history("history-provider").await;
    let household = at_with(
        insured("139014", "", "880123", ""),
        "2015-01-01",
        "2012-05-20",
        mpi_proto::v1::Sex::Male,
    );
    let answer = same(&mut client, household.clone(), household)
        .await
        .unwrap();
    assert_eq!(answer, mpi_proto::v1::SamePersonAnswer::Same);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_record_revoke_and_list_consents_and_ask_who_looked() {
    let server = TestServer::start().await;
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/history-sample.jsonl"
    );
    let (code, _, err) = ctl(&server, &["import-history", sample]);
    assert_eq!(code, 0, "{err}");
    let card = "06279012:7702:31:00";
    let (code, out, err) = ctl(
        &server,
        &[
            "consent",
            "record",
            "--patient",
            card,
            "--kind",
            "participation",
            "--network",
            "13-0001",
            "--evidence",
            "form-2026-001",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("participation  network 13-0001  ACTIVE")
            && out.contains("recorded by operator:"),
        "{out}"
    );
    let participation = out.split_whitespace().next().unwrap().to_owned();
    let (code, out, err) = ctl(
        &server,
        &[
            "consent",
            "record",
            "--patient",
            card,
            "--kind",
            "disclosure",
            "--network",
            "13-0001",
            "--recipients",
            "networks:27-0001",
            "--kinds",
            "prescription,checkup",
            "--evidence",
            "form-2026-002",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("discloses its own pointers to networks 27-0001"),
        "{out}"
    );
    let (code, out, _) = ctl(
        &server,
        &[
            "consent",
            "opt-out",
            "--patient",
            card,
            "--evidence",
            "optout-7",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("opt-out  every network  ACTIVE"), "{out}");
    // Another network may not revoke what the operator recorded.
    let (code, _, err) = ctl(
        &server,
        &[
            "--as",
            "network-b",
            "consent",
            "revoke",
            "--consent-id",
            &participation,
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");
    let (code, out, err) = ctl(
        &server,
        &[
            "consent",
            "revoke",
            "--consent-id",
            &participation,
            "--reason",
            "the patient withdrew",
            "--purge",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("REVOKED") && out.contains("the patient withdrew (purged)"),
        "{out}"
    );
    let (code, out, _) = ctl(&server, &["consent", "list", "--patient", card]);
    assert_eq!(code, 0);
    assert!(out.starts_with("3 consents\n"), "{out}");
    assert_eq!(out.matches("REVOKED").count(), 1, "{out}");
    // Bad input names the field.
    let (code, _, err) = ctl(
        &server,
        &[
            "consent",
            "record",
            "--patient",
            card,
            "--kind",
            "participation",
            "--evidence",
            "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("network_id"), "{err}");

    // A clinician's retrieval, then "who looked?".
    let (code, out, _) = ctl(&server, &["who-looked", "--patient", card]);
    assert_eq!(code, 0);
    assert!(out.starts_with("0 retrievals"), "{out}");
    let request = format!(
        r#"{{"patient": {{"insured": {{"insuredId": {{"memberId": "{card}"}}}}}}, "purpose": "PURPOSE_TREATMENT"}}"#
    );
    let (code, _, err) = ctl(&server, &["find-locations", "--request", &request]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = ctl(&server, &["who-looked", "--patient", card]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("1 retrievals")
            && out.contains(
                "clinician:13-0001:1310123458  FindLocations  for treatment  0 disclosed"
            ),
        "{out}"
    );
}
