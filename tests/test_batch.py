"""Batch: adding rows (keys, idempotency, validation) and reading them back."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
import rowfns
from polars.testing import assert_frame_equal

import batchkit as bk

# -- add: counts and idempotency ---------------------------------------------------------


def test_add_returns_number_of_new_rows(batch, numbers):
    """add() returns how many rows were new and they all start pending."""
    assert batch.add(numbers(5), key="n") == 5
    assert batch.counts() == {"pending": 5, "running": 0, "done": 0, "failed": 0}


def test_add_same_frame_twice_adds_nothing(batch, numbers):
    """Adding the same frame again returns 0 and leaves the rows as they were."""
    batch.add(numbers(4), key="n")
    before = batch.items()
    assert batch.add(numbers(4), key="n") == 0
    assert_frame_equal(batch.items(), before)


def test_add_adds_only_new_keys(batch, numbers):
    """A frame with some known keys adds only the new ones; known rows keep their values."""
    batch.add(numbers(3), key="n")  # n = 0, 1, 2
    again = numbers(4, start=1).with_columns(pl.lit("changed").alias("label"))  # n = 1..4
    assert batch.add(again, key="n") == 2
    items = batch.items().sort("n")
    assert items["n"].to_list() == [0, 1, 2, 3, 4]
    assert items["label"].to_list() == ["row-0", "row-1", "row-2", "changed", "changed"]


def test_add_keeps_frame_order_in_ids(batch):
    """Row ids follow the order of the frame, across adds."""
    batch.add(pl.DataFrame({"n": [30, 10, 20]}), key="n")
    batch.add(pl.DataFrame({"n": [5, 10, 1]}), key="n")
    items = batch.items()
    assert items["_id"].is_sorted() and items["_id"].n_unique() == 5
    assert items["n"].to_list() == [30, 10, 20, 5, 1]


def test_add_accepts_columns_in_another_order(batch, numbers):
    """A second add with the same columns in another order works."""
    batch.add(numbers(2), key="n")
    assert batch.add(numbers(3).select("label", "n"), key="n") == 1
    assert batch.items().columns[2:4] == ["n", "label"]


# -- add: keys ---------------------------------------------------------------------------


def test_key_column_becomes_item_key(batch):
    """With key=column, each item's _key is that column's value as text."""
    batch.add(pl.DataFrame({"company": ["acme", "initech"], "size": [10, 20]}), key="company")
    assert batch.items()["_key"].to_list() == ["acme", "initech"]


def test_key_list_of_columns(batch):
    """With a list of key columns, rows are unique by the combination."""
    frame = pl.DataFrame({"city": ["Oslo", "Oslo", "Rome"], "year": [2020, 2021, 2020]})
    assert batch.add(frame, key=["city", "year"]) == 3
    assert batch.add(frame.head(2), key=["city", "year"]) == 0
    keys = batch.items()["_key"].to_list()
    assert len(set(keys)) == 3
    assert json.loads(keys[0]) == {"city": "Oslo", "year": 2020}


def test_key_none_hashes_the_row_stably(make_batch, tmp_path):
    """key=None keys rows by a hash of their values, equal across batches and stores."""
    frame = pl.DataFrame({"a": [1, 2, None], "b": ["x", "y", "z"]})
    one = make_batch("one")
    two = make_batch("two", store=str(tmp_path / "other.duckdb"))
    assert one.add(frame, key=None) == 3
    assert two.add(frame.reverse(), key=None) == 3
    keys_one = dict(one.items().select("a", "_key").rows())
    keys_two = dict(two.items().select("a", "_key").rows())
    assert keys_one == keys_two
    assert len(set(keys_one.values())) == 3
    assert one.add(frame, key=None) == 0
    assert one.add(frame.with_columns(pl.col("b") + "!"), key=None) == 3


def test_key_none_hash_is_the_same_in_another_process(batch):
    """The row hash does not depend on the process (no randomized hash())."""
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", None], "c": [[1, 2], []]})
    batch.add(frame, key=None)
    code = (
        "import polars as pl, batchkit as bk, json\n"
        "b = bk.Batch('h', store=':memory:')\n"
        "b.add(pl.DataFrame({'a': [1, 2], 'b': ['x', None], 'c': [[1, 2], []]}), key=None)\n"
        "print(json.dumps(b.items()['_key'].to_list()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert json.loads(out.stdout) == batch.items()["_key"].to_list()


def test_key_none_with_duplicate_rows_raises(batch):
    """key=None with identical rows raises SchemaError naming the rows; nothing is stored."""
    with pytest.raises(bk.SchemaError) as err:
        batch.add(pl.DataFrame({"a": [1, 2, 1]}), key=None)
    assert "identical" in str(err.value) and "[0, 2]" in str(err.value)
    assert batch.items().height == 0


def test_null_key_raises_naming_column_and_row(batch):
    """A null in a key column raises SchemaError naming the column and the first row."""
    frame = pl.DataFrame({"id": [1, None, 3], "v": ["a", "b", "c"]})
    with pytest.raises(bk.SchemaError) as err:
        batch.add(frame, key="id")
    assert "'id'" in str(err.value)
    assert "row 1" in str(err.value)
    assert batch.counts()["pending"] == 0


def test_duplicate_keys_raise_naming_examples(batch):
    """Duplicate keys in one frame raise SchemaError with example keys; nothing is stored."""
    frame = pl.DataFrame({"id": ["a", "b", "a", "c", "c"]})
    with pytest.raises(bk.SchemaError) as err:
        batch.add(frame, key="id")
    message = str(err.value)
    assert "'a'" in message and "'c'" in message and "'b'" not in message
    assert "4 rows share a key" in message
    assert batch.items().height == 0


def test_missing_key_column_raises(batch, numbers):
    """A key column that is not in the frame raises SchemaError naming it and the columns."""
    with pytest.raises(bk.SchemaError) as err:
        batch.add(numbers(2), key="company")
    assert "'company'" in str(err.value)
    assert "'label'" in str(err.value)


def test_bad_key_argument_raises(batch, numbers):
    """A key that is neither a column name, a list of names nor None raises ConfigError."""
    with pytest.raises(bk.ConfigError, match="key must be"):
        batch.add(numbers(2), key=3)
    with pytest.raises(bk.ConfigError, match="key must be"):
        batch.add(numbers(2), key=[])


def test_nested_key_column_raises(batch):
    """A list-typed key column raises SchemaError (keys must be scalars)."""
    with pytest.raises(bk.SchemaError, match="scalar"):
        batch.add(pl.DataFrame({"k": [[1], [2]]}), key="k")


def test_second_add_with_another_key_raises(batch, numbers):
    """A batch keyed by one column refuses an add keyed by another (or by hash)."""
    batch.add(numbers(2), key="n")
    with pytest.raises(bk.SchemaError, match="keyed by"):
        batch.add(numbers(2), key="label")
    with pytest.raises(bk.SchemaError, match="keyed by"):
        batch.add(numbers(2), key=None)


# -- add: validation ---------------------------------------------------------------------


@pytest.mark.parametrize("column", sorted(bk.STATUS_COLUMNS) + ["_id", "_key"])
def test_reserved_column_names_are_rejected(batch, column):
    """Input columns named like batchkit's own columns raise SchemaError naming them."""
    frame = pl.DataFrame({"n": [1, 2], column: [1, 2]})
    with pytest.raises(bk.SchemaError) as err:
        batch.add(frame, key="n")
    assert repr(column) in str(err.value)


