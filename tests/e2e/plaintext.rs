//! Insured numbers never reach the disk in plaintext (DESIGN.md §4).

use mpi_proto::v1 as pb;
use numbers::*;
use pb::Sex::*;

use crate::support::*;

/// Every way the identifiers of this test could be written down.
fn needles() -> Vec<Vec<u8>> {
    let texts = [
        // Insurer numbers, canonical, 6-digit and receipt forms.
        KYOKAI,
        KENPO,
        "00139014",
        "  139014",
        // Distinctive 記号 and 番号, half-width and full-width, and joined.
        "58231907",
        "５８２３１９０７",
        "3141592653",
        "３１４１５９２６５３",
        "27182818",
        "２７１８２８１８",
        "58231907:3141592653",
        "５８２３１９０７３１４１５９２６５３",
        // Canonical keys and JP Core one-string forms.
        "01139013:58231907:3141592653:07",
        "01139013:５８２３１９０７:３１４１５９２６５３:07",
        "06279012::27182818:",
        "06279012::２７１８２８１８:",
        // Provider references and birth dates.
        "synth-plaintext-0001",
        "synth-plaintext-0002",
        "1961-09-17",
        "19610917",
    ];
    let mut needles = Vec::new();
    for text in texts {
        needles.push(text.as_bytes().to_vec());
        needles.push(text.encode_utf16().flat_map(u16::to_le_bytes).collect());
        needles.push(text.encode_utf16().flat_map(u16::to_be_bytes).collect());
    }
    needles
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Files are often mostly zeros at the end (pre-allocated pages and log segments); a needle
    // of which not every byte is zero can only end within its own length of the last nonzero
    // byte, so the zeros after that need no search.
    let end = haystack
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| (last + 1 + needle.len()).min(haystack.len()));
    haystack[..end]
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn no_insured_number_appears_in_any_file_of_the_data_directory() {
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let person = insured(KYOKAI, "58231907", "3141592653", "07");
    let second = member("06279012::２７１８２８１８:");
    let kokuho = insured("  139014", "58231907", "3141592653", "");
    let summary = import(
        &mut client,
        vec![
            record(
                "synth-plaintext-0001",
                person.clone(),
                "2009-04-01",
                "2019-03-31",
                "1961-09-17",
                Male,
            ),
            record(
                "synth-plaintext-0001",
                second.clone(),
                "2019-04-01",
                "",
                "1961-09-17",
                Male,
            ),
            record(
                "synth-plaintext-0002",
                kokuho.clone(),
                "2009-04-01",
                "",
                "1961-09-17",
                Female,
            ),
        ],
    )
    .await;
    assert_eq!(summary.accepted, 3);
    let answer = same(
        &mut client,
        at(person, "2010-01-01"),
        at(second, "2020-01-01"),
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        pb::SamePersonAnswer::Same,
        "the data really is stored"
    );
    let data = server.stop().await;

    let files = files_under(data.path());
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "redb")),
        "the store is among the files"
    );
    let needles = needles();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} holds {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }

    // The scan itself can fail: a planted copy is found.
    let planted = data.path().join("planted");
    std::fs::write(&planted, b"xx01139013:58231907:3141592653:07yy").unwrap();
    assert!(
        needles
            .iter()
            .any(|needle| contains(&std::fs::read(&planted).unwrap(), needle))
    );
}
