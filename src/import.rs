//! `ctl import-history`: streams a history feed (JSON Lines or CSV) to ImportQualifications
//! with bounded memory, shows progress and rate, and names the line and field of every
//! rejected record.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi_proto::v1 as pb;
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One QualificationRecord per line, proto3 JSON.
    Jsonl,
    /// A header line, then one record per line (see `CSV_COLUMNS`).
    Csv,
}

/// The CSV header, in order.
pub const CSV_COLUMNS: [&str; 10] = [
    "provider_person_ref",
    "insurer_number",
    "symbol",
    "number",
    "branch",
    "qualification_start",
    "qualification_end",
    "birth_date",
    "sex",
    "reason_of_loss",
];

/// A rejected record, by line.
#[derive(Debug, Clone, Serialize)]
pub struct LineRejection {
    /// 1-based line in the file.
    pub line: u64,
    /// The field (a path inside the record), or `line` when the line did not parse.
    pub field: String,
    /// The rule.
    pub reason: String,
}

/// The final summary.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Records read from the file.
    pub records: u64,
    /// Stored new or changed.
    pub accepted: u64,
    /// Already stored exactly so.
    pub unchanged: u64,
    /// Rejected by the server or unreadable here.
    pub rejected: u64,
    /// The rejections (the server lists at most 1000; all local ones are listed).
    pub rejections: Vec<LineRejection>,
    /// True when the server rejected more than it listed.
    pub rejections_truncated: bool,
    /// Seconds from first to last byte.
    pub seconds: f64,
    /// Records per second.
    pub records_per_second: f64,
}

/// Detects the format from the file name.
pub fn detect(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
        _ => Format::Jsonl,
    }
}

/// `YYYYMMDD` (the qualification system's form) → `YYYY-MM-DD`; anything else unchanged.
fn iso(date: &str) -> String {
    let date = date.trim();
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
    } else {
        date.to_owned()
    }
}

fn sex(value: &str) -> Result<i32, String> {
    Ok(match value.trim() {
        "1" | "SEX_MALE" => pb::Sex::Male,
        "2" | "SEX_FEMALE" => pb::Sex::Female,
        "3" | "SEX_NOT_RECORDED" => pb::Sex::NotRecorded,
        "" => pb::Sex::Unspecified,
        other => return Err(format!("sex must be 1, 2 or 3, found \"{other}\"")),
    }
    .into())
}

fn reason(value: &str) -> Result<i32, String> {
    Ok(match value.trim() {
        "" => pb::ReasonOfLoss::Unspecified,
        "01" | "1" => pb::ReasonOfLoss::Death,
        "02" | "2" => pb::ReasonOfLoss::Welfare,
        "03" | "3" => pb::ReasonOfLoss::OtherInsurance,
        "99" => pb::ReasonOfLoss::Other,
        other => {
            return Err(format!(
                "reason_of_loss must be 01, 02, 03 or 99, found \"{other}\""
            ));
        }
    }
    .into())
}

fn csv_record(row: &csv::StringRecord) -> Result<pb::QualificationRecord, (String, String)> {
    let field = |index: usize| row.get(index).unwrap_or("");
    Ok(pb::QualificationRecord {
        provider_person_ref: field(0).to_owned(),
        insured_id: Some(pb::InsuredId {
            form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
                // 6-digit numbers keep their padding spaces; the server accepts them.
                insurer_number: field(1).to_owned(),
                symbol: field(2).to_owned(),
                number: field(3).to_owned(),
                branch: field(4).to_owned(),
            })),
        }),
        qualification_start: iso(field(5)),
        qualification_end: iso(field(6)),
        birth_date: iso(field(7)),
        sex: sex(field(8)).map_err(|e| ("sex".to_owned(), e))?,
        reason_of_loss: reason(field(9)).map_err(|e| ("reason_of_loss".to_owned(), e))?,
    })
}

/// Counts bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// What the reader thread hands back: the line of every sent record, local rejections.
struct ReadOutcome {
    lines: Vec<u32>,
    local: Vec<LineRejection>,
}

type Batches = tokio::sync::mpsc::Sender<pb::ImportQualificationsRequest>;

