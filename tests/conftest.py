"""Shared fixtures: a temporary store, a fake clock, batches and frame factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl
import pytest

import batchkit as bk
from batchkit.testing import FakeClock

#: every backend, and the ones that run rows in parallel
ALL_BACKENDS = ("sequential", "threads", "processes")
PARALLEL_BACKENDS = ("threads", "processes")


@pytest.fixture
def store_path(tmp_path) -> str:
    """A fresh store file path in the test's temporary folder."""
    return str(tmp_path / "store.duckdb")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock: backoff sleeps advance it instantly."""
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def make_batch(store_path, clock) -> Iterator[Callable[..., bk.Batch]]:
    """Factory of batches on the test's store and fake clock; all closed at teardown."""
    made: list[bk.Batch] = []

    def make(name: str = "items", *, store: str | None = None, **kwargs) -> bk.Batch:
        kwargs.setdefault("clock", clock)
        batch = bk.Batch(name, store=store or store_path, **kwargs)
        made.append(batch)
        return batch

    yield make
    for batch in made:
        batch.close()


@pytest.fixture
def batch(make_batch) -> bk.Batch:
    """A batch named ``items`` on a fresh store file with a fake clock."""
    return make_batch("items")


@pytest.fixture
def numbers() -> Callable[..., pl.DataFrame]:
    """Frame factory: ``numbers(n)`` is a frame with ``n`` = 0..n-1 and a ``label`` column."""

    def make(n: int = 10, start: int = 0) -> pl.DataFrame:
        return pl.DataFrame({
            "n": pl.Series(range(start, start + n), dtype=pl.Int64),
            "label": pl.Series([f"row-{i}" for i in range(start, start + n)], dtype=pl.String),
        })

    return make


@pytest.fixture(params=ALL_BACKENDS)
def backend(request) -> str:
    """Each backend in turn: sequential, threads, processes."""
    return request.param


@pytest.fixture(params=PARALLEL_BACKENDS)
def parallel_backend(request) -> str:
    """Each parallel backend in turn: threads, processes."""
    return request.param


@pytest.fixture
def no_retries() -> bk.RetryPolicy:
    """A retry policy that never retries."""
    return bk.RetryPolicy(retries=0)
