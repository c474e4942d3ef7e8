"""The lead-enrichment demo (batchkit.demo): the scenario end to end on the simulated services."""

from __future__ import annotations

import bisect
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import polars as pl
import pytest

import batchkit as bk
from batchkit import demo
from batchkit._cli import main as cli_main
from batchkit._simservice import ENDPOINTS

REPO = Path(__file__).resolve().parents[1]
SPEED = 30.0  # twice the demo's speed: 2 s here = 1 scenario minute
LIMIT = 60
LIMITS = {"/search": 100, "/contacts": 50}  # the scenario's calls per minute


def _companies(limit: int | None) -> pl.DataFrame:
    frame = pl.read_csv(REPO / "data" / "companies.csv")
    return frame.head(limit) if limit is not None else frame


def _expected_failures(companies: pl.DataFrame) -> tuple[set[str], set[str]]:
    """(rows without a usable domain, rows the search does not know)."""
    no_domain = {r["company"] for r in companies.iter_rows(named=True)
                 if not demo.usable_domain(r["domain"])}
    unknown = {r["company"] for r in companies.iter_rows(named=True)
               if r["company"] not in no_domain and demo.is_unknown(r["company"])}
    return no_domain, unknown


def _max_in_window(times: list[float], window: float) -> int:
    """The most arrivals in any half-open window ``[t, t + window)``."""
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)),
               default=0)


def _run_demo(folder: Path, limit: int | None) -> SimpleNamespace:
    store, out = str(folder / "demo.duckdb"), str(folder / "leads.parquet")
    with demo.start_services(speed=SPEED) as svc:
        first = demo.run(store=store, out=out, limit=limit, speed=SPEED, progress=False,
                         services=svc)
        stats = svc.stats()
        arrivals = {e: [t for t, _, _ in svc.requests_log(e)] for e in ENDPOINTS}
        second = demo.run(store=store, out=out, limit=limit, speed=SPEED, progress=False,
                          services=svc)
        after = svc.stats()
    with bk.Batch(demo.BATCH, store=store) as batch:
        view = SimpleNamespace(counts=batch.counts(), failed=batch.failed(),
                               results=batch.results(), metrics=batch.metrics(),
                               clusters=batch.failures())
    return SimpleNamespace(store=store, out=out, first=first, second=second, stats=stats,
                           after=after, arrivals=arrivals, batch=view,
                           companies=_companies(limit))


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One demo run of the first 60 companies at speed 30, then a second run of the same."""
    return _run_demo(tmp_path_factory.mktemp("demo"), LIMIT)


def _steps(metrics: Any) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in metrics.steps.iter_rows(named=True)}


# -- one run of 60 companies ---------------------------------------------------------------


def test_run_writes_store_and_enriched_parquet(ran: SimpleNamespace) -> None:
    """The run ends every row, and the Parquet holds exactly the done rows, fully enriched."""
    counts = ran.batch.counts
    assert counts["pending"] == counts["running"] == 0
    assert counts["done"] + counts["failed"] == LIMIT
    assert ran.first.processed == LIMIT and ran.first.outcome == "completed"
    enriched = pl.read_parquet(ran.out)
    assert enriched.height == counts["done"] == ran.batch.results.height
    assert sorted(enriched["company"]) == sorted(ran.batch.results["company"])
    assert {"site", "size", "revenue_usd", "tech_stack", "contacts", "verified_emails",
            "primary_email", "lead_score", "cost_usd"} <= set(enriched.columns)
    assert enriched["site"].str.ends_with(".example").all()
    assert (enriched["cost_usd"] > 0).all()


def test_permanent_failures_land_in_the_dead_letter_list(ran: SimpleNamespace) -> None:
    """Rows without a domain fail as Permanent, unknown companies as HTTP 404; nothing else."""
    no_domain, unknown = _expected_failures(ran.companies)
    assert no_domain and unknown  # the first 60 rows hold both kinds
    failed = {r["key"]: r for r in ran.batch.failed.iter_rows(named=True)}
    assert set(failed) == no_domain | unknown
    for key in no_domain:
        assert failed[key]["error_type"] == "Permanent"
        assert "no usable domain" in failed[key]["error_message"]
    for key in unknown:
        assert failed[key]["error_type"] == "HTTPStatusError"
        assert "404" in failed[key]["error_message"]
    assert not any(r["retryable"] for r in failed.values())
    assert all(r["attempts"] == 1 for r in failed.values())
    labels = {(c.step, c.error_type) for c in ran.batch.clusters}
    assert labels == {("search", "Permanent"), ("search", "HTTPStatusError")}


def test_calls_stay_within_the_scaled_limits(ran: SimpleNamespace) -> None:
    """No window of one scenario minute holds more calls than the service's limit."""
    window = 60 / SPEED
    for endpoint, limit in LIMITS.items():
        arrivals = ran.arrivals[endpoint]
        assert arrivals, endpoint
        assert _max_in_window(arrivals, window) <= limit, endpoint
        stats = ran.stats[endpoint]
        assert stats["429"] == stats["throttled"], f"{endpoint} refused calls over its limit"


