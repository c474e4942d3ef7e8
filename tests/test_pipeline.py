"""Pipelines in a batch: per-step checkpoints, the step cache, batched and async steps,
ctx.memo in the store, cost per attempt, and secrets, all against the local SimService.

Calls are counted on the server (``SimService.stats()``), so they hold on every backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pipefns
import polars as pl
import pytest

import batchkit as bk
from batchkit._http import ClientFactory
from batchkit._simservice import contacts_result, extract_result, search_result
from batchkit.testing import SimService

ENDPOINTS = ("/search", "/extract", "/contacts", "/verify")
BACKENDS = ("threads", "processes")
QUIET: dict[str, Any] = {"progress": False}


@pytest.fixture
def sim() -> Iterator[Callable[..., SimService]]:
    """Factory of SimServices (no latency unless asked); all closed at teardown."""
    made: list[SimService] = []

    def make(**kwargs: Any) -> SimService:
        svc = SimService(**kwargs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def requests(svc: SimService) -> dict[str, int]:
    """Requests answered so far, per endpoint."""
    stats = svc.stats()
    return {e: stats[e]["requests"] for e in ENDPOINTS}


def delta(svc: SimService, before: dict[str, int]) -> dict[str, int]:
    """Requests per endpoint since ``before``."""
    now = requests(svc)
    return {e: now[e] - before[e] for e in ENDPOINTS}


def companies(svc: SimService, ids: range, *, bad: Callable[[int], bool] = lambda i: False
              ) -> pl.DataFrame:
    """Companies ``Company 007`` with the CRM's website (``.invalid`` where ``bad(i)``)."""
    return pl.DataFrame({
        "company": [f"Company {i:03d}" for i in ids],
        "website": [f"company-{i:03d}.{'invalid' if bad(i) else 'example'}" for i in ids],
        "api": [svc.url] * len(ids),
    })


def step_log(batch: bk.Batch, run_id: str | None = None) -> pl.DataFrame:
    """Step rows of the attempt log (of one run, if given)."""
    log = batch.attempts().filter(pl.col("step").is_not_null())
    return log if run_id is None else log.filter(pl.col("run_id") == run_id)


# -- 1. resume at the failed step ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("failure", ["permanent", "transient"])
def test_rerun_of_failed_rows_resumes_at_the_failed_step(tmp_path, sim, backend, failure):
    """only="failed" calls just the step rows failed in; earlier steps are never re-called."""
    n = 100
    if failure == "permanent":  # 10% of the CRM's websites are wrong: /contacts answers 404
        svc = sim()
        frame = companies(svc, range(n), bad=lambda i: i % 10 == 3)
    else:  # /contacts answers 503 to ~10% of requests; no retries anywhere
        svc = sim(transient_share={"/contacts": 0.1}, seed=3)
        frame = companies(svc, range(n))
    pipe = pipefns.make_pipeline(cache=False)  # no cache: only the checkpoints can skip steps
    batch = bk.Batch("leads", store=tmp_path / "s.duckdb")
    batch.add(frame, key="company")
    batch.run(pipe, backend=backend, workers=2, chunk_size=25, retries=0, **QUIET)

    assert requests(svc) == {"/search": n, "/extract": n, "/contacts": n, "/verify": 0}
    items = batch.items()
    failed = items.filter(pl.col("_status") == "failed")
    if failure == "permanent":
        assert failed["company"].to_list() == [f"Company {i:03d}" for i in range(3, n, 10)]
        assert set(failed["_error_type"]) == {"HTTPStatusError"}
    else:
        assert 0 < failed.height == svc.stats()["/contacts"]["503"]
        assert failed["_retryable"].all()
    assert set(failed["_step"]) == {"contacts"}  # the step each failed row failed in
    assert items.filter(pl.col("_status") == "done")["_step"].null_count() == n - failed.height

    before = requests(svc)
    report = batch.run(pipe, backend=backend, workers=2, chunk_size=25, retries=0,
                       only="failed", **QUIET)
    assert delta(svc, before) == {"/search": 0, "/extract": 0, "/contacts": failed.height,
                                  "/verify": 0}
    log = step_log(batch, report.run_id)
    assert set(log["step"]) == {"contacts"}
    assert sorted(log["_id"]) == sorted(failed["_id"])
    again = batch.items().filter(pl.col("_id").is_in(failed["_id"].implode()))
    if failure == "permanent":
        assert set(again["_status"]) == {"failed"} and set(again["_step"]) == {"contacts"}
    else:
        done = again.filter(pl.col("_status") == "done")
        assert done.height == report.succeeded > 0
        # the earlier steps' outputs come from their checkpoints
        res = batch.results().join(done.select("company"), on="company")
        assert res["domain"].to_list() == [c.lower().replace(" ", "-") + ".example"
                                           for c in res["company"]]
        assert res["size"].null_count() == 0 and res["n_contacts"].null_count() == 0
    batch.close()


