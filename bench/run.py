"""Side-by-side benchmark of convex-cdc on one machine, in one run (``make bench``).

Starts a devserver (its own process) with ``--docs`` generated documents and moto's S3
server, then measures each step as its own child process (wall seconds, rows/s, MB/s of
server responses, peak RSS):

1. ``devserver`` — a bare client fetching every list_snapshot page unparsed: what the
   server alone can serve;
2. ``floor`` — convex-cdc's HTTP client fetching and parsing every page, discarding it;
3. ``sync_snapshot``, ``materialize_full``, ``publish_full``, ``extract_full``,
   ``apply_silver_full`` — the real CLI commands on the initial snapshot;
   ``publish_full_no_delta`` publishes the same staging to another prefix without the
   Delta commits, so the two publish lines show what the Delta tables cost (each the
   median of ``--publish-samples`` alternating publishes to their own prefixes);
4. 1% of the documents changed uniformly at random (2/3 updated, 1/3 deleted), then
   ``sync_delta``, ``materialize_incremental``, ``publish_incremental`` (and
   ``…_no_delta``), ``extract_delta``, ``apply_silver_incremental``;
5. 1% changed again, recent-heavy (90% of the changes among each table's newest 10% of
   documents by ``_creationTime``, how chat, task and event tables are updated), then the
   same steps with the suffix ``_recent``;
6. ``sync_snapshot_rss_check`` — the snapshot sync again on a smaller devserver, to see
   that memory does not grow with table size;
7. on a devserver of ``--peer-docs`` documents (150k): ``sync_snapshot_peer_check`` and
   ``peer``, Airbyte's ``airbyte-source-convex`` reading the same server, side by side
   (CPU per row, start-up included).

Prints the table, the targets with PASS/MISS, and one last ``BENCH {json}`` line. Progress
goes to stderr. Every server and child is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from airbyte_peer import PeerUnavailable, peer_step
from change_workload import ChangeSummary, Workload
from scorecard import BenchRun, RssBaseline, bench_json, render
from servers import DevserverProcess, MotoProcess
from steps import BENCH_DIR, StepContext, StepResult, cli_step, walk_step

BUCKET = "bench"
S3_URL = f"s3://{BUCKET}/lake"
S3_URL_NO_DELTA = f"s3://{BUCKET}/lake-no-delta"
S3_URL_WARMUP = f"s3://{BUCKET}/warm-up"
PUBLISH_VARIANTS = (("", S3_URL), ("_no_delta", S3_URL_NO_DELTA))
"""Step-name suffix and prefix of publishing with Delta commits and with ``--no-delta``."""
RSS_CHECK_DOCS = 250_000
PEER_DOCS = 150_000


def progress(message: str) -> None:
    """A progress line on stderr (stdout holds only the results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="documents (default 1M)")
    parser.add_argument("--skip-peer", action="store_true", help="do not run Airbyte's connector")
    parser.add_argument("--skip-databricks", action="store_true", help="no extract/apply-silver")
    parser.add_argument("--skip-rss-check", action="store_true", help="no second, smaller sync")
    parser.add_argument(
        "--peer-docs",
        type=int,
        default=PEER_DOCS,
        help=f"documents of the sync-vs-Airbyte comparison (default {PEER_DOCS:,})",
    )
    parser.add_argument(
        "--rss-check-docs",
        type=int,
        default=None,
        help=f"documents of the RSS comparison run (default {RSS_CHECK_DOCS:,}, or --docs/4 "
        "when --docs is not larger)",
    )
    parser.add_argument(
        "--publish-samples",
        type=int,
        default=5,
        help="publishes of each kind (with/without Delta) per phase; the median is shown "
        "(default 5: with 3, the same code measured the Delta overhead at -3%% to +27%%)",
    )
    parser.add_argument(
        "--rss-baseline",
        type=Path,
        help="the --json-out file of a run with fewer documents: the targets then include "
        "each step's peak RSS growth over it (issue 13: 10M within 1.2x of 1M)",
    )
    parser.add_argument("--change-fraction", type=float, default=0.01, help="default 0.01")
    parser.add_argument("--keep-dir", type=Path, help="keep every artefact and log here")
    parser.add_argument("--json-out", type=Path, help="also write the BENCH json here")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=BENCH_DIR / ".peer-venv",
        help="virtualenv for the Airbyte connector (created on first use)",
    )
    args = parser.parse_args(argv)
    if args.docs < 100:
        parser.error("--docs must be at least 100")
    if args.publish_samples < 1:
        parser.error("--publish-samples must be at least 1")
    if args.rss_check_docs is None:
        args.rss_check_docs = RSS_CHECK_DOCS if args.docs > RSS_CHECK_DOCS else args.docs // 4
    return args


def _add(run: BenchRun, step: StepResult) -> StepResult:
    run.steps[step.name] = step
    rate = step.rows_per_second
    progress(
        f"{step.name}: {step.wall_seconds:.2f} s, peak RSS {step.peak_rss_mb:.0f} MB"
        + ("" if rate is None else f", {rate:,.0f} rows/s")
    )
    return step


