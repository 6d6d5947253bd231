//! `scale`: the scale curve. For each population size, on a fresh data directory: the
//! population's ImportQualifications and RegisterLocations (both durable, as in `locations`),
//! then, with the server pinned to core 0 and the client to core 1 as in `floor`: the echo
//! floor of `floor` (a bare tonic server with the same mutual TLS echoing one of this server's
//! answers, on the same core, while the measured server idles), so that every size carries
//! the machine's own transport floor; a warm-up that asks for every patient once and then runs
//! as long as a measurement (so that the store's cache holds what the measurements read at
//! every size); FindLocations as fast as 64 calls in flight go, FindLocations open loop at half
//! that rate (its p99 is the latency target), and the mixed load's maximum (90 % finds, 9 %
//! registrations, 1 % consent changes). The measured server runs in a child process (`mpi-bench
//! serve`), so that its resident memory, now and at its peak, is its own. Bytes of store pages
//! and of files per location and that memory are reported per size. A PNG plot of throughput and
//! p99 against population size is written when asked for. `--open-loop-rate` and
//! `--unaudited` change the open loop's rate and take the audit log away, to see what the
//! latency depends on; `--latency-rates` adds open loops at further rates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mpi_store_redb::RedbStore;
use plotters::prelude::*;

use crate::floor::{self, Flavour, Pinned};
use crate::locations::{self, Running};
use crate::{Row, soak};

/// What one population size measured.
pub struct Point {
    /// Persons in the population.
    pub persons: usize,
    /// Locations stored.
    pub locations: u64,
    /// ImportQualifications records per second.
    pub import: f64,
    /// RegisterLocations locations per second.
    pub register: f64,
    /// The echo floor, measured beside the server as `floor` measures it (64 in flight).
    pub echo: Row,
    /// FindLocations at its maximum (64 in flight).
    pub find: Row,
    /// FindLocations open loop at half of `find`'s rate (or `Settings::open_loop_rate`).
    pub half: Row,
    /// Calls of the open loop not sent because 2,048 were waiting (0 unless it fell behind).
    pub half_not_sent: u64,
    /// FindLocations open loop at each of `Settings::latency_rates`: the rate, the row and the
    /// calls not sent.
    pub by_rate: Vec<(f64, Row, u64)>,
    /// The mixed load's maximum, operations per second.
    pub mixed: f64,
    /// Store pages added by registration, per stored location.
    pub page_bytes_per_location: f64,
    /// Size of the store files (main and location index) per stored location.
    pub file_bytes_per_location: f64,
    /// Resident memory of the server process after the measurements, MiB.
    pub server_mib: f64,
    /// Peak resident memory of the server process (from its start), MiB.
    pub server_peak_mib: f64,
}

fn rate(row: &Row) -> f64 {
    row.operations as f64 / row.seconds.max(f64::EPSILON)
}

/// Settings of the curve.
pub struct Settings {
    /// Seed of every population.
    pub seed: u64,
    /// Records per ImportQualifications message.
    pub batch: usize,
    /// Record networks and events per person of the plan.
    pub networks: usize,
    /// Record events per person on average.
    pub events: usize,
    /// RegisterLocations batches in flight per network.
    pub register_in_flight: usize,
    /// Seconds of each measurement (after as long a warm-up).
    pub seconds: u64,
    /// How the pinned server schedules its tasks.
    pub flavour: Flavour,
    /// Page cache of the store files, in MiB (`store.cache_mib`).
    pub cache_mib: crate::Caches,
    /// The open loop's rate, if not half the maximum.
    pub open_loop_rate: Option<f64>,
    /// Further open loops at these rates, after the one at half the maximum (the latency
    /// against the load).
    pub latency_rates: Vec<f64>,
    /// Whether the measured server audits (false only to measure what the audit log costs).
    pub audited: bool,
}