def test_engine_retry_resumes_at_the_failed_step(tmp_path, sim):
    """A transient failure in the last step is retried by the engine from that step only."""
    n = 60
    svc = sim(transient_share={"/contacts": 0.2}, seed=5)
    batch = bk.Batch("leads", store=tmp_path / "s.duckdb")
    batch.add(companies(svc, range(n)), key="company")
    report = batch.run(pipefns.make_pipeline(cache=False), workers=2, chunk_size=10,
                       retries=bk.RetryPolicy(retries=5, backoff=0), **QUIET)

    flaked = svc.stats()["/contacts"]["503"]
    assert flaked > 0 and report.retries == flaked
    assert batch.counts()["done"] == n
    assert requests(svc) == {"/search": n, "/extract": n, "/contacts": n + flaked,
                             "/verify": 0}
    log = batch.attempts()
    item_rows = log.filter(pl.col("step").is_null())
    assert (item_rows["outcome"] == "retry").sum() == flaked
    later = log.filter(pl.col("attempt") > 1, pl.col("step").is_not_null())
    assert later.height == flaked and set(later["step"]) == {"contacts"}
    batch.close()


# -- 2. the step cache ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_batch_is_served_from_the_cache(tmp_path, sim, backend):
    """Identical rows in a second batch of the store make no calls; refresh=True recomputes."""
    n = 30
    svc = sim()
    store = tmp_path / "s.duckdb"
    frame = companies(svc, range(n))
    first = bk.Batch("monday", store=store)
    first.add(frame, key="company")
    first.run(pipefns.make_pipeline(), backend=backend, workers=2, chunk_size=10, **QUIET)
    assert requests(svc) == {"/search": n, "/extract": n, "/contacts": n, "/verify": 0}
    expected = first.results().sort("company")

    before = requests(svc)
    second = bk.Batch("tuesday", store=store)
    second.add(frame, key="company")
    second.run(pipefns.make_pipeline(), backend=backend, workers=2, chunk_size=10, **QUIET)
    assert delta(svc, before) == dict.fromkeys(ENDPOINTS, 0)
    assert second.results().sort("company").equals(expected)
    log = step_log(second)
    assert log.height == 3 * n and set(log["outcome"]) == {"cached"}
    assert log["calls"].sum() == 0 and log["usd"].sum() == 0

    before = requests(svc)
    third = bk.Batch("wednesday", store=store)
    third.add(frame, key="company")
    third.run(pipefns.make_pipeline(), backend=backend, workers=2, chunk_size=10,
              refresh=True, **QUIET)
    assert delta(svc, before) == {"/search": n, "/extract": n, "/contacts": n, "/verify": 0}
    assert set(step_log(third)["outcome"]) == {"done"}
    assert third.results().sort("company").equals(expected)
    for b in (first, second, third):
        b.close()