def _convex_steps(
    run: BenchRun,
    context: StepContext,
    phase: str,
    *,
    skip_databricks: bool,
    endpoint: str,
    publish_samples: int,
    suffix: str = "",
) -> None:
    """sync → materialize → publish (→ extract → apply-silver) for one phase."""
    dest, warehouse = str(context.work / "lake"), str(context.work / "warehouse")
    sync_name = ("sync_snapshot" if phase == "full" else "sync_delta") + suffix
    build = ("materialize_full" if phase == "full" else "materialize_incremental") + suffix
    step, _ = cli_step(context, sync_name, ["sync", "--dest", dest])
    _add(run, step)
    step, report = cli_step(context, build, ["materialize", "--dest", dest])
    step.rows = report.get("rows_upserted", 0) + report.get("rows_deleted", 0)
    step.how = "rows upserted + deleted (MaterializeReport)"
    step.details = {k: report.get(k) for k in ("files_written", "files_removed", "full_rebuild")}
    _add(run, step)
    if phase == "full":
        # Moto's first uploads are slower than later ones; a throwaway publish keeps that
        # out of whichever measured publish would come first.
        warm = ["publish", "--dest", dest, "--to", S3_URL_WARMUP, "--endpoint-url", endpoint]
        cli_step(context, "publish_warmup", [*warm, "--no-delta"])
    _publish_steps(run, context, phase, dest, endpoint, suffix, samples=publish_samples)
    if skip_databricks:
        return
    extract = ("extract_full" if phase == "full" else "extract_delta") + suffix
    step, report = cli_step(context, extract, ["databricks", "extract", "--warehouse", warehouse])
    step.details = {"bronze_commits": report.get("bronze_commits")}
    _add(run, step)
    step, report = cli_step(
        context,
        f"apply_silver_{phase}{suffix}",
        ["databricks", "apply-silver", "--warehouse", warehouse],
    )
    step.rows = report.get("rows_read")
    step.how = "bronze rows read (SilverReport)"
    _add(run, step)


