"""Planning accuracy: a plan from a 20-item sample against the measured lead-enrichment run.

Issue 5's target: on the lead-enrichment demo (``batchkit.demo``, the simulated
services at ``--speed``, 15 by default: 4 s = 1 scenario minute), a plan from a
20-item sample predicts the measured time and cost of the full run within ±20%.

For each volume N (the first N companies of ``data/companies.csv``):

1. **plan**: ``batch.plan(pipeline, sample=20, workers=5)`` on a fresh store: 20
   companies spread over the N run and are measured; their results are kept.
2. **the rest**: ``demo.run`` on that store runs the N - 20 pending companies the
   way the demo always does (5 workers, chunks of ``min(50, pending / 5)``); the
   plan's prediction is ``plan.at(volume=N - 20, chunk_size=...)``.
3. **the full run**: ``demo.run`` of all N companies on another fresh store (its
   memo of industry look-ups empty again), predicted by ``plan.at(volume=N,
   chunk_size=...)``.

Baselines in the same run, from the same calibrated step profiles: the
scenario's hand arithmetic (every item one by one, ``sum of calls x latency``,
divided by the workers: no limits) and a model where the steps overlap (the
slowest step alone sets the pace, as if each rate limit were busy all the time).
Time is wall time of ``batch.run``; cost is the run's recorded USD.

``--seeds`` repeats it with other seeds of the services' misbehaviour (which
requests fail, how long each takes): the spread is what the luck of a 20-item
sample does to a plan.

    python benchmarks/plan_accuracy.py                    # 250 and 500 companies, speed 15
    python benchmarks/plan_accuracy.py --volumes 200 --speed 40 --seeds 0 1 2 3 4 --no-full
    python benchmarks/plan_accuracy.py --volumes 150 --speed 40 --quick   # smoke (~30 s)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import polars as pl

import batchkit as bk
from batchkit import demo
from batchkit._plan import Projection

WORKERS = 5
SAMPLE = 20


def _chunk(pending: int) -> int:
    """The chunk size ``demo.run`` uses for ``pending`` companies."""
    return max(1, min(50, math.ceil(pending / WORKERS)))


def _naive(plan: Projection, volume: int) -> float:
    """The hand arithmetic: each item one by one, divided by the workers; no limits."""
    per_item = sum(f.requests * f.profile.latency for f in plan._figs)
    return volume * per_item / plan.workers


def _overlapped(plan: Projection, volume: int) -> float:
    """The steps overlapping: the slowest step's own time sets the pace (steady state)."""
    steady = plan.at(volume=volume, chunk_size=None)
    return volume * max(max(t.parts.values()) for t in steady._terms)


def _demo_run(store: str, volume: int, speed: float, svc: Any) -> tuple[float, bk.RunReport]:
    out = str(Path(store).with_suffix(".parquet"))
    with contextlib.redirect_stdout(io.StringIO()):
        report = demo.run(store=store, out=out, workers=WORKERS, limit=volume, speed=speed,
                          progress=False, services=svc)
    return report.elapsed_s, report


def measure(volume: int, speed: float, folder: Path, *, seed: int = 0,
            full: bool = True) -> list[list[Any]]:
    """Plan, run the rest, run the whole batch afresh: the table rows for one volume."""
    retry = bk.RetryPolicy(retries=3, backoff=1.0 / speed, max_backoff=300.0 / speed)
    companies = pl.read_csv(demo._companies_file()).head(volume)
    rows = []
    with demo.start_services(speed=speed, seed=seed) as svc:
        pipe = demo.lead_pipeline(svc.url, speed=speed)
        store = str(folder / f"plan-{volume}-{seed}.duckdb")
        batch = bk.Batch(demo.BATCH, store=store)
        try:
            batch.add(companies, key="company")
            started = time.monotonic()
            plan = batch.plan(pipe, sample=SAMPLE, workers=WORKERS, retries=retry,
                              deadline=8 * 3600 / speed, budget=100, progress=False)
            took = time.monotonic() - started
            pending = batch.counts()["pending"]
        finally:
            batch.close()
            pipe.close()
        print(f"N={volume}, seed {seed}: sample of {plan.sample.items} in {took:.1f} s "
              f"(${plan.sample.cost:.2f}); plan for {volume} with {WORKERS} workers: "
              f"{plan.seconds:.1f} s, ${plan.cost:.2f}; bottleneck {plan.bottleneck.why}")
        runs = [(f"the rest ({pending})", pending, *_demo_run(store, volume, speed, svc))]
        if full:
            runs.append((f"a full run ({volume})", volume,
                         *_demo_run(str(folder / f"full-{volume}-{seed}.duckdb"), volume,
                                    speed, svc)))
    for what, n, seconds, report in runs:
        predicted = plan.at(volume=n, chunk_size=_chunk(n))
        rows.append([volume, seed, what, predicted.seconds, seconds,
                     100 * (predicted.seconds - seconds) / seconds,
                     predicted.cost, report.cost_usd,
                     100 * (predicted.cost - report.cost_usd) / report.cost_usd,
                     100 * (_naive(plan, n) - seconds) / seconds,
                     100 * (_overlapped(plan, n) - seconds) / seconds])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, nargs="+", default=[250, 500])
    parser.add_argument("--speed", type=float, default=demo.DEMO_SPEED)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the services' misbehaviour (default: 0, the demo's)")
    parser.add_argument("--no-full", dest="full", action="store_false",
                        help="skip the fresh full runs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: no output file")
    args = parser.parse_args()
    sink = contextlib.nullcontext() if args.quick else _common.Tee("plan_accuracy")
    with sink:
        _common.header("Planning accuracy: a 20-item sample's plan vs the measured demo run")
        print(f"speed {args.speed:g} (1 s here = {args.speed:g} scenario seconds), "
              f"{WORKERS} workers, chunks as demo.run picks them\n")
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            for volume in args.volumes:
                for seed in args.seeds:
                    rows += measure(volume, args.speed, Path(folder), seed=seed,
                                    full=args.full)
        print()
        print(_common.table(
            ["N", "seed", "run", "predicted s", "measured s", "time error %", "predicted $",
             "measured $", "cost error %", "hand arithmetic %", "overlapping steps %"],
            rows))
        worst = max(max(abs(r[5]), abs(r[8])) for r in rows)
        print(f"\nlargest error: {worst:.1f}% (target: within ±20%: "
              f"{'met' if worst <= 20 else 'MISSED'})")
        _common.footer()


if __name__ == "__main__":
    main()
