"""The ``batchkit`` command line: a thin shell over ``batchkit.Batch``.

::

    batchkit run MODULE:FUNCTION INPUT --store S --key COL   run a function over a file
    batchkit status STORE [BATCH]                            rows per status; a batch's metrics
    batchkit failed STORE BATCH                              the dead-letter list
    batchkit export STORE BATCH OUT.parquet                  rows to Parquet
    batchkit demo                                            the lead-enrichment scenario
    batchkit plan STORE BATCH | --demo                       the architecture report of a plan

Every command prints ``batchkit: error: <message>`` and exits 2 on a bad argument,
input or store (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl

from . import __version__
from ._batch import DEFAULT_STORE, Batch, _close_store, _open_store
from ._errors import BatchkitError, ConfigError, StoreError, StoreInUseError
from ._executors import BACKENDS
from ._store import STATUSES

__all__ = ["EXIT_ERROR", "EXIT_HALTED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]

EXIT_OK = 0  # the run completed (rows may have failed: see `batchkit failed`)
EXIT_ERROR = 2  # a bad argument, input, function or store; nothing ran
EXIT_HALTED = 3  # on_error="halt" or max_failure_rate stopped the run; it can be resumed
EXIT_INTERRUPTED = 130  # Ctrl-C; finished rows are kept, run the same command to resume

_INPUT_READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    ".parquet": pl.read_parquet,
    ".pq": pl.read_parquet,
    ".csv": pl.read_csv,
}
_MESSAGE_WIDTH = 72  # `failed` shortens error messages to this in its table

_EXIT_CODES = """\
exit codes:
  0    the run completed (some rows may have failed: see `batchkit failed`)
  2    bad arguments, input, function or store; nothing ran
  3    the run halted (--on-error halt or --max-failure-rate); run again to resume
  130  interrupted with Ctrl-C; finished rows are kept, run again to resume