def _publish_steps(  # noqa: PLR0917 - private, one call site, every argument different
    run: BenchRun,
    context: StepContext,
    phase: str,
    dest: str,
    endpoint: str,
    suffix: str,
    *,
    samples: int,
) -> None:
    """``publish`` with and without Delta commits, ``samples`` times each, alternating.

    Sample ``n`` publishes to its own pair of prefixes (the same pair in every phase, so an
    incremental sample is a real incremental publish), with the order of the two variants
    swapped on every other sample. The step recorded for each variant is its median
    sample by the command's own elapsed time: single publishes of a few hundred ms on a
    small machine vary by more than the Delta commits cost.
    """
    taken: dict[str, list[StepResult]] = {variant: [] for variant, _ in PUBLISH_VARIANTS}
    for sample in range(samples):
        order = PUBLISH_VARIANTS if sample % 2 == 0 else PUBLISH_VARIANTS[::-1]
        for variant, url in order:
            to = url if sample == 0 else f"{url}-sample{sample}"
            extra = ["--no-delta"] if variant else []
            args = ["publish", "--dest", dest, "--to", to, "--endpoint-url", endpoint, *extra]
            name = f"publish_{phase}{variant}{suffix}"
            step, report = cli_step(context, f"{name}.{sample}", args)
            step.name = name
            uploaded, skipped = report.get("files_uploaded", 0), report.get("files_skipped", 0)
            step.how = "files/bytes uploaded (PublishReport); median sample"
            step.details = {
                "files_uploaded": uploaded,
                "files_total": uploaded + skipped,
                "bytes_uploaded": report.get("bytes_uploaded", 0),
                "delta_commits": report.get("delta_commits", 0),
            }
            taken[variant].append(step)
    for steps in taken.values():
        by_time = sorted(steps, key=lambda s: s.inner_seconds or s.wall_seconds)
        median = by_time[len(by_time) // 2]
        median.details["samples_inner_s"] = [
            None if s.inner_seconds is None else round(s.inner_seconds, 3) for s in steps
        ]
        _add(run, median)


def _measure(run: BenchRun, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
    logs = work / "logs"
    progress(f"starting the devserver with {args.docs:,} documents (populating)...")
    server = DevserverProcess.start(docs=args.docs, log_dir=logs)
    stack.callback(server.stop)
    run.setup["devserver_start_s"] = round(server.populate_seconds, 1)
    progress(f"devserver ready at {server.url} after {server.populate_seconds:.1f} s")
    moto = MotoProcess.start(log_dir=logs)
    stack.callback(moto.stop)
    moto.create_bucket(BUCKET)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEX_CDC_")}
    context = StepContext(work, {**base_env, **server.env(), **moto.env()}, server.meter())

    _add(run, walk_step(context, "devserver", "raw"))
    floor = _add(run, walk_step(context, "floor", "floor"))
    convex_steps = functools.partial(
        _convex_steps,
        run,
        context,
        skip_databricks=args.skip_databricks,
        endpoint=moto.url,
        publish_samples=args.publish_samples,
    )
    convex_steps("full")

    workloads: tuple[tuple[Workload, str], ...] = (("uniform", ""), ("recent", "_recent"))
    for workload, suffix in workloads:
        progress(f"changing {args.change_fraction:.1%} of the documents ({workload})...")
        change = _change_in_child(
            server.url,
            server.key,
            fraction=args.change_fraction,
            expected_documents=floor.rows or args.docs,
            workload=workload,
        )
        run.setup[f"change{suffix}"] = (
            f"{change.updates:,} updates + {change.deletes:,} deletes of "
            f"{change.sampled_from:,} documents in {change.transactions} transactions, "
            f"{change.seconds:.1f} s"
            + (
                ""
                if change.recent_changes is None
                else f"; {change.recent_changes:,} among each table's newest 10%"
            )
        )
        convex_steps("incremental", suffix=suffix)
        expected = change.updates + change.deletes
        run.steps[f"sync_delta{suffix}"].details["expected_rows"] = expected
    peak = server.peak_rss_mb()
    run.setup["devserver_peak_rss_mb"] = None if peak is None else round(peak)
    server.stop()

    if not args.skip_rss_check and args.rss_check_docs >= 100:
        run.rss_check_docs = args.rss_check_docs
        progress(f"RSS check: devserver with {args.rss_check_docs:,} documents...")
        small = DevserverProcess.start(docs=args.rss_check_docs, log_dir=logs, name="devserver-rss")
        stack.callback(small.stop)
        small_context = StepContext(work, {**context.env, **small.env()}, small.meter())
        dest = str(work / "lake-rss-check")
        step, _ = cli_step(small_context, "sync_snapshot_rss_check", ["sync", "--dest", dest])
        _add(run, step)
        small.stop()

    if not args.skip_peer:
        _peer_comparison(run, args, work, context, stack)


def _peer_comparison(
    run: BenchRun, args: argparse.Namespace, work: Path, context: StepContext, stack: ExitStack
) -> None:
    """``sync`` and Airbyte's connector on one devserver of ``--peer-docs`` documents."""
    run.peer_docs = args.peer_docs
    progress(f"peer comparison: devserver with {args.peer_docs:,} documents...")
    server = DevserverProcess.start(
        docs=args.peer_docs, log_dir=work / "logs", name="devserver-peer"
    )
    stack.callback(server.stop)
    peer_context = StepContext(work, {**context.env, **server.env()}, server.meter())
    dest = str(work / "lake-peer-check")
    step, _ = cli_step(peer_context, "sync_snapshot_peer_check", ["sync", "--dest", dest])
    _add(run, step)
    progress("peer: installing or reusing the Airbyte connector's venv...")
    try:
        step, run.peer = peer_step(peer_context, server.url, server.key, args.peer_venv)
        _add(run, step)
    except PeerUnavailable as exc:
        run.peer = f"unavailable ({exc})"
        progress(f"peer: {run.peer}")
    server.stop()


def _change_in_child(
    url: str, key: str, *, fraction: float, expected_documents: int, workload: Workload
) -> ChangeSummary:
    """:func:`change_workload.change_documents` in a child process.

    Its sample of documents would grow this process, and a child forked from a large
    process reports that size as its own peak RSS (Linux keeps the pre-exec high-water
    mark in ``ru_maxrss``), which would inflate every step measured after it.
    """
    script = (
        "import dataclasses, json, sys\n"
        "from change_workload import change_documents\n"
        "args = json.loads(sys.argv[1])\n"
        "print(json.dumps(dataclasses.asdict(change_documents(**args))))\n"
    )
    args = {
        "url": url,
        "key": key,
        "fraction": fraction,
        "expected_documents": expected_documents,
        "workload": workload,
    }
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the change workload failed: {done.stderr.strip()[-2000:]}")
    return ChangeSummary(**json.loads(done.stdout.strip().splitlines()[-1]))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind like Ctrl-C, so every child is stopped


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; → exit status."""
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    work = args.keep_dir or Path(tempfile.mkdtemp(prefix="convex-cdc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    run = BenchRun(docs=args.docs, peer="skipped (--skip-peer)" if args.skip_peer else "not run")
    if args.rss_baseline is not None:
        run.rss_baseline = RssBaseline.load(args.rss_baseline)
    run.notes += [
        "rows/s and MB/s use each process's wall time (interpreter start included); "
        "'inner s' is the time the tool measured around its own work",
        "'cpu s' is the step process's user+system CPU (os.wait4); 'server cpu s' is the "
        "devserver's CPU while the step ran (/proc): near 'wall s' means server-bound",
        "resp MB are Convex API response bytes; the devserver runs in its own process",
    ]
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            _measure(run, args, work, stack)
    except KeyboardInterrupt:
        progress("interrupted: every server and child process was stopped")
        return 130
    except Exception as exc:
        # Still print what was measured; the BENCH line carries the error.
        run.error = f"{type(exc).__name__}: {exc}"
        progress(f"failed: {run.error}")
        progress(f"logs: {work / 'logs'}" if args.keep_dir else "rerun with --keep-dir for logs")
    finally:
        if args.keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    run.setup["total_s"] = round(time.perf_counter() - started, 1)
    document = bench_json(run)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    render(run, document)
    return 0 if run.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