def test_refreshed_results_replace_the_cached_ones(tmp_path):
    """After refresh=True, later batches get the refreshed result from the cache."""
    answer = {"rating": "old"}
    store = tmp_path / "s.duckdb"

    def rate(row):
        return {"rating": f"{answer['rating']} {row['company']}"}

    seen = {}
    for name, refresh in (("first", False), ("refreshed", True), ("later", False)):
        if name == "refreshed":
            answer["rating"] = "new"
        batch = bk.Batch(name, store=store)
        batch.add(pl.DataFrame({"company": ["Acme", "Initech"]}), key="company")
        batch.run(bk.pipeline(bk.step("rate")(rate)), workers=1, refresh=refresh, **QUIET)
        seen[name] = batch.results().sort("company")["rating"].to_list()
        batch.close()
    assert seen == {"first": ["old Acme", "old Initech"],
                    "refreshed": ["new Acme", "new Initech"],
                    "later": ["new Acme", "new Initech"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_uncached_step_always_recomputes(tmp_path, sim, backend):
    """@bk.step(cache=False) is called again; cached steps before and after it are not."""
    n = 20
    svc = sim()
    store = tmp_path / "s.duckdb"
    for name in ("first", "second"):
        before = requests(svc)
        batch = bk.Batch(name, store=store)
        batch.add(companies(svc, range(n)), key="company")
        batch.run(pipefns.make_pipeline(extract_cache=False), backend=backend, workers=2,
                  chunk_size=10, **QUIET)
        calls = delta(svc, before)
        assert calls["/extract"] == n
        # contacts runs after a step that had to run: served from the store by the workers
        assert calls["/search"] == calls["/contacts"] == (n if name == "first" else 0)
        outcomes = step_log(batch).group_by("step").agg(pl.col("outcome").unique())
        if name == "second":
            assert dict(outcomes.iter_rows()) == {"search": ["cached"], "extract": ["done"],
                                                  "contacts": ["cached"]}
        assert batch.counts()["done"] == n
        batch.close()


def test_new_version_recomputes(tmp_path, sim):
    """Changing a step's version= computes it afresh; the unchanged steps stay cached."""
    n = 15
    svc = sim()
    store = tmp_path / "s.duckdb"
    for name, version in (("v1", "1"), ("v2", "2"), ("v2_again", "2")):
        before = requests(svc)
        batch = bk.Batch(name, store=store)
        batch.add(companies(svc, range(n)), key="company")
        batch.run(pipefns.make_pipeline(contacts_version=version), workers=2, chunk_size=5,
                  **QUIET)
        calls = delta(svc, before)
        expected = {"v1": (n, n), "v2": (0, n), "v2_again": (0, 0)}[name]
        assert (calls["/search"], calls["/contacts"]) == expected, name
        assert batch.counts()["done"] == n
        batch.close()


def test_cache_key_columns_share_results(tmp_path, sim):
    """cache_key=["company"]: rows that differ in other columns share one computed result."""
    svc = sim()
    store = tmp_path / "s.duckdb"
    search = bk.step("search", cache_key=["company"])(pipefns.search_fn)
    frame = pl.DataFrame({"lead": list(range(12)),
                          "company": [f"Firm {i % 3}" for i in range(12)],
                          "note": [f"met at fair {i}" for i in range(12)],
                          "api": [svc.url] * 12})
    batch = bk.Batch("fair", store=store)
    batch.add(frame, key="lead")
    batch.run(bk.pipeline(search), workers=2, chunk_size=12, **QUIET)
    assert requests(svc)["/search"] == 3
    res = batch.results().sort("lead")
    assert res["domain"].to_list() == [f"firm-{i % 3}.example" for i in range(12)]
    outcomes = step_log(batch)["outcome"]
    assert (outcomes == "done").sum() == 3 and (outcomes == "cached").sum() == 9

    later = bk.Batch("webinar", store=store)
    later.add(frame.with_columns(pl.col("lead") + 100, pl.lit("webinar").alias("note")),
              key="lead")
    later.run(bk.pipeline(bk.step("search", cache_key=["company"])(pipefns.search_fn)),
              workers=2, **QUIET)
    assert requests(svc)["/search"] == 3
    assert later.results().sort("lead")["domain"].to_list() == res["domain"].to_list()
    batch.close()
    later.close()


def test_identical_inputs_in_one_batch_are_computed_once_on_threads(tmp_path, sim):
    """Threads share the in-run cache: duplicates in concurrent chunks are computed once."""
    svc = sim(latency={"/search": 0.03})
    frame = pl.DataFrame({"lead": list(range(40)),
                          "company": [f"Firm {i % 4}" for i in range(40)],
                          "api": [svc.url] * 40})
    batch = bk.Batch("dupes", store=tmp_path / "s.duckdb")
    batch.add(frame, key="lead")
    batch.run(bk.pipeline(bk.step("search", cache_key=["company"])(pipefns.search_fn)),
              backend="threads", workers=4, chunk_size=2, **QUIET)
    assert batch.counts()["done"] == 40
    assert requests(svc)["/search"] == 4
    batch.close()


# -- 3. batched steps ----------------------------------------------------------------------


def _verify_fn(rows: list[dict[str, Any]], ctx: Any) -> list[Any]:
    """POST /verify the rows' addresses; a malformed address fails only its own row."""
    sendable = [r["email"] for r in rows if "@" in r["email"]]
    r = ctx.http.post(rows[0]["api"] + "/verify", json={"emails": sendable})
    r.raise_for_status()
    valid = {v["email"]: v["valid"] for v in r.json()["results"]}
    return [{"valid": valid[row["email"]]} if "@" in row["email"]
            else ValueError(f"not an e-mail address: {row['email']!r}") for row in rows]


def addresses(svc: SimService, n: int) -> pl.DataFrame:
    return pl.DataFrame({"email": [f"person{i}@firm-{i % 7}.example" for i in range(n)],
                         "api": [svc.url] * n})


@pytest.mark.parametrize(("chunk_size", "calls"), [(300, 15), (150, 20)])
def test_batched_step_makes_one_call_per_batch_of_rows(tmp_path, sim, chunk_size, calls):
    """1,500 addresses at batch_size=100 make 15 calls when chunks hold whole batches.

    Batches are grouped within a chunk: with chunks of 150 rows each chunk makes a
    call of 100 rows and one of 50, so 20 calls.
    """
    svc = sim()
    verify = bk.step("verify", batch_size=100)(_verify_fn)
    batch = bk.Batch("emails", store=tmp_path / "s.duckdb")
    batch.add(addresses(svc, 1500), key="email")
    batch.run(bk.pipeline(verify), workers=2, chunk_size=chunk_size, **QUIET)
    stats = svc.stats()["/verify"]
    assert (stats["requests"], stats["items"]) == (calls, 1500)
    assert batch.counts()["done"] == 1500
    res = batch.results().sort("email")
    from batchkit._simservice import verify_result
    truth = {v["email"]: v["valid"] for v in verify_result(res["email"].to_list())["results"]}
    assert res["valid"].to_list() == [truth[e] for e in res["email"]]
    assert step_log(batch)["calls"].sum() == calls  # calls counted once per batch
    batch.close()


def test_one_bad_row_in_a_batch_fails_only_that_row(tmp_path, sim):
    """An exception instance in a batched step's list fails its row; the others are done."""
    svc = sim()
    frame = addresses(svc, 250).with_columns(
        pl.when(pl.int_range(250) == 117).then(pl.lit("nobody-at-all"))
        .otherwise(pl.col("email")).alias("email"))
    batch = bk.Batch("emails", store=tmp_path / "s.duckdb")
    batch.add(frame, key="email")
    batch.run(bk.pipeline(bk.step("verify", batch_size=100)(_verify_fn)), workers=2,
              chunk_size=250, retries=0, **QUIET)
    assert svc.stats()["/verify"]["requests"] == 3
    assert batch.counts() == {"pending": 0, "running": 0, "done": 249, "failed": 1}
    bad = batch.items().filter(pl.col("_status") == "failed")
    assert bad["email"].to_list() == ["nobody-at-all"]
    assert bad.select("_step", "_error_type", "_error_message").row(0) == (
        "verify", "ValueError", "not an e-mail address: 'nobody-at-all'")
    batch.close()


def test_transient_batch_error_retries_the_whole_batch(tmp_path, sim):
    """A 503 on a batch call retries the same batch as one call, inside the step."""
    svc = sim(transient_share={"/verify": 0.5}, seed=1)
    verify = bk.step("verify", batch_size=100,
                     retries=bk.RetryPolicy(retries=8, backoff=0))(_verify_fn)
    batch = bk.Batch("emails", store=tmp_path / "s.duckdb")
    batch.add(addresses(svc, 500), key="email")
    batch.run(bk.pipeline(verify), workers=2, chunk_size=100, retries=0, **QUIET)
    stats = svc.stats()["/verify"]
    assert stats["503"] > 0
    assert (stats["ok"], stats["items"], stats["requests"]) == (5, 500, 5 + stats["503"])
    assert batch.counts()["done"] == 500
    assert set(batch.items()["_attempts"]) == {1}  # retried in the step, not by the engine
    log = step_log(batch)
    # every row of a batch shows its batch's tries: extra tries per batch add up to the 503s
    assert ((log["tries"] - 1).sum()) == 100 * stats["503"]
    assert all(c % 100 == 0 for c in log.group_by("tries").len()["len"])
    batch.close()


def test_wrong_length_return_fails_the_rows_clearly(tmp_path, sim):
    """A batched step returning fewer results than rows fails those rows with a clear error."""
    svc = sim()

    @bk.step("verify", batch_size=100)
    def short(rows, ctx):
        return _verify_fn(rows, ctx)[:-1]

    batch = bk.Batch("emails", store=tmp_path / "s.duckdb")
    batch.add(addresses(svc, 200), key="email")
    batch.run(bk.pipeline(short), workers=2, chunk_size=100, retries=0, **QUIET)
    assert batch.counts()["failed"] == 200
    failed = batch.items()
    assert set(failed["_error_type"]) == {"Permanent"} and set(failed["_step"]) == {"verify"}
    assert set(failed["_error_message"]) == {
        "batched step 'verify' returned 99 results for 100 rows; return a list with one "
        "result per row"}
    batch.close()


# -- 4. async steps ------------------------------------------------------------------------


def test_async_step_runs_many_requests_at_once(tmp_path, sim):
    """An async step keeps up to `concurrency` requests in flight on one worker."""
    svc = sim(latency={"/search": 0.1})
    state = {"now": 0, "peak": 0}

    @bk.step("search", concurrency=50)
    async def search(row, ctx):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            r = await ctx.ahttp.get(row["api"] + "/search", params={"q": row["company"]})
        finally:
            state["now"] -= 1
        r.raise_for_status()
        return {"domain": r.json()["domain"]}

    batch = bk.Batch("fast", store=tmp_path / "s.duckdb")
    batch.add(companies(svc, range(50)), key="company")
    report = batch.run(bk.pipeline(search), workers=1, chunk_size=50, **QUIET)
    assert batch.counts()["done"] == 50
    assert state["peak"] >= 10 and svc.stats()["/search"]["max_in_flight"] >= 10
    assert report.elapsed_s < 0.5 * 50 * 0.1  # generous: sequential calls take 5 s
    # the run closed its async clients: the server sees every kept-alive connection end
    deadline = time.monotonic() + 5
    while svc.stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert svc.stats()["connections"] >= 10 and svc.stats()["open_connections"] == 0
    batch.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_sync_and_async_pipeline_gives_correct_columns(tmp_path, sim, backend):
    """sync search -> async extract -> sync contacts fill every column correctly."""
    n = 24
    svc = sim()
    batch = bk.Batch("mixed", store=tmp_path / "s.duckdb")
    batch.add(companies(svc, range(n)), key="company")
    batch.run(pipefns.make_pipeline(async_extract=True), backend=backend, workers=2,
              chunk_size=6, retries=0, **QUIET)
    assert batch.counts()["done"] == n
    res = batch.results().sort("company")
    found = [search_result(c) for c in res["company"]]
    extracted = [extract_result(f["snippet"]) for f in found]
    people = [contacts_result(w)["contacts"] for w in res["website"]]
    assert res["domain"].to_list() == [f"company-{i:03d}.example" for i in range(n)]
    assert res["industry"].to_list() == [f["industry"] for f in found]
    assert res["size"].to_list() == [e["size"] for e in extracted]
    assert res["revenue"].to_list() == [e["revenue"] for e in extracted]
    assert res["n_contacts"].to_list() == [len(p) for p in people]
    assert res["first_email"].to_list() == [p[0]["email"] for p in people]
    tokens = step_log(batch).filter(pl.col("step") == "extract")["tokens"].sum()
    assert tokens == sum(e["tokens"] for e in extracted)
    batch.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_step_timeout_per_call_is_item_timeout(tmp_path, sim, kind):
    """A call slower than the step's timeout fails its row with ItemTimeout in that step."""
    svc = sim(latency={"/contacts": 0.6})

    async def probe_async(row, ctx):
        path = "/contacts" if row["slow"] else "/health"
        r = await ctx.ahttp.get(row["api"] + path, params={"domain": "a.example"})
        return {"status": r.status_code}

    def probe_sync(row, ctx):
        path = "/contacts" if row["slow"] else "/health"
        return {"status": ctx.http.get(row["api"] + path, params={"domain": "a.example"})
                .status_code}

    probe = bk.step("probe", timeout=0.15)(probe_async if kind == "async" else probe_sync)
    batch = bk.Batch("timeouts", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(6)), "slow": [n % 3 == 0 for n in range(6)],
                            "api": [svc.url] * 6}), key="n")
    batch.run(bk.pipeline(probe), workers=2, chunk_size=3, retries=0, **QUIET)
    items = batch.items().sort("n")
    assert items["_status"].to_list() == ["failed", "done", "done"] * 2
    failed = items.filter(pl.col("_status") == "failed")
    assert set(failed["_error_type"]) == {"ItemTimeout"} and set(failed["_step"]) == {"probe"}
    assert batch.results()["status"].to_list() == [200] * 4
    batch.close()