"""


# -- loading the function and the input ----------------------------------------------------


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION``; MODULE is a dotted name (found from the working folder
    first) or a path to a ``.py`` file.

    Example:
        >>> load_function("json:dumps")([1])
        '[1]'
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise ConfigError(
            f"expected MODULE:FUNCTION, got {spec!r}; e.g. jobs:enrich (jobs.py in the "
            "working folder) or path/to/jobs.py:enrich")
    module = _load_module(module_part)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise ConfigError(
                f"module {module_part!r} has no function {attr!r}; its functions are "
                f"{names}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{spec!r} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def _load_module(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or os.sep in name:
        return _load_file(Path(name))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`: modules next to the data come first
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import module {name!r}: no {name.replace('.', '/')}.py in the "
                f"working folder {cwd!r} nor on sys.path; pass a path instead, e.g. "
                f"path/to/{name.rpartition('.')[2]}.py:FUNCTION") from None
        raise _import_failed(name, exc) from None
    except Exception as exc:  # the module itself raised while importing
        raise _import_failed(name, exc) from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"module file {str(path)!r} not found")
    if path.suffix != ".py":
        raise ConfigError(f"module file {str(path)!r} is not a .py file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    # A private name: a file called json.py must not replace the json module.
    name = "_batchkit_job_" + re.sub(r"\W", "_", str(path.resolve()))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failed(str(path), exc) from None
    # Worker processes cannot import the file by that name: send its functions by value.
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _import_failed(name: str, exc: BaseException) -> ConfigError:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return ConfigError(f"importing {name!r} failed{where}: {type(exc).__name__}: {exc}")


def read_input(path: str) -> pl.DataFrame:
    """Read a ``.parquet`` or ``.csv`` file into a frame (a ConfigError otherwise)."""
    source = Path(path)
    reader = _INPUT_READERS.get(source.suffix.lower())
    if reader is None:
        raise ConfigError(
            f"input {path!r} is not a Parquet or CSV file (extension "
            f"{source.suffix or 'none'!r}); allowed: {sorted(_INPUT_READERS)}. Convert it, "
            "e.g. pl.read_json(...).write_parquet('input.parquet')")
    if not source.is_file():
        raise ConfigError(f"input file {path!r} not found")
    try:
        return reader(source)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ConfigError(f"cannot read input {path!r}: {exc}") from None


def default_batch_name(path: str) -> str:
    """A valid batch name from a file name: ``"Leads 2024.csv"`` -> ``"leads_2024"``.

    Example:
        >>> default_batch_name("data/2024 Leads-EU.parquet")
        'batch_2024_leads_eu'
    """
    name = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower()).strip("_")
    if not name[:1].isalpha():
        name = "batch_" + name if name else "batch"
    return name[:63].rstrip("_")


# -- commands ------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    fn = load_function(args.function)
    frame = read_input(args.input)
    name = args.batch or default_batch_name(args.input)
    key = None if args.no_key else args.key
    with Batch(name, store=args.store) as batch:
        new = batch.add(frame, key=key)
        print(f"batch {name!r} in {batch.store_path}: {new:,} new rows added "
              f"({frame.height - new:,} already known)")
        report = batch.run(
            fn, workers=args.workers, chunk_size=args.chunk_size, backend=args.backend,
            retries=args.retries, timeout=args.timeout, on_error=args.on_error,
            max_failure_rate=args.max_failure_rate, only=args.only,
            progress=args.progress)
        print(report)
        store = _quote(batch.store_path)
        if report.counts.get("failed"):
            print(f"failed rows: `batchkit failed {store} {name}` lists them; add "
                  "`--only failed` to this command to re-run them")
        if args.export:
            written = batch.export(args.export)
            print(f"exported {written:,} done rows to {args.export}")
    if report.outcome == "halted":
        print(f"batchkit: run halted: {report.halt_reason}. Run the same command again to "
              "resume", file=sys.stderr)
        return EXIT_HALTED
    return EXIT_OK


def _open_existing(path: str) -> Any:
    if path != ":memory:" and not Path(path).is_file():
        raise ConfigError(f"no store at {path!r}; give the path of a DuckDB file written "
                          "by batchkit")
    return _open_store(path, read_only=True)


def _open_batch(store_path: str, name: str) -> Batch:
    store = _open_existing(store_path)
    try:
        names = store.batch_names()
    finally:
        _close_store(store)
    if name not in names:
        raise ConfigError(f"store {store_path!r} has no batch {name!r}; its batches are "
                          f"{names}")
    return Batch(name, store=store_path)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return _status_of_batch(args)
    try:
        store = _open_existing(args.store)
    except StoreInUseError as exc:  # a run holds it: show the snapshots its runs publish
        return _status_live(args, exc)
    try:
        counts = {name: store.counts(name) for name in store.batch_names()}
    finally:
        _close_store(store)
    if args.json:
        print(json.dumps({"store": args.store, "batches": {
            name: {**c, "total": sum(c.values())} for name, c in counts.items()}}, indent=2))
        return EXIT_OK
    if not counts:
        print(f"store {args.store}: no batches yet")
        return EXIT_OK
    header = ["batch", *STATUSES, "total"]
    rows = [[name, *(f"{c[s]:,}" for s in STATUSES), f"{sum(c.values()):,}"]
            for name, c in counts.items()]
    print(f"store {args.store}")
    print(_table(header, rows, right=range(1, len(header))))
    return EXIT_OK


def _status_of_batch(args: argparse.Namespace) -> int:
    """Counts, metrics and top failure clusters of one batch (live while a run holds it)."""
    from ._readonly import ReadOnlyBatch

    status = ReadOnlyBatch(args.batch, store=args.store).status()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, default=_json_default))
    else:
        print(status)
    return EXIT_OK


def _status_live(args: argparse.Namespace, held: StoreInUseError) -> int:
    """Counts per batch from the live snapshots, while another process holds the store."""
    from ._snapshot import read_snapshot

    who = f"PID {held.pid}" if held.pid is not None else "another process"
    docs = [d for d in read_snapshot(args.store) if d.get("counts") is not None]
    if not docs:
        raise StoreError(
            f"store is in use by {who}: {args.store!r}, and no batch in it has published a "
            "live snapshot (a run publishes one beside the store while it runs); wait for "
            "that process to finish or close its batch, then run this again")
    if args.json:
        print(json.dumps({"store": args.store, "source": "snapshot", "held_by_pid": held.pid,
                          "batches": {d["batch"]: {
                              **d["counts"], "total": sum(d["counts"].values()),
                              "state": (d.get("stats") or {}).get("state"),
                              "age_s": d["age_s"], "live": d["live"], "pid": d.get("pid")}
                              for d in docs}}, indent=2))
        return EXIT_OK
    header = ["batch", *STATUSES, "total", "run", "published"]
    rows = [[d["batch"], *(f"{d['counts'].get(s, 0):,}" for s in STATUSES),
             f"{sum(d['counts'].values()):,}", str((d.get("stats") or {}).get("state", "?")),
             f"{d['age_s']:.1f} s ago by PID {d.get('pid')}"] for d in docs]
    print(f"store {args.store}: in use by {who}; figures from the live snapshots its runs "
          "publish (`batchkit status STORE BATCH` for a batch's metrics)")
    print(_table(header, rows, right=range(1, len(STATUSES) + 2)))
    return EXIT_OK


def _cmd_failed(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or more, got {args.limit}")
    with _open_batch(args.store, args.batch) as batch:
        failed = batch.failed()
    shown = failed if args.limit == 0 else failed.head(args.limit)
    if args.json:
        print(json.dumps({"store": args.store, "batch": args.batch, "total": failed.height,
                          "rows": shown.to_dicts()}, indent=2, default=_json_default))
        return EXIT_OK
    if not failed.height:
        print(f"batch {args.batch!r}: no failed rows")
        return EXIT_OK
    more = f", showing the first {shown.height:,} (--limit 0 for all)" if (
        shown.height < failed.height) else ""
    print(f"batch {args.batch!r}: {failed.height:,} failed rows{more}")
    rows = [[str(r["key"]), str(r["error_type"]), str(r["attempts"]),
             "yes" if r["retryable"] else "no", _shorten(r["error_message"] or "")]
            for r in shown.iter_rows(named=True)]
    print(_table(["key", "error", "attempts", "retryable", "message"], rows, right=[2]))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    with _open_batch(args.store, args.batch) as batch:
        written = batch.export(args.out, rows=args.rows, status_columns=args.status_columns)
    print(f"exported {written:,} {args.rows} rows of batch {args.batch!r} to {args.out}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run_args(args)


def _cmd_plan(args: argparse.Namespace) -> int:
    """The architecture report of a plan: from earlier runs, or from a sample of the demo."""
    if args.demo:
        if args.store is not None or args.batch is not None:
            raise ConfigError("give either STORE BATCH (plan from earlier runs) or --demo "
                              f"(plan the demo from a sample), not both; got {args.store!r}"
                              + (f" {args.batch!r}" if args.batch is not None else ""))
        return _plan_demo(args)
    if args.store is None or args.batch is None:
        raise ConfigError("batchkit plan needs STORE BATCH (the store and batch whose earlier "
                          "runs to plan from), or --demo to plan the lead-enrichment demo")
    for flag in ("sample", "speed", "limit", "demo_store"):
        if getattr(args, flag) is not None:
            name = "--store" if flag == "demo_store" else "--" + flag
            raise ConfigError(f"{name} is for --demo; STORE BATCH plans from the attempt log "
                              "of earlier runs and runs nothing")
    from ._batchplan import plan_from_runs

    fn = load_function(args.function) if args.function else None
    batch = _open_batch(args.store, args.batch)
    try:
        plan = plan_from_runs(batch, fn, volume=args.volume, deadline=args.deadline,
                              budget=args.budget, workers=args.workers,
                              chunk_size=args.chunk_size, backend=args.backend,
                              limits=_step_rates(args.rate_limit))
    finally:
        batch.close()
    print(plan.report(volumes=args.volumes))
    return EXIT_OK


def _plan_demo(args: argparse.Namespace) -> int:
    """``batchkit plan --demo``: sample the lead-enrichment demo, print its plan."""
    from . import demo

    if args.function or args.rate_limit:
        raise ConfigError("--function and --rate-limit are for STORE BATCH; --demo plans the "
                          "demo's own pipeline with its declared limits")
    speed = demo.DEMO_SPEED if args.speed is None else args.speed
    plan = demo.plan(sample=20 if args.sample is None else args.sample, volume=args.volume,
                     workers=args.workers, speed=speed, limit=args.limit,
                     store=args.demo_store or ":memory:", deadline=args.deadline,
                     budget=args.budget, chunk_size=args.chunk_size)
    print(f"lead-enrichment demo at speed {speed:g}: times below are demo seconds (x {speed:g} "
          f"for scenario time; the 8-hour deadline is {8 * 60 / speed:g} min here); store "
          + (args.demo_store if args.demo_store else "in memory (nothing kept)") + "\n")
    print(plan.report(volumes=args.volumes))
    return EXIT_OK


def _step_rates(items: Sequence[str] | None) -> dict[str, dict[str, str]]:
    """``--rate-limit STEP=RATE`` values as ``limits`` for the planner."""
    out: dict[str, dict[str, str]] = {}
    for item in items or ():
        step_name, sep, rate = item.partition("=")
        if not sep or not step_name.strip() or not rate.strip():
            raise ConfigError(f"--rate-limit takes STEP=RATE, e.g. search=100/min; "
                              f"got {item!r}")
        out[step_name.strip()] = {"rate_limit": rate.strip()}
    return out


# -- output helpers ------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           right: Sequence[int] | range = ()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_WIDTH else text[:_MESSAGE_WIDTH - 1] + "…"


def _quote(path: str) -> str:
    return path if re.fullmatch(r"[\w./:-]+", path) else repr(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


# -- the parser ----------------------------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    """Wraps one-line paragraphs to the terminal; keeps multi-line blocks (examples) as typed."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            "\n".join(indent + line for line in block.splitlines()) if "\n" in block
            else super(_Formatter, self)._fill_text(block, width, indent)
            for block in text.split("\n\n"))


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``batchkit`` argument parser (every subcommand has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="batchkit", formatter_class=_Formatter,
        description="Run a one-row Python function over a Parquet or CSV file, durably "
                    "(DuckDB), in parallel, with retries and crash-safe resume.",
        epilog=_EXIT_CODES + "\nRun `batchkit COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"batchkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", formatter_class=_Formatter, help="run a function over a Parquet or CSV file",
        description="Add the rows of INPUT to a batch in the store (known keys are "
                    "skipped) and run FUNCTION over every pending row. Run the same "
                    "command again to resume after a crash, a halt or Ctrl-C.",
        epilog="examples:\n"
               "  batchkit run jobs:enrich data/companies.csv --store leads.duckdb "
               "--key company\n"
               "  batchkit run jobs/enrich.py:enrich rows.parquet --no-key --backend "
               "processes\n"
               "  batchkit run jobs:enrich data/companies.csv --store leads.duckdb "
               "--key company --only failed\n\n" + _EXIT_CODES)
    run.add_argument("function", metavar="MODULE:FUNCTION",
                     help="the one-row function: a module importable from the working "
                          "folder (jobs:enrich) or a .py file (path/to/jobs.py:enrich)")
    run.add_argument("input", metavar="INPUT", help="the rows: a .parquet or .csv file")
    run.add_argument("--store", default=None,
                     help=f"the DuckDB store file (default: $BATCHKIT_STORE or "
                          f"{DEFAULT_STORE})")
    run.add_argument("--batch", default=None, metavar="NAME",
                     help="the batch name (default: the input file name, e.g. "
                          "companies.csv -> companies)")
    keys = run.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", action="append", metavar="COL",
                      help="the column identifying a row; repeat for a key of several "
                           "columns")
    keys.add_argument("--no-key", action="store_true",
                      help="identify rows by a hash of the whole row")
    run.add_argument("--workers", type=_whole_number, default=None, metavar="N",
                     help="parallel workers (default: 4 per CPU for threads, 1 per CPU "
                          "for processes)")
    run.add_argument("--backend", choices=sorted(BACKENDS), default="threads",
                     help="threads for I/O-bound rows, processes for CPU-bound rows, "
                          "sequential for debugging (default: %(default)s)")
    run.add_argument("--chunk-size", type=_whole_number, default=None, metavar="N",
                     help="rows per chunk (default: automatic)")
    run.add_argument("--retries", type=_whole_number, default=3, metavar="N",
                     help="retries of transient errors per row (default: %(default)s)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="fail a row that runs longer than this (default: no limit)")
    run.add_argument("--on-error", choices=["skip", "halt"], default="skip",
                     help="skip: record failed rows and go on; halt: stop at the first "
                          "failed row (default: %(default)s)")
    run.add_argument("--max-failure-rate", type=float, default=None, metavar="F",
                     help="halt when more than this share of ended rows failed, e.g. 0.15")
    run.add_argument("--only", choices=["failed"], default=None,
                     help="re-run only the failed rows")
    run.add_argument("--export", default=None, metavar="OUT.parquet",
                     help="afterwards, write the done rows to this Parquet file")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                     default="auto", help="no progress bar (default: shown in a terminal)")
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser(
        "status", formatter_class=_Formatter,
        help="rows per status, per batch; with BATCH its metrics and failure clusters",
        description="Show how many rows of each batch in STORE are pending, running, done "
                    "and failed; with BATCH, that batch's metrics (throughput, p50/p95/p99 "
                    "durations, calls, tokens, retries, failures, cost, ETA) and its top "
                    "failure clusters. It works during a run in another process too: "
                    "DuckDB lets no one else open the store then, so the figures come from "
                    "the live snapshot the run publishes beside it (about a second old; "
                    "metrics every few seconds), with their age and the PID holding the "
                    "store.")
    status.add_argument("store", metavar="STORE", help="the DuckDB store file")
    status.add_argument("batch", metavar="BATCH", nargs="?", default=None,
                        help="a batch name: show its metrics and failure clusters")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_cmd_status)

    failed = sub.add_parser(
        "failed", formatter_class=_Formatter, help="list the failed rows of a batch",
        description="The dead-letter list of BATCH: each failed row's key, error type, "
                    "attempts, whether it is worth retrying, and the error message. "
                    "Re-run them with `batchkit run ... --only failed`.")
    failed.add_argument("store", metavar="STORE", help="the DuckDB store file")
    failed.add_argument("batch", metavar="BATCH", help="the batch name")
    failed.add_argument("--limit", type=_whole_number, default=20, metavar="N",
                        help="show at most N rows, 0 for all (default: %(default)s)")
    failed.add_argument("--json", action="store_true",
                        help="print JSON (inputs, messages and tracebacks included)")
    failed.set_defaults(handler=_cmd_failed)

    export = sub.add_parser(
        "export", formatter_class=_Formatter, help="write a batch's rows to Parquet",
        description="Write the rows of BATCH (input columns and the function's new "
                    "columns) to a Parquet file.")
    export.add_argument("store", metavar="STORE", help="the DuckDB store file")
    export.add_argument("batch", metavar="BATCH", help="the batch name")
    export.add_argument("out", metavar="OUT.parquet", help="the Parquet file to write")
    export.add_argument("--rows", choices=["done", "failed", "all"], default="done",
                        help="which rows (default: %(default)s)")
    export.add_argument("--status-columns", action="store_true",
                        help="also write _id, _key and the status columns")
    export.set_defaults(handler=_cmd_export)

    plan = sub.add_parser(
        "plan", formatter_class=_Formatter,
        help="project time, cost and workers of a batch; print the architecture report",
        description="Print the architecture report of a batch plan in Markdown: workflow "
                    "analysis per step, chunking and parallelism, state and resume, "
                    "reliability, observability, projections and the scaling table, all "
                    "from measured figures. With STORE BATCH the plan is calibrated from "
                    "the attempt log of the batch's earlier runs and nothing runs; give "
                    "--function (the pipeline that ran) so the steps' rate limits, "
                    "concurrency and batching are known, or --rate-limit per step. With "
                    "--demo it runs a measured sample of the lead-enrichment demo (against "
                    "its simulated services) and plans the rest.",
        epilog="examples:\n"
               "  batchkit plan leads.duckdb leads --function jobs:pipe --volume 5000 "
               "--deadline 8h --budget 100\n"
               "  batchkit plan leads.duckdb leads --rate-limit search=100/min "
               "--rate-limit contacts=50/min --workers 5\n"
               "  batchkit plan --demo --sample 20 --volume 500\n"
               "  batchkit plan --demo --store data/demo.duckdb   # keeps the sample; "
               "`batchkit demo` runs the rest\n\n"
               "exit codes:\n  0    the report was printed\n"
               "  2    bad arguments, store or batch; or nothing to plan from")
    plan.add_argument("store", metavar="STORE", nargs="?", default=None,
                      help="the DuckDB store file (not with --demo)")
    plan.add_argument("batch", metavar="BATCH", nargs="?", default=None,
                      help="the batch whose earlier runs to plan from (not with --demo)")
    plan.add_argument("--function", default=None, metavar="MODULE:FUNCTION",
                      help="the pipeline or function the batch runs, for its declared "
                           "limits (default: the steps in the log, no limits)")
    plan.add_argument("--rate-limit", action="append", default=None, metavar="STEP=RATE",
                      help="a step's rate limit, e.g. search=100/min; repeat per step")
    plan.add_argument("--volume", type=_whole_number, default=None, metavar="N",
                      help="items to plan for (default: the batch's total)")
    plan.add_argument("--deadline", default=None, metavar="TIME",
                      help="e.g. 8h, 30min, 90s (default: none; --demo: its 8 h, scaled)")
    plan.add_argument("--budget", type=float, default=None, metavar="USD",
                      help="e.g. 100 (default: none; --demo: $100)")
    plan.add_argument("--workers", type=_whole_number, default=None, metavar="N",
                      help="fix the worker count (default: the recommended one)")
    plan.add_argument("--chunk-size", type=_whole_number, default=None, metavar="N",
                      help="fix the chunk size (default: the recommended one)")
    plan.add_argument("--backend", choices=sorted(BACKENDS), default="threads",
                      help="the backend the run will use (default: %(default)s)")
    plan.add_argument("--volumes", type=_whole_number, nargs="+", default=None, metavar="N",
                      help="volumes of the scaling table (default: 1, 2, 5 and 10 times "
                           "the volume)")
    demo_opts = plan.add_argument_group("the demo (--demo)")
    demo_opts.add_argument("--demo", action="store_true",
                           help="plan the lead-enrichment demo from a measured sample")
    demo_opts.add_argument("--sample", type=_whole_number, default=None, metavar="N",
                           help="items to run and measure (default: 20; 0: plan from the "
                                "earlier runs in --store)")
    demo_opts.add_argument("--speed", type=float, default=None, metavar="X",
                           help="scenario seconds per demo second (default: 15)")
    demo_opts.add_argument("--limit", type=_whole_number, default=None, metavar="N",
                           help="only the first N companies (default: all 500)")
    demo_opts.add_argument("--store", dest="demo_store", default=None, metavar="STORE",
                           help="keep the sample's results in this store (default: in "
                                "memory); `batchkit demo --store STORE` runs the rest")
    plan.set_defaults(handler=_cmd_plan)

    from . import demo

    demo_parser = sub.add_parser(
        "demo", formatter_class=_Formatter,
        help="run the lead-enrichment scenario on data/companies.csv",
        description="The lead-enrichment scenario end to end against local simulated "
                    "services (web search 100/min, contact search 50/min, AI extraction, "
                    "batched e-mail verification; time compressed by --speed): 500 "
                    "companies in chunks of 50 on 5 workers, a DuckDB store, an enriched "
                    "Parquet file, the report, cost and failure clusters. Run it again to "
                    "see a resume that has nothing left to do.")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``batchkit`` command line; return the exit code.

    Example:
        >>> main(["status", "no-such-store.duckdb"])
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.handler(args))
    except BatchkitError as exc:
        print(f"batchkit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("batchkit: interrupted; finished rows are saved. Run the same command again "
              "to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `batchkit failed ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