def test_other_underscore_columns_are_allowed(batch):
    """A leading underscore alone is fine for input columns that batchkit does not use."""
    assert batch.add(pl.DataFrame({"n": [1], "_note": ["x"]}), key="n") == 1


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pl.DataFrame({"n": [9], "label": ["x"], "extra": [1.0]}), "extra ['extra']"),
        (pl.DataFrame({"n": [9]}), "missing ['label']"),
        (pl.DataFrame({"n": [9], "label": [1]}), "label: String -> Int64"),
    ],
    ids=["extra-column", "missing-column", "other-type"],
)
def test_schema_mismatch_on_second_add_raises(batch, numbers, frame, expected):
    """A later add whose columns or types differ raises SchemaError naming the difference."""
    batch.add(numbers(2), key="n")
    with pytest.raises(bk.SchemaError) as err:
        batch.add(frame, key="n")
    assert expected in str(err.value)
    assert batch.items().height == 2


def test_empty_frame_adds_nothing(batch, numbers):
    """An empty frame returns 0 and creates no batch; running it is a no-op."""
    assert batch.add(numbers(0), key="n") == 0
    assert batch.items().height == 0
    assert batch.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    report = batch.run(rowfns.square, progress=False)
    assert report.outcome == "empty"
    assert report.processed == 0