def test_transient_errors_and_retry_after_are_recovered(ran: SimpleNamespace) -> None:
    """503s and load-shedding 429s (Retry-After) happened and no row failed because of them."""
    stats = ran.stats
    assert sum(stats[e]["503"] for e in ENDPOINTS) > 0
    assert sum(stats[e]["throttled"] for e in ENDPOINTS) > 0
    assert set(ran.batch.failed["error_type"]) <= {"Permanent", "HTTPStatusError"}
    assert ran.batch.metrics.step_retries > 0


def test_verification_is_batched(ran: SimpleNamespace) -> None:
    """E-mail verification sends a chunk's addresses in one call, not one call per address."""
    verify = ran.stats["/verify"]
    chunks = math.ceil(LIMIT / math.ceil(LIMIT / 5))  # one chunk per worker for 60 rows
    assert verify["ok"] == chunks
    assert verify["413"] == 0
    assert verify["items"] >= 20 * verify["requests"]
    done = ran.batch.results
    assert done["contacts"].list.len().sum() == verify["items"]  # each address checked once
    for row in done.iter_rows(named=True):
        emails = {c["email"] for c in row["contacts"]}
        assert set(row["verified_emails"]) <= emails


def test_industry_memo_makes_one_search_per_industry(ran: SimpleNamespace) -> None:
    """Answered searches = one per company with a domain + one per industry (ctx.memo)."""
    no_domain, _ = _expected_failures(ran.companies)
    searched = ran.companies.filter(~pl.col("company").is_in(list(no_domain)))
    industries = searched["industry"].n_unique()
    answered = ran.stats["/search"]["ok"] + ran.stats["/search"]["404"]
    assert answered == searched.height + industries
    assert answered < 2 * searched.height  # without the memo: two searches per company


def test_counted_calls_and_cost_match_the_services(ran: SimpleNamespace) -> None:
    """Each service step's calls equal the requests it made; cost is calls x price + tokens."""
    stats, m = ran.stats, ran.batch.metrics
    steps = _steps(m)
    no_domain, _ = _expected_failures(ran.companies)
    assert steps["search"]["calls"] == stats["/search"]["requests"] + len(no_domain)
    assert steps["extract"]["calls"] + steps["contacts"]["calls"] == \
        stats["/extract"]["requests"] + stats["/contacts"]["requests"]
    assert steps["verify_emails"]["calls"] == stats["/verify"]["requests"]
    assert m.tokens > 0
    expected = (0.01 * (stats["/search"]["requests"] + stats["/contacts"]["requests"])
                + 0.02 * stats["/verify"]["requests"] + 0.01 * m.tokens / 1000)
    assert m.cost_usd == pytest.approx(expected)
    assert ran.first.cost_usd == pytest.approx(expected)


def test_second_run_has_nothing_to_do(ran: SimpleNamespace) -> None:
    """Running again adds no rows, runs no rows and calls no service."""
    assert ran.second.processed == 0
    assert ran.second.counts == ran.first.counts
    for endpoint in ENDPOINTS:
        assert ran.after[endpoint]["requests"] == ran.stats[endpoint]["requests"], endpoint
    assert pl.read_parquet(ran.out).height == ran.first.counts["done"]


