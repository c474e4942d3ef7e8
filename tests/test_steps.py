"""Steps and pipelines: limits, in-step retries, pooled HTTP, cost, and runs in a batch."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest
import stepfns

import batchkit as bk
from batchkit.testing import FakeClock


def test_step_is_a_row_function() -> None:
    """A step called on a row returns its dict; a scalar goes under the step's name."""
    s = bk.step("shout")(lambda row: row["w"].upper())
    assert s({"w": "a"}) == {"shout": "A"}
    assert bk.step(lambda row: {"n": 1})({"x": 0}) == {"n": 1}


def test_bare_decorator_takes_the_function_name() -> None:
    """@bk.step without arguments names the step after its function."""
    @bk.step
    def lookup(row):
        return {"v": row["k"]}

    assert lookup.name == "lookup" and lookup({"k": 3}) == {"v": 3}


def test_bad_step_settings_fail_when_declared() -> None:
    """Bad limits raise ConfigError at declaration, before any run."""
    with pytest.raises(bk.ConfigError, match="concurrency"):
        bk.step("s", concurrency=0)(lambda row: {})
    with pytest.raises(bk.ConfigError):
        bk.step("s", rate_limit="lots")(lambda row: {})
    with pytest.raises(bk.ConfigError, match="cost"):
        bk.step("s", cost=-1)(lambda row: {})
    with pytest.raises(bk.ConfigError, match="unique"):
        bk.pipeline(bk.step("a")(lambda r: {}), bk.step("a")(lambda r: {}))
    with pytest.raises(bk.ConfigError):
        bk.pipeline()


def test_concurrency_caps_calls_in_flight() -> None:
    """However many threads call it, a step never has more than `concurrency` calls running."""
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    @bk.step("slow", concurrency=2)
    def slow(row):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return {}

    threads = [threading.Thread(target=slow, args=({"i": i},)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 2


def test_rate_limit_spaces_calls_with_a_fake_clock() -> None:
    """A 10/s step lets calls go every 0.1 s (on the step's clock)."""
    clock = FakeClock()
    s = bk.step("paced", rate_limit="10/s")(lambda row: {})
    s.clock = clock
    s._reset_local()
    for _ in range(5):
        s({})
    assert s._local.limiter is not None and s._local.limiter.admitted == 5
    assert clock.slept == pytest.approx(0.4)


def test_in_step_retries_recover_transient_errors() -> None:
    """A transient error is retried inside the step; the row sees only the success."""
    calls = []

    @bk.step("flaky", retries=bk.RetryPolicy(retries=2, backoff=0))
    def flaky(row):
        calls.append(1)
        if len(calls) < 3:
            raise bk.Transient("busy")
        return {"ok": True}

    assert flaky({}) == {"ok": True} and len(calls) == 3


def test_permanent_errors_are_not_retried_in_step() -> None:
    """A permanent error leaves the step at once."""
    calls = []

    @bk.step("bad", retries=3)
    def bad(row):
        calls.append(1)
        raise bk.Permanent("no")

    with pytest.raises(bk.Permanent):
        bad({})
    assert len(calls) == 1


def test_pipeline_chains_outputs_and_sums_cost() -> None:
    """Each step sees earlier outputs; cost_usd adds static, per-call and dynamic cost."""
    out = stepfns.pipe({"x": 1})
    assert out["y"] == 2 and out["z"] == 20
    assert out["cost_usd"] == pytest.approx(0.01 + 2 * 0.002)


def test_memo_computes_once_per_key() -> None:
    """ctx.memo runs its function once per key, shared by threads."""
    runs = []

    @bk.step("research")
    def research(row, ctx):
        return {"ctx": ctx.memo(("industry", row["ind"]),
                                lambda: runs.append(row["ind"]) or f"about {row['ind']}")}

    results = [research({"ind": i}) for i in ["a", "b", "a", "a"]]
    assert [r["ctx"] for r in results] == ["about a", "about b", "about a", "about a"]
    assert runs == ["a", "b"]


@pytest.mark.parametrize("backend", ["sequential", "threads", "processes"])
def test_pipeline_runs_in_a_batch(tmp_path, backend) -> None:
    """A pipeline is a row function: batch.run gives every row its steps' columns."""
    batch = bk.Batch("p", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"x": list(range(20))}), key="x")
    report = batch.run(stepfns.pipe, backend=backend, workers=2, progress=False)
    assert report.succeeded == 20
    res = batch.results().sort("x")
    assert res["z"].to_list() == [(x + 1) * 10 for x in range(20)]
    assert res["cost_usd"].to_list() == pytest.approx([0.014] * 20)
    batch.close()


def test_ctx_http_is_pooled_and_reused() -> None:
    """ctx.http gives the same pooled client to every row of a worker."""
    from batchkit.testing import SimService

    seen = []

    @bk.step("health")
    def health(row, ctx):
        seen.append(ctx.http)
        return {"status": ctx.http.get(row["url"]).status_code}

    with SimService() as svc:
        outs = [health({"url": svc.url + "/health"}) for _ in range(3)]
    health.close()
    assert [o["status"] for o in outs] == [200, 200, 200]
    assert seen[0] is seen[1] is seen[2]


def test_retry_after_pauses_the_whole_step() -> None:
    """A 429 with Retry-After pauses the step's limiter for every caller."""
    import httpx

    clock = FakeClock()
    calls = []

    @bk.step("limited", rate_limit="100/s", retries=bk.RetryPolicy(retries=1, jitter=0))
    def limited(row):
        calls.append(clock.monotonic())
        if len(calls) == 1:
            request = httpx.Request("GET", "http://x/")
            response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
            raise httpx.HTTPStatusError("429", request=request, response=response)
        return {"ok": 1}

    limited.clock = clock
    limited._reset_local()
    assert limited({}) == {"ok": 1}
    assert calls[1] - calls[0] >= 3.0


def test_processes_split_the_rate_and_keep_state_across_chunks(tmp_path) -> None:
    """On 2 worker processes each paces to half the rate; a memo lives across chunks."""
    batch = bk.Batch("share", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"x": list(range(40))}), key="x")
    batch.run(stepfns.paced, backend="processes", workers=2, chunk_size=5, progress=False)
    res = batch.results()
    batch.close()
    assert set(res["per_second"].to_list()) == {500.0}
    # one memo value per worker process (at most 2), not one per chunk (8 chunks)
    assert 1 <= res["first"].n_unique() <= 2


def test_threads_share_the_full_rate(tmp_path) -> None:
    """On threads every worker shares one limiter at the full rate."""
    batch = bk.Batch("full", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"x": list(range(10))}), key="x")
    batch.run(stepfns.paced, backend="threads", workers=4, progress=False)
    assert set(batch.results()["per_second"].to_list()) == {1000.0}
    batch.close()


def test_unsplittable_rate_fails_before_the_run(tmp_path) -> None:
    """A 1/s limit cannot be split over 2 processes: ConfigError, nothing runs."""
    batch = bk.Batch("nosplit", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"x": [1, 2]}), key="x")
    with pytest.raises(bk.ConfigError):
        batch.run(bk.pipeline(stepfns.slow_rate), backend="processes", workers=2,
                  progress=False)
    assert batch.counts()["pending"] == 2
    batch.close()