/// Measures one population size.
pub fn measure(persons: usize, settings: &Settings) -> anyhow::Result<Point> {
    let started = std::time::Instant::now();
    let population = mpi_synth::generate(&mpi_synth::Config {
        persons,
        seed: settings.seed,
        until: crate::horizon(),
    });
    let plan = mpi_synth::records::plan_records(
        &population,
        settings.networks,
        settings.events,
        settings.seed,
    );
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let tls = tempfile::tempdir()?;
    let ca = Arc::new(mpi_server::pki::CertAuthority::generate("mpi-bench CA")?);
    // The runtime `kouiki-mpi serve` runs on: the servers started in this process run on it.
    let runtime = mpi_server::runtime::builder().build()?;
    let (import, probed) = runtime.block_on(crate::import(
        &population,
        &data_dir,
        settings.batch,
        settings.cache_mib,
    ))?;
    locations::load_consents(&population, &plan, &data_dir)?;
    let main_file = data_dir.join("mpi.redb");
    let allocated =
        || -> anyhow::Result<u64> { Ok(RedbStore::open(&main_file)?.allocated_bytes()?) };
    let before = allocated()?;
    let register = runtime.block_on(async {
        let server =
            Running::start(&data_dir, tls.path(), ca.clone(), true, settings.cache_mib).await?;
        let register =
            locations::register(&server, &population, &plan, settings.register_in_flight).await?;
        server.stop().await?;
        anyhow::Ok(register)
    })?;
    drop(runtime);
    let after = allocated()?;
    let stored = register.operations.max(1);
    let files: u64 = ["mpi.redb", "location-index.redb"]
        .iter()
        .map(|name| std::fs::metadata(data_dir.join(name)).map_or(0, |m| m.len()))
        .sum();
    let waited = probed.latency.unwrap_or_default();
    eprintln!(
        "scale {persons}: {} records imported (consent changes beside it: {}, p50 {:.1} ms, p99 {:.1} ms), {stored} locations registered ({:.0} s so far)",
        import.operations,
        probed.operations,
        waited.p50 as f64 / 1000.0,
        waited.p99 as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );

    let (population, plan) = (Arc::new(population), Arc::new(plan));
    let clients = Pinned::new(1, Flavour::CurrentThread)?;
    let how = locations::ChildServer {
        cache_mib: settings.cache_mib,
        core: 0,
        flavour: settings.flavour,
        audited: settings.audited,
    };
    let server = Arc::new(Running::spawn(&data_dir, tls.path(), ca.clone(), how)?);
    let duration = Duration::from_secs(settings.seconds.max(1));
    let load = floor::Load {
        duration,
        connections: 4,
        concurrency: 64,
    };
    let echo = {
        let echoes = Pinned::new(0, settings.flavour)?;
        floor::Echoes {
            servers: &echoes,
            clients: &clients,
            tls_dir: tls.path(),
            population: &population,
            plan: &plan,
            load,
        }
        .floor(&server)?
        .0
    };
    let find = |label: &'static str| {
        let (server, population, plan) = (server.clone(), population.clone(), plan.clone());
        clients.run(async move {
            locations::find(
                server.target(),
                &population,
                &plan,
                load.duration,
                load.connections,
                load.concurrency,
                label,
            )
            .await
        })
    };
    // Every patient once, then as long again as a measurement: the store's cache then holds
    // what the measurement reads at every size (a fixed-time warm-up left the largest
    // population's cache filling through its measurement; docs/benchmarks.md).
    let warmed = {
        let (server, population, plan) = (server.clone(), population.clone(), plan.clone());
        clients.run(async move {
            locations::ask_each_once(
                server.target(),
                &population,
                &plan,
                load.connections,
                load.concurrency,
            )
            .await
        })??
    };
    find("warm-up")??;
    let at_max = find("FindLocations, 64 in flight")??;
    let open_loop = |rate: f64, label: &'static str| {
        let (server, population, plan) = (server.clone(), population.clone(), plan.clone());
        clients.run(async move {
            locations::paced_find(
                server.target(),
                &population,
                &plan,
                rate,
                duration,
                load.connections,
                label,
            )
            .await
        })
    };
    let (half, half_not_sent) = open_loop(
        settings.open_loop_rate.unwrap_or(rate(&at_max) / 2.0),
        "FindLocations, open loop",
    )??;
    let mut by_rate = Vec::new();
    for &at in &settings.latency_rates {
        let (row, not_sent) = open_loop(at, "FindLocations, open loop at a given rate")??;
        by_rate.push((at, row, not_sent));
    }
    let mixed = {
        let (server, population, plan) = (server.clone(), population.clone(), plan.clone());
        clients.run(async move {
            let mix = Arc::new(soak::Mix::prepare(&server, &population, &plan).await?);
            soak::maximum(&mix, duration).await
        })??
    };
    let (server_mib, server_peak_mib) = server
        .child_resident_mib()
        .context("resident memory of the server process")?;
    let server = Arc::into_inner(server).ok_or_else(|| anyhow::anyhow!("server still in use"))?;
    clients.run(async move { server.stop().await })??;
    eprintln!(
        "scale {persons}: measured in {:.0} s (warm-up: each of {} patients asked once in {:.0} s)",
        started.elapsed().as_secs_f64(),
        warmed.0,
        warmed.1.as_secs_f64()
    );
    Ok(Point {
        persons,
        locations: stored,
        import: rate(&import),
        register: rate(&register),
        echo,
        find: at_max,
        half,
        half_not_sent,
        by_rate,
        mixed,
        page_bytes_per_location: after.saturating_sub(before) as f64 / stored as f64,
        file_bytes_per_location: files as f64 / stored as f64,
        server_mib,
        server_peak_mib,
    })
}