# -- pieces ---------------------------------------------------------------------------------


def test_services_enforce_the_scaled_limits() -> None:
    """start_services: 100 searches per scenario minute, the 101st refused; 100 addresses a call."""
    speed = 6.0  # the window is 10 s: 101 quick calls surely fall into one
    with demo.start_services(speed=speed, latency=0, transient_share=0, throttle_share=0) \
            as svc, httpx.Client(base_url=svc.url) as client:
        codes = [client.get("/search", params={"q": f"Acme {i}"}).status_code
                 for i in range(101)]
        assert codes.count(200) + codes.count(404) == 100 and codes[-1] == 429
        refused = client.get("/search", params={"q": "Acme"})
        assert 0 < float(refused.headers["Retry-After"]) <= 10
        ok = client.post("/verify", json={"emails": [f"a{i}@x.example" for i in range(100)]})
        big = client.post("/verify", json={"emails": [f"a{i}@x.example" for i in range(101)]})
        assert (ok.status_code, big.status_code) == (200, 413)


def test_lead_pipeline_declares_the_scenario_limits() -> None:
    """The steps carry the scaled limits, batching and kinds the scenario asks for."""
    pipe = demo.lead_pipeline("http://127.0.0.1:9", speed=20)
    steps = {s.name: s for s in pipe.steps}
    assert list(steps) == ["search", "extract", "contacts", "verify_emails", "compile_record"]
    assert steps["search"].options.rate_limit == bk.RateLimit(85, per=3.0)
    assert steps["contacts"].options.rate_limit == bk.RateLimit(48, per=3.0)
    assert steps["contacts"].is_async and steps["extract"].is_async
    assert steps["verify_emails"].options.batch_size == 100
    assert steps["verify_emails"].options.cost_per_call == 0.02
    assert all(steps[n].options.retry.retries == 3 for n in
               ("search", "extract", "contacts", "verify_emails"))
    assert steps["search"].options.retry.backoff == pytest.approx(1 / 20)
    pipe.close()


def test_bad_settings_fail_before_any_work(tmp_path: Path) -> None:
    """A bad speed, limit or worker count raises ConfigError and writes nothing."""
    store = tmp_path / "s.duckdb"
    for bad in ({"speed": 0}, {"limit": 0}, {"workers": 0}, {"speed": float("inf")}):
        with pytest.raises(bk.ConfigError):
            demo.run(store=str(store), out=str(tmp_path / "o.parquet"), progress=False, **bad)
    assert not store.exists()