def test_empty_frame_on_existing_batch_returns_zero(batch, numbers):
    """An empty frame with the batch's columns adds nothing to an existing batch."""
    batch.add(numbers(3), key="n")
    assert batch.add(numbers(0), key="n") == 0
    assert batch.items().height == 3


def test_frame_without_columns_raises(batch):
    """A frame with no columns raises SchemaError."""
    with pytest.raises(bk.SchemaError, match="no columns"):
        batch.add(pl.DataFrame(), key=None)


def test_lazyframe_is_accepted(batch, numbers):
    """add() accepts a LazyFrame and collects it."""
    assert batch.add(numbers(3).lazy().filter(pl.col("n") > 0), key="n") == 2
    assert batch.items()["n"].to_list() == [1, 2]


@pytest.mark.parametrize("value", [{"n": [1, 2]}, [{"n": 1}], pl.Series("n", [1])],
                         ids=["dict", "list", "series"])
def test_non_frame_is_rejected(batch, value):
    """add() of anything but a Polars frame raises ConfigError naming the type."""
    with pytest.raises(bk.ConfigError) as err:
        batch.add(value, key="n")
    assert type(value).__name__ in str(err.value)


def test_unstorable_column_type_is_rejected(batch):
    """A column of Python objects raises SchemaError naming the column."""
    frame = pl.DataFrame({"n": [1], "obj": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(bk.SchemaError, match="'obj'"):
        batch.add(frame, key="n")


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a__b", "drop;table", "x" * 64, None])
def test_bad_batch_name_raises(store_path, name):
    """Batch names that are not plain identifiers raise ConfigError."""
    with pytest.raises(bk.ConfigError, match="batch name"):
        bk.Batch(name, store=store_path)


def test_store_folder_must_exist(tmp_path):
    """A store path in a missing folder raises ConfigError naming the folder."""
    with pytest.raises(bk.ConfigError, match="does not exist"):
        bk.Batch("b", store=str(tmp_path / "nope" / "s.duckdb"))


# -- reading -----------------------------------------------------------------------------


def test_counts_lists_every_status(batch, numbers, no_retries):
    """counts() has pending, running, done and failed, zeros included."""
    batch.add(numbers(4), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    assert batch.counts() == {"pending": 0, "running": 0, "done": 2, "failed": 2}


def test_results_are_done_rows_with_inputs_and_new_columns(batch, numbers, no_retries):
    """results() holds the done rows: input columns, then the returned columns."""
    batch.add(numbers(4), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    expected = pl.DataFrame({"n": [0, 2], "label": ["row-0", "row-2"], "half": [0, 1]})
    assert_frame_equal(batch.results(), expected)


def test_failed_is_the_dead_letter_list(batch, numbers, no_retries):
    """failed() lists failed rows with key, inputs and error details."""
    batch.add(numbers(4), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    failed = batch.failed()
    assert failed.columns == ["key", "n", "label", "error_type", "error_message", "attempts",
                              "retryable", "finished_at", "error_trace"]
    assert failed["key"].to_list() == ["1", "3"]
    assert failed["error_type"].to_list() == ["ValueError", "ValueError"]
    assert failed["error_message"].to_list() == ["odd number 1", "odd number 3"]
    assert failed["attempts"].to_list() == [1, 1]
    assert failed["retryable"].to_list() == [False, False]
    assert failed["finished_at"].null_count() == 0
    assert all("ValueError" in t for t in failed["error_trace"].to_list())


def test_items_has_every_row_with_status_columns(batch, numbers, no_retries):
    """items() holds every row with _id, _key, inputs, results and the status columns."""
    batch.add(numbers(4), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    items = batch.items()
    assert items.columns[:5] == ["_id", "_key", "n", "label", "half"]
    for column in bk.STATUS_COLUMNS:
        if column != "_attempts_base":
            assert column in items.columns
    assert items["_status"].to_list() == ["done", "failed", "done", "failed"]
    assert items["half"].to_list() == [0, None, 1, None]
    assert items["_attempts"].to_list() == [1, 1, 1, 1]
    assert items["_duration_s"].null_count() == 0
    assert items["_started_at"].null_count() == 0
    assert items["_run_id"].n_unique() == 1


def test_reading_an_absent_batch_gives_empty_frames(batch):
    """results(), failed() and items() of a batch with no rows are empty frames."""
    assert batch.results().height == 0
    assert batch.failed().height == 0
    assert batch.items().height == 0


def test_rows_persist_across_reopen(store_path, numbers):
    """Rows and results survive closing and reopening the store."""
    with bk.Batch("keep", store=store_path) as first:
        first.add(numbers(3), key="n")
        first.run(rowfns.square, backend="sequential", progress=False)
        before = first.items()
    with bk.Batch("keep", store=store_path) as again:
        assert_frame_equal(again.items(), before)
        assert again.add(numbers(3), key="n") == 0


def test_closed_batch_raises(store_path, numbers):
    """Using a closed batch raises ConfigError telling how to reopen it."""
    b = bk.Batch("shut", store=store_path)
    b.close()
    with pytest.raises(bk.ConfigError, match="closed"):
        b.add(numbers(1), key="n")
    b.close()  # closing twice is harmless


def test_batch_repr_shows_counts(batch, numbers):
    """The repr and the HTML repr of a batch show its counts."""
    batch.add(numbers(3), key="n")
    assert "3 pending" in repr(batch)
    assert "3 pending" in batch._repr_html_()
    assert "items" in repr(batch)


# -- export ------------------------------------------------------------------------------


def test_export_writes_done_rows(batch, numbers, no_retries, tmp_path):
    """export() writes the done rows, readable by Polars with the same types as results()."""
    batch.add(numbers(6), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    path = tmp_path / "out.parquet"
    assert batch.export(path) == 3
    assert_frame_equal(pl.read_parquet(path), batch.results())


def test_export_all_rows_with_status_columns(batch, numbers, no_retries, tmp_path):
    """export(rows='all', status_columns=True) writes every row like items()."""
    batch.add(numbers(6), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    path = tmp_path / "all.parquet"
    assert batch.export(path, rows="all", status_columns=True) == 6
    written = pl.read_parquet(path)
    assert_frame_equal(written, batch.items())
    assert written.schema == batch.items().schema


def test_export_failed_rows(batch, numbers, no_retries, tmp_path):
    """export(rows='failed') writes only the failed rows."""
    batch.add(numbers(6), key="n")
    batch.run(rowfns.fail_odd, retries=no_retries, backend="sequential", progress=False)
    path = tmp_path / "failed.parquet"
    assert batch.export(path, rows="failed") == 3
    assert pl.read_parquet(path)["n"].to_list() == [1, 3, 5]


def test_export_keeps_input_types(batch, tmp_path):
    """Exported input columns keep their exact Polars types (durations, enums, tz datetimes)."""
    import datetime as dt

    frame = pl.DataFrame({
        "n": pl.Series([1, 2], dtype=pl.UInt16),
        "dur": [dt.timedelta(seconds=1), None],
        "at": pl.Series([dt.datetime(2024, 1, 1), None]).dt.replace_time_zone("Europe/Oslo"),
        "kind": pl.Series(["a", "b"], dtype=pl.Enum(["b", "a"])),
    })
    batch.add(frame, key="n")
    batch.run(rowfns.nothing, backend="sequential", progress=False)
    path = tmp_path / "types.parquet"
    batch.export(path)
    assert_frame_equal(pl.read_parquet(path), frame)


def test_export_bad_arguments(batch, numbers, tmp_path):
    """export() with an unknown rows= or a missing folder raises ConfigError."""
    batch.add(numbers(1), key="n")
    with pytest.raises(bk.ConfigError, match="rows must be one of"):
        batch.export(tmp_path / "x.parquet", rows="some")
    with pytest.raises(bk.ConfigError, match="does not exist"):
        batch.export(tmp_path / "missing" / "x.parquet")


def test_export_of_absent_batch_writes_nothing(batch, tmp_path):
    """Exporting a batch with no rows returns 0."""
    assert batch.export(tmp_path / "none.parquet") == 0
