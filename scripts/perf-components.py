#!/usr/bin/env python3
"""Where the server's core goes per call, from `perf script` of `mpi-bench floor`.

Reads the output of `perf script -F comm,tid,time,ip,sym` (inline frames included) of a
`perf record -g` of `mpi-bench floor` (scripts/profile-floor.sh runs both), finds the echo
phase and the FindLocations phase by time, and groups each phase's samples of the server's
threads by the first rule below that matches a frame of the sample's stack. With each phase's
calls per second (from the floor's output) it prints microseconds of server CPU per call.

    perf-components.py SCRIPT_TXT ECHO_PER_S FIND_PER_S [HZ] [--find-seconds N]
                       [--unaudited PER_S] [--durable PER_S] [--within FRAME PATTERN...]

With `--find-seconds N`, the FindLocations phase is only the last N seconds in which the
server ran FindLocations (the floor's measurement, after its warm-up, which asks for every
patient once at another rate).

With `--unaudited PER_S`, it also reports the phase in which the server ran FindLocations
without the audit log (`floor` measures it before the audited server starts): the
FindLocations seconds before the first sample of the audited server's `audit-writer` thread
(the last such thread to appear), with PER_S its calls per second. `--find-seconds` applies to
it too.

With `--durable PER_S`, it also reports the phase in which the echo server answered each call
only once a record of its own was durable (`floor` measures it before the audited server
starts): the seconds in which its log's writer thread, `durable-echo`, ran, with PER_S its
calls per second.

With `--within`, it then breaks the FindLocations phase's samples that have a frame
containing FRAME down by PATTERN: for each, the share of those samples with a frame
containing it (a sample can count for several patterns), or, for a PATTERN written `=TEXT`,
with TEXT in the leaf frame alone (the function's own code, not what it calls).

The client's thread (`bench-core-1`) and the benchmark's main thread (import and
registration before the phases) are left out; the phases are the whole seconds in which the
server's worker thread was busy, less the first and last second of each.
"""

import collections
import re
import sys

# (component, patterns), matched against frame names without their generic arguments: a
# sample belongs to the component of the innermost frame (nearest the leaf) that matches (the
# first rule in this order, where several match that frame), so a TLS write under HTTP/2 is
# TLS, a store read under the person view is the person view.
RULES = [
    ("HTTP/2 (h2, hyper)", ["h2::", "hyper::", "hyper_util::"]),
    ("TLS and socket reads and writes", ["rustls::", "tokio_rustls::"]),
    ("protobuf encoding and decoding", ["prost::"]),
    ("adapter: audit event, metrics, log line, timeout", ["mpi_server::services::"]),
    ("echo server's handler", ["mpi_bench::floor::Echo as", "mpi_bench::floor::{impl"]),
    ("audit hand-over on the reactor", ["mpi_server::audit_log::"]),
    ("request and answer conversion", ["mpi_server::convert::"]),
    ("client certificate to principal", ["mpi_server::identity::"]),
    ("disclosure rule, filter, sort, page", ["Mpi>::find_locations"]),
    ("person view (store reads, decoding)", ["Mpi>::disclosure_view"]),
    ("resolution (insured ID to person)", ["Mpi>::subject"]),
    # Last, so that any rule above wins on the same frame (the adapter's and the echo
    # handler's frames name the generated trait too): tonic's server, axum's router, tower's
    # layers and the generated service glue, which hyper's stream polls around the handler.
    (
        "gRPC service layers (tonic, axum, tower)",
        ["tonic::", "tonic_", "axum::", "tower::", "tower_http::", "mpi_proto::"],
    ),
]

# In a frame of every FindLocations of kouiki-mpi (not of the echo server).
FINDING = "mpi_server::services::RecordLocatorAdapter as"

GENERIC = re.compile(r"(?<=[\w}\])>])<[^<>]*>")


def bare(frame):
    """A frame's name without generic arguments (`poll<F>` is `poll`) nor its offset."""
    frame = re.sub(r"\+0x[0-9a-f]+$", "", frame)
    while True:
        stripped = GENERIC.sub("", frame)
        if stripped == frame:
            return frame
        frame = stripped


def samples(path):
    """(comm, tid, time, frames) for every sample of a `perf script` text."""
    current = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if current:
                    yield current
                current = None
            elif not line[0].isspace():
                fields = line.split()
                stamp = next(f for f in reversed(fields) if f.endswith(":"))
                current = (fields[0], fields[1], float(stamp[:-1]), [])
            elif current is not None:
                parts = line.strip().split(None, 1)
                current[3].append(parts[1] if len(parts) > 1 else "?")
    if current:
        yield current


def classify(comm, frames):
    if not comm.startswith("tokio"):
        return "thread " + comm
    for frame in frames:  # leaf first
        name = bare(frame)
        for component, patterns in RULES:
            if any(p in name for p in patterns):
                return component
    return "tokio and the rest"


def take_option(args, flag, parse):
    """`args` without `flag` and its value, and the value parsed (None without the flag)."""
    if flag not in args:
        return args, None
    at = args.index(flag)
    return args[:at] + args[at + 2:], parse(args[at + 1])