def test_cli_demo_uses_default_paths_and_resumes(tmp_path: Path, capsys: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`batchkit demo --limit N` writes data/demo.duckdb and the Parquet; again: nothing to do."""
    monkeypatch.chdir(tmp_path)
    assert cli_main(["demo", "--limit", "5", "--speed", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5 new (0 already known)" in out and "RunReport 'lead_enrichment'" in out
    assert "files: store data/demo.duckdb" in out
    assert pl.read_parquet("data/leads_enriched.parquet").height > 0
    assert cli_main(["demo", "--limit", "5", "--speed", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 new (5 already known)" in out and "nothing left to run" in out
    assert "/search 0, /extract 0, /contacts 0, /verify 0" in out


def test_cli_demo_rejects_a_bad_limit(capsys: Any) -> None:
    """`--limit 0` is a usage error (exit 2) naming the value."""
    assert cli_main(["demo", "--limit", "0"]) == 2
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_python_m_batchkit_demo(tmp_path: Path) -> None:
    """`python -m batchkit.demo` runs the same demo with the same options."""
    proc = subprocess.run(
        [sys.executable, "-m", "batchkit.demo", "--limit", "3", "--speed", "300",
         "--no-progress", "--store", str(tmp_path / "s.duckdb"), "--out",
         str(tmp_path / "o.parquet")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 new (0 already known)" in proc.stdout
    assert (tmp_path / "o.parquet").exists()


def test_async_pipeline_runs_under_a_running_event_loop() -> None:
    """A run with async steps ends cleanly in a thread that runs a loop (a Jupyter kernel)."""
    import asyncio

    async def in_a_loop() -> int:
        with demo.start_services(speed=1000) as svc:
            pipe = demo.lead_pipeline(svc.url, speed=1000)
            batch = bk.Batch("loop", store=":memory:")
            batch.add(_companies(4), key="company")
            report = batch.run(pipe, workers=2, progress=False)
            batch.close()
            pipe.close()
            return report.succeeded

    assert asyncio.run(in_a_loop()) == 4


# -- SimService additions the demo uses ------------------------------------------------------


def test_simservice_throttle_share_answers_429_with_fractional_retry_after() -> None:
    """throttle_share refuses calls under the limit with 429 + Retry-After, counted apart."""
    with bk_testing_service(throttle_share={"/search": 1.0}, throttle_retry_after=0.25,
                            rate_limit={"/search": (1, 60.0)}) as svc, \
            httpx.Client(base_url=svc.url) as client:
        shed = client.get("/search", params={"q": "Acme"})
        assert shed.status_code == 429 and shed.headers["Retry-After"] == "0.25"
        assert bk.classify(httpx.HTTPStatusError("x", request=shed.request, response=shed)
                           ).retry_after == 0.25
        assert client.get("/contacts", params={"domain": "acme.example"}).status_code == 200
        stats = svc.stats()["/search"]
        assert (stats["429"], stats["throttled"], stats["ok"]) == (1, 1, 0)


def test_simservice_throttled_calls_do_not_use_the_window() -> None:
    """A shed call is refused before the rate limit counts it; a retry of it can pass."""
    with bk_testing_service(throttle_share=0.5, rate_limit=(3, 60.0), seed=1) as svc, \
            httpx.Client(base_url=svc.url) as client:
        codes = [client.get("/search", params={"q": f"c{i % 4}"}).status_code
                 for i in range(12)]
        stats = svc.stats()["/search"]
        assert stats["throttled"] > 0
        assert codes.count(200) == 3  # the window's 3 slots went to accepted calls only
        assert stats["429"] == 12 - 3


def test_simservice_rate_limit_as_calls_per_seconds_pair() -> None:
    """rate_limit=(calls, seconds) sets any window; bad pairs and shares fail at once."""
    with bk_testing_service(rate_limit={"/contacts": (2, 30.0)}) as svc, \
            httpx.Client(base_url=svc.url) as client:
        codes = [client.get("/contacts", params={"domain": "a.example"}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
    for bad in ({"rate_limit": (0, 1.0)}, {"rate_limit": (1.5, 1.0)},
                {"rate_limit": (1, 0)}, {"rate_limit": (1, 2, 3)},
                {"throttle_share": 1.5}, {"throttle_retry_after": 0}):
        with pytest.raises(bk.ConfigError):
            bk_testing_service(**bad)


def bk_testing_service(**kwargs: Any) -> Any:
    """A SimService from batchkit.testing (the public test mode)."""
    from batchkit.testing import SimService

    return SimService(**kwargs)


# -- the whole file ---------------------------------------------------------------------------


@pytest.mark.slow
def test_full_500_companies(tmp_path: Path) -> None:
    """All 500 companies: only the permanent rows fail, limits hold, verification is batched."""
    ran = _run_demo(tmp_path, None)
    no_domain, unknown = _expected_failures(ran.companies)
    assert len(no_domain) == 8
    assert ran.batch.counts["done"] == 500 - len(no_domain | unknown)
    assert set(ran.batch.failed["key"]) == no_domain | unknown
    for endpoint, limit in LIMITS.items():
        assert _max_in_window(ran.arrivals[endpoint], 60 / SPEED) <= limit
        assert ran.stats[endpoint]["429"] == ran.stats[endpoint]["throttled"]
    verify = ran.stats["/verify"]
    assert verify["ok"] <= 2 * 10  # 10 chunks of 50, at most 2 calls of 100 addresses each
    assert verify["items"] > 1000
    assert ran.second.processed == 0
    assert all(ran.after[e]["requests"] == ran.stats[e]["requests"] for e in ENDPOINTS)