# -- 5. ctx.memo in the store ----------------------------------------------------------------


def memo_rows(log: str, ids: range) -> pl.DataFrame:
    return pl.DataFrame({"company": [f"Company {i:03d}" for i in ids],
                         "industry": ["retail", "energy", "media"] * (len(ids) // 3),
                         "log": [log] * len(ids)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_memo_is_computed_once_and_kept_in_the_store(tmp_path, backend):
    """ctx.memo computes once per key, and a later run of the store computes none."""
    log = str(tmp_path / "side.log")
    store = tmp_path / "s.duckdb"
    first = bk.Batch("first", store=store)
    first.add(memo_rows(log, range(24)), key="company")
    first.run(pipefns.make_memo_pipeline(), backend=backend, workers=4 if backend ==
              "threads" else 2, chunk_size=2, **QUIET)
    assert first.counts()["done"] == 24
    lines = pipefns.read_lines(log)
    memos = [line for line in lines if line.startswith("memo ")]
    assert sum(line.startswith("call ") for line in lines) == 24
    per_key = {k: memos.count(f"memo {k}") for k in ("retail", "energy", "media")}
    if backend == "threads":
        assert per_key == {"retail": 1, "energy": 1, "media": 1}
    else:  # each worker process computes a key at most once (2 processes)
        assert all(1 <= v <= 2 for v in per_key.values()), per_key
    first.close()

    second = bk.Batch("second", store=store)  # a new Batch on the same file, new companies
    second.add(memo_rows(log, range(100, 124)), key="company")
    second.run(pipefns.make_memo_pipeline(), backend=backend, workers=2, chunk_size=2,
               **QUIET)
    later = pipefns.read_lines(log)[len(lines):]
    assert sum(line.startswith("call ") for line in later) == 24  # the step did run
    assert [line for line in later if line.startswith("memo ")] == []
    res = second.results()
    assert res["brief"].to_list() == [f"notes on {i}" for i in res["industry"]]
    second.close()


# -- 6. cost per attempt ---------------------------------------------------------------------


def test_cost_is_recorded_per_attempt(tmp_path, sim):
    """Item rows, step rows and items' _cost_usd add up; a failed attempt's cost is kept."""
    svc = sim()
    flaky = {"Company 002", "Company 007"}

    @bk.step("extract", cost=0.005)
    def extract(row, ctx):
        ctx.cost(usd=0.002)
        out = pipefns.extract_fn(row, ctx)
        if row["company"] in flaky and ctx.item.attempt == 1:
            raise bk.Transient("model overloaded")
        return out

    pipe = bk.pipeline(bk.step("search", cost=0.01)(pipefns.search_fn), extract)
    batch = bk.Batch("costs", store=tmp_path / "s.duckdb")
    batch.add(companies(svc, range(10)), key="company")
    report = batch.run(pipe, workers=2, chunk_size=5,
                       retries=bk.RetryPolicy(retries=2, backoff=0), **QUIET)
    assert batch.counts()["done"] == 10
    assert requests(svc)["/search"] == 10 and requests(svc)["/extract"] == 12

    log = batch.attempts()
    item_rows = log.filter(pl.col("step").is_null())
    step_rows = log.filter(pl.col("step").is_not_null())
    items = batch.items()
    total = 8 * 0.017 + 2 * (0.017 + 0.007)
    assert item_rows["usd"].sum() == pytest.approx(total)
    assert items["_cost_usd"].sum() == pytest.approx(total)
    assert step_rows["usd"].sum() == pytest.approx(total)
    assert report.cost_usd == pytest.approx(total)
    assert item_rows["tokens"].sum() == step_rows["tokens"].sum() > 0

    ids = items.filter(pl.col("company").is_in(sorted(flaky)))["_id"].to_list()
    for i in ids:
        rows = item_rows.filter(pl.col("_id") == i).sort("attempt")
        assert rows.select("attempt", "outcome").rows() == [(1, "retry"), (2, "done")]
        assert rows["usd"].to_list() == pytest.approx([0.017, 0.007])
        assert items.filter(pl.col("_id") == i)["_cost_usd"].item() == pytest.approx(0.024)
    # the value of a row's outputs: every step once, whatever the retries cost
    assert batch.results()["cost_usd"].to_list() == pytest.approx([0.017] * 10)
    batch.close()


# -- 8. secrets ------------------------------------------------------------------------------


def test_secret_headers_never_reach_the_store(tmp_path, sim):
    """A step's Authorization header never appears in stored errors or the attempt log."""
    secret = "sk-secret-4f9a8b7c6d5e3a2b1c0d"
    svc = sim(api_key="the-right-key")
    factory = ClientFactory(headers={"Authorization": f"Bearer {secret}"})

    @bk.step("search", http=factory)
    def search(row, ctx):
        r = ctx.http.get(row["api"] + "/search", params={"q": row["company"]})
        if row["verbose"]:  # a careless message quoting the request's headers
            raise RuntimeError(f"search failed with HTTP {r.status_code}; request headers "
                               f"were {dict(r.request.headers)}")
        r.raise_for_status()
        return {"domain": r.json()["domain"]}

    path = tmp_path / "s.duckdb"
    batch = bk.Batch("secret", store=path)
    batch.add(companies(svc, range(4)).with_columns(verbose=pl.Series([True, False] * 2)),
              key="company")
    batch.run(bk.pipeline(search), workers=2, retries=0, **QUIET)
    assert svc.stats()["/search"]["401"] == 4
    assert batch.counts()["failed"] == 4
    stored = [
        *batch.items()["_error_message"].to_list(),
        *batch.failed()["error_message"].to_list(),
        *batch.failed()["error_trace"].to_list(),
        *batch.attempts()["error_message"].drop_nulls().to_list(),
    ]
    assert len(stored) == 20 and all(stored)
    assert not [text for text in stored if secret in text or secret[3:] in text]
    verbose = batch.items().filter(pl.col("verbose"))["_error_message"].to_list()
    assert all("authorization" in m and "HTTP 401" in m for m in verbose)
    batch.close()
    assert secret.encode() not in path.read_bytes()