/// Prints the curve as a Markdown table.
pub fn print(points: &[Point]) {
    println!(
        "| persons | locations | import records/s | register locations/s | echo floor/s | find/s (64 in flight) | find / echo | find p50 / p99 ms | find open loop (half max unless --open-loop-rate): p50 / p99 / p99.9 ms | mixed ops/s | page bytes per location | file bytes per location | server resident MiB (peak) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in points {
        let (f, h) = (
            p.find.latency.unwrap_or_default(),
            p.half.latency.unwrap_or_default(),
        );
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {}{:.2} / {:.2} / {:.2} (at {:.0}/s) | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}) |",
            p.persons,
            p.locations,
            p.import,
            p.register,
            rate(&p.echo),
            rate(&p.find),
            rate(&p.find) / rate(&p.echo).max(1.0),
            ms(f.p50),
            ms(f.p99),
            fell_behind(p),
            ms(h.p50),
            ms(h.p99),
            ms(h.p999),
            rate(&p.half),
            p.mixed,
            p.page_bytes_per_location,
            p.file_bytes_per_location,
            p.server_mib,
            p.server_peak_mib
        );
    }
    if points.iter().any(|p| !p.by_rate.is_empty()) {
        println!("\nFindLocations open loop by rate (latency against the load):\n");
        println!("| persons | calls/s asked | calls/s answered | p50 ms | p99 ms | p99.9 ms |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for p in points {
            for (asked, row, not_sent) in &p.by_rate {
                let latency = row.latency.unwrap_or_default();
                let behind = if *not_sent > 0 {
                    format!(" (fell behind: {not_sent} not sent)")
                } else {
                    String::new()
                };
                println!(
                    "| {} | {asked:.0} | {:.0}{behind} | {:.2} | {:.2} | {:.2} |",
                    p.persons,
                    rate(row),
                    ms(latency.p50),
                    ms(latency.p99),
                    ms(latency.p999)
                );
            }
        }
    }
    if let (Some(first), Some(last)) = (points.first(), points.last())
        && points.len() > 1
    {
        println!(
            "\nFindLocations at {} persons / at {} persons: {:.0} / {:.0} = {:.2}",
            last.persons,
            first.persons,
            rate(&last.find),
            rate(&first.find),
            rate(&last.find) / rate(&first.find).max(1.0)
        );
    }
}

