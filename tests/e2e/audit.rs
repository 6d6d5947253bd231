//! The audit chain over the wire and offline: every admitted call leaves one event, answered
//! only once durable; the chain verifies; a byte changed in the file is found at its event.

use std::process::Command;

use mpi_proto::v1 as pb;
use numbers::*;
use tonic::Code;

use crate::support::*;

async fn verify(server: &TestServer, from: u64, to: u64) -> pb::VerifyAuditChainResponse {
    let mut audit = pb::audit_client::AuditClient::new(server.channel("operator").await);
    audit
        .verify_audit_chain(pb::VerifyAuditChainRequest {
            from_sequence: from,
            to_sequence: to,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited_and_tampering_is_found_offline() {
    let server = TestServer::start().await;
    let mut provider = server.history("history-provider").await;
    let person = insured(KYOKAI, "9101", "4501", "01");
    import(
        &mut provider,
        vec![record(
            "synth-a1",
            person.clone(),
            "2015-04-01",
            "",
            "1988-06-14",
            pb::Sex::Female,
        )],
    )
    .await;
    let pair = at(person, "2020-01-01");
    same(&mut provider, pair.clone(), pair.clone())
        .await
        .unwrap();
    let bad = at(insured("01139012", "", "1", ""), "");
    same(&mut provider, bad.clone(), bad).await.unwrap_err();
    let mut clinician = server.history("clinician-a").await;
    assert_eq!(
        same(&mut clinician, pair.clone(), pair)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Four calls so far: import, a resolution, an invalid one, a denied one.
    let report = verify(&server, 0, 0).await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events_verified, 4);
    assert_eq!(report.head_hash.len(), 64);
    // The verification itself was audited: a fifth event, and ranges verify too.
    let report = verify(&server, 2, 5).await;
    assert!(report.intact && report.events_verified == 4, "{report:?}");
    let mut audit = pb::audit_client::AuditClient::new(server.channel("operator").await);
    let status = audit
        .verify_audit_chain(pb::VerifyAuditChainRequest {
            from_sequence: 5,
            to_sequence: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "to_sequence");

    let data = server.stop().await;
    let dir = data.path().join("data");
    let audit_verify = |json: bool| {
        let mut command = Command::new(BINARY);
        command.arg("ctl").arg("--data-dir").arg(&dir);
        if json {
            command.arg("--json");
        }
        let output = command.arg("audit-verify").output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = audit_verify(false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("intact: true") && out.contains("events_verified: 7"),
        "{out}"
    );

    // Flip one byte of event 3, through the store file, with the server stopped.
    {
        use redb::ReadableTable;
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let db = redb::Database::open(dir.join("audit.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(table).unwrap();
            let mut value = events.get(3).unwrap().unwrap().value().to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x01;
            events.insert(3, value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (code, out) = audit_verify(true);
    assert_eq!(code, Some(1), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_broken_sequence"], "3");
    assert_eq!(report["events_verified"], "2");
}

#[tokio::test]
async fn the_chain_exports_as_linked_events_without_identifiers() {
    use tokio_stream::StreamExt;
    let server = TestServer::start().await;
    let mut provider = server.history("history-provider").await;
    let person = insured(KYOKAI, "58231907", "3141592653", "07");
    import(
        &mut provider,
        vec![record(
            "synth-e1",
            person.clone(),
            "2015-04-01",
            "",
            "1961-09-17",
            pb::Sex::Male,
        )],
    )
    .await;
    let pair = at(person, "2020-01-01");
    same(&mut provider, pair.clone(), pair).await.unwrap();

    let mut audit = pb::audit_client::AuditClient::new(server.channel("operator").await);
    let events: Vec<pb::AuditEvent> = audit
        .export_audit_events(pb::ExportAuditEventsRequest {
            from_sequence: 0,
            to_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| (e.sequence, e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (1, "ImportQualifications", "OK"),
            (2, "AreSamePerson", "OK"),
            (3, "ExportAuditEvents", "OK")
        ]
    );
    assert_eq!(events[0].count, 1);
    assert_eq!(events[0].principal, "history-provider:dev-history-provider");
    assert_eq!(events[0].previous_hash, "0".repeat(64));
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].previous_hash, pair[0].hash,
            "each event names the one before"
        );
    }
    let text = serde_json::to_string(
        &events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // The birth date in both its forms: "1961" alone also turns up by chance in hashes and in
    // the microseconds of timestamps.
    for identifier in [
        "01139013",
        "58231907",
        "3141592653",
        "synth-e1",
        "1961-09-17",
        "19610917",
    ] {
        assert!(!text.contains(identifier), "the export holds {identifier}");
    }

    // A range, and a bad one.
    let range: Vec<_> = audit
        .export_audit_events(pb::ExportAuditEventsRequest {
            from_sequence: 2,
            to_sequence: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(range.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2]);
    let status = audit
        .export_audit_events(pb::ExportAuditEventsRequest {
            from_sequence: 3,
            to_sequence: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "to_sequence");
    let mut network = pb::audit_client::AuditClient::new(server.channel("network-a").await);
    let denied = network
        .export_audit_events(pb::ExportAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