def main():
    args = sys.argv[1:]
    within = []
    if "--within" in args:
        at = args.index("--within")
        args, within = args[:at], args[at + 1:]
        if len(within) < 2:
            sys.exit("--within needs a frame and at least one pattern")
    args, find_seconds = take_option(args, "--find-seconds", int)
    args, unaudited_rate = take_option(args, "--unaudited", float)
    args, durable_rate = take_option(args, "--durable", float)
    path, echo_rate, find_rate = args[0], float(args[1]), float(args[2])
    hz = float(args[3]) if len(args) > 3 else 499.0
    every = [s for s in samples(path) if s[0] not in ("bench-core-1", "mpi-bench")]
    workers = collections.Counter(tid for comm, tid, _, _ in every if comm == "tokio-rt-worker")
    # The server's worker: the tokio thread that ran FindLocations most.
    finding = collections.Counter(
        tid
        for comm, tid, _, frames in every
        if comm == "tokio-rt-worker" and any(FINDING in f for f in frames)
    )
    if not finding:
        sys.exit("no FindLocations samples: was the benchmark built with debug line tables?")
    server = finding.most_common(1)[0][0]
    busy = collections.Counter(int(t) for _, tid, t, _ in every if tid == server)
    real = collections.Counter(
        int(t)
        for _, tid, t, frames in every
        if tid == server and any(FINDING in f for f in frames)
    )
    every_find_sec = sorted(s for s, n in real.items() if n > 0.3 * hz)
    # The audited server's writer: the audit-writer thread that appeared last. The seconds of
    # FindLocations before its first are the server's without the audit log.
    first_seen = {}
    for comm, tid, t, _ in every:
        if comm == "audit-writer":
            first_seen.setdefault(tid, t)
    writer_from = int(max(first_seen.values())) if first_seen else every_find_sec[0]
    find_secs = [s for s in every_find_sec if s >= writer_from] or every_find_sec
    bare_secs = [s for s in every_find_sec if s < find_secs[0]]

    def measured(secs):
        lo, hi = secs[0] + 1, secs[-1]
        if find_seconds is not None:
            lo = max(lo, secs[-1] - find_seconds + 2)
        return lo, hi

    find_lo, find_hi = measured(find_secs)
    echo_secs = sorted(s for s, n in busy.items() if n > 0.8 * hz and s < every_find_sec[0] and real[s] == 0)
    # The echo phase: the run of busy seconds that ends where the FindLocations phase begins.
    run = []
    for s in reversed(echo_secs):
        if run and s != run[-1] - 1:
            break
        run.append(s)
    echo_lo, echo_hi = min(run) + 1, max(run)
    print(f"server worker thread {server} ({workers[server]} samples)")
    phases = [("echo floor", echo_lo, echo_hi, echo_rate)]
    if unaudited_rate is not None:
        if not bare_secs:
            sys.exit("--unaudited: no FindLocations before the audited server's writer appeared")
        phases.append(("FindLocations without the audit log", *measured(bare_secs), unaudited_rate))
    if durable_rate is not None:
        durable_secs = sorted({int(t) for comm, _, t, _ in every if comm == "durable-echo"})
        if not durable_secs:
            sys.exit("--durable: the durable echo's writer thread never ran")
        phases.append(("echo with a durable append per call", durable_secs[0] + 1, durable_secs[-1], durable_rate))
    phases.append(("FindLocations", find_lo, find_hi, find_rate))
    for label, lo, hi, rate in phases:
        seconds = hi - lo
        if seconds <= 0:
            print(f"\n{label}: phase too short to measure")
            continue
        counts = collections.Counter(
            classify(comm, frames) for comm, _, t, frames in every if lo <= t < hi
        )
        total = sum(counts.values())
        print(f"\n{label}: {seconds} s at {rate:.0f} calls/s; server threads busy "
              f"{total / hz / seconds:.2f} of a core = {total / hz / seconds / rate * 1e6:.1f} us per call")
        print("| component | share | us per call |")
        print("|---|---:|---:|")
        for name, n in counts.most_common():
            print(f"| {name} | {100 * n / total:.1f} % | {n / hz / seconds / rate * 1e6:.1f} |")
    if within:
        breakdown(every, within[0], within[1:], find_lo, find_hi, find_rate, hz)


def breakdown(every, frame, patterns, lo, hi, rate, hz):
    """The FindLocations phase's samples under `frame`, by pattern (see the module's text)."""
    inside = []
    for comm, _, t, frames in every:
        if lo <= t < hi:
            names = [bare(f) for f in frames]
            if any(frame in name for name in names):
                inside.append(names)
    seconds = hi - lo
    per_call = 1e6 / hz / seconds / rate
    print(f"\nFindLocations, samples with a frame containing {frame!r}: {len(inside)}, "
          f"{len(inside) * per_call:.1f} us per call")
    if not inside:
        return
    print("| in | share | us per call |")
    print("|---|---:|---:|")
    for pattern in patterns:
        if pattern.startswith("="):
            n = sum(1 for names in inside if names and pattern[1:] in names[0])
            label = f"{pattern[1:]} (own code)"
        else:
            n = sum(1 for names in inside if any(pattern in name for name in names))
            label = pattern
        print(f"| {label} | {100 * n / len(inside):.1f} % | {n * per_call:.1f} |")


if __name__ == "__main__":
    main()