fn read_file(
    path: PathBuf,
    format: Format,
    batch: usize,
    bytes: Arc<AtomicU64>,
    sender: Batches,
) -> anyhow::Result<ReadOutcome> {
    let file = File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, Counting { inner: file, bytes });
    let mut outcome = ReadOutcome {
        lines: Vec::new(),
        local: Vec::new(),
    };
    let mut records = Vec::with_capacity(batch);
    let mut push = |record: pb::QualificationRecord,
                    line: u64,
                    outcome: &mut ReadOutcome|
     -> anyhow::Result<()> {
        outcome.lines.push(u32::try_from(line).unwrap_or(u32::MAX));
        records.push(record);
        if records.len() >= batch {
            let message = pb::ImportQualificationsRequest {
                records: std::mem::replace(&mut records, Vec::with_capacity(batch)),
            };
            sender
                .blocking_send(message)
                .map_err(|_| anyhow::anyhow!("the import stream closed early"))?;
        }
        Ok(())
    };
    match format {
        Format::Jsonl => {
            for (index, line) in reader.lines().enumerate() {
                let number = index as u64 + 1;
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<pb::QualificationRecord>(&line) {
                    Ok(record) => push(record, number, &mut outcome)?,
                    Err(error) => outcome.local.push(LineRejection {
                        line: number,
                        field: "line".into(),
                        reason: error.to_string(),
                    }),
                }
            }
        }
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .trim(csv::Trim::None)
                .from_reader(reader);
            let header: Vec<String> = csv.headers()?.iter().map(|h| h.trim().to_owned()).collect();
            if header != CSV_COLUMNS {
                anyhow::bail!(
                    "{}: the CSV header must be {}",
                    path.display(),
                    CSV_COLUMNS.join(",")
                );
            }
            for row in csv.records() {
                let row = match row {
                    Ok(row) => row,
                    Err(error) => {
                        let line = error.position().map_or(0, |p| p.line());
                        outcome.local.push(LineRejection {
                            line,
                            field: "line".into(),
                            reason: error.to_string(),
                        });
                        continue;
                    }
                };
                let line = row.position().map_or(0, |p| p.line());
                if row.len() != CSV_COLUMNS.len() {
                    let reason = format!(
                        "must have {} columns, found {}",
                        CSV_COLUMNS.len(),
                        row.len()
                    );
                    outcome.local.push(LineRejection {
                        line,
                        field: "line".into(),
                        reason,
                    });
                    continue;
                }
                match csv_record(&row) {
                    Ok(record) => push(record, line, &mut outcome)?,
                    Err((field, reason)) => outcome.local.push(LineRejection {
                        line,
                        field,
                        reason,
                    }),
                }
            }
        }
    }
    if !records.is_empty() {
        sender
            .blocking_send(pb::ImportQualificationsRequest { records })
            .map_err(|_| anyhow::anyhow!("the import stream closed early"))?;
    }
    Ok(outcome)
}

/// Streams `path` to the server.
pub async fn import_history(
    channel: Channel,
    path: &Path,
    format: Format,
    batch: usize,
    show_progress: bool,
) -> Result<ImportReport, crate::ctl::CtlError> {
    let size = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .len();
    let bytes = Arc::new(AtomicU64::new(0));
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let started = Instant::now();
    let reader = {
        let (path, bytes) = (path.to_path_buf(), bytes.clone());
        tokio::task::spawn_blocking(move || read_file(path, format, batch.max(1), bytes, sender))
    };
    let progress = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let ticker = progress.clone().map(|bar| {
        let bytes = bytes.clone();
        tokio::spawn(async move {
            loop {
                let read = bytes.load(Ordering::Relaxed);
                bar.set_position(read);
                let elapsed = started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{:.1} MB/s", read as f64 / elapsed / 1e6));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut client = pb::qualification_history_client::QualificationHistoryClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let response = client
        .import_qualifications(ReceiverStream::new(receiver))
        .await;
    let read = reader
        .await
        .map_err(|e| anyhow::anyhow!("reader failed: {e}"))?;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let response = response?.into_inner();
    let read = read?;
    let seconds = started.elapsed().as_secs_f64();
    let records = read.lines.len() as u64 + read.local.len() as u64;
    let mut rejections = read.local;
    rejections.extend(response.rejections.into_iter().map(|r| {
        LineRejection {
            line: read
                .lines
                .get(r.record_index as usize)
                .map_or(0, |line| u64::from(*line)),
            field: r.field,
            reason: r.reason,
        }
    }));
    rejections.sort_by_key(|r| r.line);
    Ok(ImportReport {
        records,
        accepted: response.accepted,
        unchanged: response.unchanged,
        rejected: response.rejected + (records - read.lines.len() as u64),
        rejections,
        rejections_truncated: response.rejections_truncated,
        seconds,
        records_per_second: records as f64 / seconds.max(1e-9),
    })
}