/// What the open loop's cell says first when it fell behind (its latencies are then those of
/// the calls sent only).
fn fell_behind(p: &Point) -> String {
    if p.half_not_sent == 0 {
        return String::new();
    }
    format!(
        "fell behind: {} calls not sent (2,048 waiting); of those sent ",
        p.half_not_sent
    )
}

/// 100000 as "100k", 1000000 as "1M".
fn persons_label(x: &f64) -> String {
    match *x {
        x if x >= 1e6 => format!("{}M", (x / 1e6 * 10.0).round() / 10.0),
        x if x >= 1e3 => format!("{}k", (x / 1e3).round()),
        x => format!("{x:.0}"),
    }
}

/// A sans-serif font of the system for the plot's text (plotters draws no text without one).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|path| Path::new(path).exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no DejaVu Sans font for the plot (looked for {}); install fonts-dejavu-core",
                FONTS.join(", ")
            )
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a font plotters can read"))?;
    Ok(())
}

/// One line of a panel: its legend, colour and value at a point.
type Series = (&'static str, RGBColor, fn(&Point) -> f64);

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Draws `series` against population size (log scale) on `area`, with a horizontal reference
/// line at `reference` if given.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    points: &[Point],
    caption: &str,
    y_desc: &str,
    series: &[Series],
    reference: Option<(&'static str, f64)>,
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let persons = |p: &Point| p.persons as f64;
    let low = points.iter().map(persons).fold(f64::MAX, f64::min);
    let high = points.iter().map(persons).fold(0.0, f64::max);
    let x_range = (low / 2.0)..(high * 2.0);
    let y_max = points
        .iter()
        .flat_map(|p| series.iter().map(move |(_, _, y)| y(p)))
        .fold(reference.map_or(0.0, |(_, at)| at), f64::max)
        .max(1.0)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .caption(caption, ("sans-serif", 18))
        .build_cartesian_2d(x_range.clone().log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("persons (log scale)")
        .y_desc(y_desc)
        .x_labels(4)
        .x_label_formatter(&persons_label)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(WHITE)
        .draw()?;
    for &(name, color, y) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (persons(p), y(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.into_iter()
                .map(|at| Circle::new(at, 4, color.filled())),
        )?;
    }
    if let Some((name, at)) = reference {
        chart
            .draw_series(LineSeries::new(
                vec![(x_range.start, at), (x_range.end, at)],
                BLACK.stroke_width(1),
            ))?
            .label(name)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    Ok(())
}

/// Writes a PNG of throughput (left) and p99 (right) against population size to `path`.
pub fn plot(points: &[Point], path: &Path, caption: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!points.is_empty(), "nothing to plot");
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(700);
    panel(
        &left,
        points,
        "throughput",
        "per second",
        &[
            ("FindLocations, 64 in flight", BLUE, |p| rate(&p.find)),
            ("echo floor (calls/s / 10)", RGBColor(120, 120, 120), |p| {
                rate(&p.echo) / 10.0
            }),
            ("mixed load (90/9/1)", RED, |p| p.mixed),
            ("RegisterLocations (locations/s / 10)", GREEN, |p| {
                p.register / 10.0
            }),
            (
                "ImportQualifications (records/s / 10)",
                RGBColor(230, 140, 0),
                |p| p.import / 10.0,
            ),
        ],
        None,
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &right,
        points,
        "FindLocations p99 latency",
        "ms",
        &[
            ("p99, 64 in flight", BLUE, |p| {
                ms(p.find.latency.unwrap_or_default().p99)
            }),
            ("p99 at half the maximum", MAGENTA, |p| {
                ms(p.half.latency.unwrap_or_default().p99)
            }),
        ],
        Some(("target at half the maximum: 2 ms", 2.0)),
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present()?;
    Ok(())
}
