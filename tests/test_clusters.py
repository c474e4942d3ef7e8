"""Failure clusters: message templates, grouping, over-represented inputs, ordering."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import polars as pl
import pytest

from batchkit._clusters import (
    Cluster,
    FailureClusters,
    OverRepresented,
    cluster_failures,
    normalise_message,
)
from batchkit._errors import ConfigError

T0 = datetime(2024, 1, 1)
INPUTS = ["country", "plan", "source"]
TEMPLATE_A = "timed out after <n> s calling https://api.example.com/v1/company/<id>?q=<v>"
TEMPLATE_B = "bad JSON in response <id>: expected <str> at line <n>"


# -- normalise_message ---------------------------------------------------------------------

@pytest.mark.parametrize(("message", "template"), [
    ("user 42 not found", "user <n> not found"),
    ("timed out after 12.5s", "timed out after <n>s"),
    ("GET https://api.example.com:8443/v1/users/123/orders?q=acme&page=2 failed",
     "GET https://api.example.com:<n>/v1/users/<id>/orders?q=<v>&page=<v> failed"),
    ("https://user:pw@api.example.com/v2/companies/acme-42?api_key=***#top.",
     "https://api.example.com/v2/companies/<id>?api_key=<v>#<v>."),
    ("http://127.0.0.1:41237/search?q=Acme%20Corp", "http://127.0.0.1:<n>/search?q=<v>"),
    ("see https://x.com/a/b1/c, then retry", "see https://x.com/a/<id>/c, then retry"),
    ("ftp://files.example.com/pub/v1.2/file-2024.tar.gz",
     "ftp://files.example.com/pub/v1.2/<id>"),
    ("request 123e4567-e89b-12d3-a456-426614174000 failed", "request <id> failed"),
    ("sha 9f86d081884c7d65 at 0xDEADBEEF", "sha <id> at <id>"),
    ("trace req_8fJ2kL93 lost", "trace <id> lost"),
    ("KeyError: 'country'", "KeyError: <str>"),
    ("can't parse 'abc' or \"d\\\"e\" or `f`", "can't parse <str> or <str> or <str>"),
    ('json {"error": "not found", "id": 42}', "json {<str>: <str>, <str>: <n>}"),
    ("no mailbox bob.smith+x@mail.example.org", "no mailbox <email>"),
    ("at 2024-05-01T10:00:00Z and 10:00:00.123", "at <time> and <time>"),
    ("connect to 10.0.0.1:5432 refused", "connect to <n>:<n> refused"),
    ("ids [1, 2, 3] and (4, 5)", "ids [<n>, …] and (<n>, …)"),
    ("row-42 item_42 utf8 v1 sha256", "row-<n> item_<n> utf8 v1 sha256"),
    ("  spaced \n  out  ", "spaced out"),
    ("", ""),
])
def test_normalise_message_templates(message, template):
    """Numbers, ids, hashes, quotes, e-mails, times and URL parts become placeholders."""
    assert normalise_message(message) == template


@pytest.mark.parametrize("message", [
    "GET https://api.example.com:8443/v1/users/123/orders?q=acme&page=2 failed",
    "can't parse 'abc' at 2024-05-01T10:00:00Z, request 9f86d081884c7d65",
    "ids [1, 2, 3] for bob@example.com",
])
def test_normalise_message_is_idempotent(message):
    """Normalising a template again leaves it unchanged."""
    once = normalise_message(message)
    assert normalise_message(once) == once


def test_normalise_message_merges_variants():
    """Messages differing only in variable parts share one template."""
    a = normalise_message("HTTP 404 for https://api.example.com/v1/company/17?q=acme (id 'x1')")
    b = normalise_message("HTTP 404 for https://api.example.com/v1/company/902?q=b%20c (id 'y')")
    assert a == b == "HTTP <n> for https://api.example.com/v1/company/<id>?q=<v> (id <str>)"


# -- a crafted batch -----------------------------------------------------------------------

# id: country, plan, source, status, cluster
ROWS = [
    (1, "BR", "pro", "web", "failed", "A"), (2, "BR", "pro", "web", "failed", "A"),
    (3, "BR", "pro", "web", "failed", "A"), (4, "BR", "pro", "ads", "failed", "A"),
    (5, "US", "pro", "ads", "failed", "A"), (6, "US", "free", None, "failed", "B"),
    (7, "US", "free", None, "failed", "B"), (8, "DE", "free", "ads", "failed", "B"),
    (9, "BR", "free", "ads", "done", None), (10, "US", "pro", "web", "failed", "C"),
    (11, "DE", "pro", "ads", "failed", "D"), (12, "US", "pro", "ads", "done", None),
    (13, "US", "pro", "ads", "done", None), (14, "US", "pro", "ads", "done", None),
    (15, "US", "pro", "ads", "done", None), (16, "US", "pro", "ads", "pending", None),
    (17, "DE", "pro", "ads", "done", None), (18, "DE", "pro", "ads", "done", None),
    (19, "DE", "pro", "ads", "running", None), (20, "US", "pro", "ads", "done", None),
]
ERRORS = {
    1: ("search", "TimeoutError",
        "timed out after 30 s calling https://api.example.com/v1/company/123?q=acme"),
    2: ("search", "TimeoutError",
        "timed out after 12.5 s calling https://api.example.com/v1/company/9?q=b%20c"),
    3: ("search", "TimeoutError",
        "timed out after 30 s calling https://api.example.com/v1/company/77?q=x"),
    4: ("search", "TimeoutError",
        "timed out after 7 s calling https://api.example.com/v1/company/4?q=d"),
    5: ("search", "TimeoutError",
        "timed out after 30 s calling https://api.example.com/v1/company/5?q=e"),
    6: ("extract", "ValueError",
        "bad JSON in response 9f86d081884c7d65: expected 'name' at line 3"),
    7: ("extract", "ValueError",
        "bad JSON in response 0a1b2c3d4e5f6789: expected 'size' at line 14"),
    8: ("extract", "ValueError",
        "bad JSON in response 123e4567-e89b-12d3-a456-426614174000: expected \"x\" at line 1"),
    10: (None, "KeyError", "'country'"),
    11: ("extract", "TimeoutError",
         "timed out after 30 s calling https://api.example.com/v1/company/11?q=z"),
}


def _items() -> pl.DataFrame:
    records = []
    for _id, country, plan, source, status, _ in ROWS:
        step, etype, message = ERRORS.get(_id, (None, None, None))
        records.append({
            "_id": _id, "_key": f"k{_id:02d}", "country": country, "plan": plan,
            "source": source, "_status": status, "_step": step, "_error_type": etype,
            "_error_message": message,
            "_finished_at": T0 + timedelta(minutes=_id) if status in ("done", "failed")
            else None,
        })
    return pl.DataFrame(records, schema={
        "_id": pl.Int64, "_key": pl.String, "country": pl.String, "plan": pl.String,
        "source": pl.String, "_status": pl.String, "_step": pl.String,
        "_error_type": pl.String, "_error_message": pl.String,
        "_finished_at": pl.Datetime("us")})


@pytest.fixture
def items() -> pl.DataFrame:
    """The crafted 20-row batch: 10 failed rows in four patterns."""
    return _items()


def test_clusters_group_by_step_type_and_template(items):
    """Failed rows group by (step, error type, template), largest first, with shares."""
    fc = cluster_failures(items, INPUTS)
    assert isinstance(fc, FailureClusters)
    assert (len(fc), fc.failed, fc.total) == (4, 10, 20)
    got = [(c.step, c.error_type, c.template, c.count, c.share, c.ids) for c in fc]
    assert got == [
        ("search", "TimeoutError", TEMPLATE_A, 5, 0.5, (1, 2, 3, 4, 5)),
        ("extract", "ValueError", TEMPLATE_B, 3, 0.3, (6, 7, 8)),
        (None, "KeyError", "<str>", 1, 0.1, (10,)),
        ("extract", "TimeoutError", TEMPLATE_A, 1, 0.1, (11,)),
    ]


def test_cluster_times_examples_and_ids(items):
    """first/last seen come from _finished_at; example keys are the lowest ids (at most 5)."""
    a, b, c, _ = cluster_failures(items, INPUTS)
    assert (a.first_seen, a.last_seen) == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))
    assert a.example_keys == ("k01", "k02", "k03", "k04", "k05")
    assert b.example_keys == ("k06", "k07", "k08")
    assert a.example_message == ERRORS[1][2]
    assert c.retried == 0 and isinstance(c, Cluster)


def test_cluster_ids_are_stable_short_hashes(items):
    """A cluster's id is the first 10 hex digits of SHA-1 over step, type and template."""
    fc = cluster_failures(items, INPUTS)
    raw = "\x1f".join(("search", "TimeoutError", TEMPLATE_A))
    assert fc[0].id == hashlib.sha1(raw.encode()).hexdigest()[:10]
    assert fc[2].id == hashlib.sha1(b"\x00\x1fKeyError\x1f<str>").hexdigest()[:10]
    assert len({c.id for c in fc}) == 4
    assert fc.get(fc[1].id) is fc[1]
    with pytest.raises(KeyError, match="no cluster 'nope'"):
        fc.get("nope")


def test_over_represented_values_and_sentences(items):
    """Values with >= min_lift x their overall share on >= 2 cluster rows, biggest excess first."""
    a, b, c, d = cluster_failures(items, INPUTS)
    assert a.over_represented == (
        OverRepresented("country", "BR", 4, 0.8, 0.25,
                        "80% of TimeoutError errors in step 'search' have country = 'BR' "
                        "(vs 25% overall)"),
        OverRepresented("source", "web", 3, 0.6, 0.2,
                        "60% of TimeoutError errors in step 'search' have source = 'web' "
                        "(vs 20% overall)"),
    )
    assert [(v.column, v.value, v.rows) for v in b.over_represented] == [
        ("plan", "free", 3), ("source", None, 2)]
    assert b.over_represented[1].share_in_cluster == pytest.approx(2 / 3)
    assert b.over_represented[1].share_overall == pytest.approx(0.1)
    assert b.over_represented[1].sentence == (
        "67% of ValueError errors in step 'extract' have source is null (vs 10% overall)")
    assert b.over_represented[0].lift == pytest.approx(5.0)
    assert c.over_represented == () and d.over_represented == ()  # single rows never qualify


def test_top_values_and_min_lift_filter(items):
    """top_values keeps the first N findings; min_lift raises the bar."""
    a = cluster_failures(items, INPUTS, top_values=1)[0]
    assert [(v.column, v.value) for v in a.over_represented] == [("country", "BR")]
    fc = cluster_failures(items, INPUTS, min_lift=4.0)
    assert fc[0].over_represented == ()  # BR lift 3.2, web lift 3
    assert [(v.column, v.value) for v in fc[1].over_represented] == [
        ("plan", "free"), ("source", None)]  # lifts 5 and 6.7
    assert all(c.over_represented == () for c in cluster_failures(items, INPUTS, top_values=0))
    assert all(c.over_represented == () for c in cluster_failures(items, []))


def test_result_does_not_depend_on_row_order(items):
    """Shuffled input rows give the same clusters in the same order."""
    shuffled = items.sample(fraction=1.0, shuffle=True, seed=7)
    assert cluster_failures(shuffled, INPUTS) == cluster_failures(items, INPUTS)


def test_cluster_expr_selects_its_rows(items):
    """cluster.expr is pl.col('_id').is_in(ids): it selects exactly the cluster's rows."""
    a = cluster_failures(items, INPUTS)[0]
    assert items.filter(a.expr)["_id"].to_list() == [1, 2, 3, 4, 5]
    assert str(a.expr) == str(pl.col("_id").is_in(pl.Series("ids", [1, 2, 3, 4, 5])))


def test_table_has_one_row_per_cluster_by_count(items):
    """.table is a frame of the clusters, count descending, with sentences and examples."""
    fc = cluster_failures(items, INPUTS)
    table = fc.table
    assert table.columns == ["id", "step", "error_type", "template", "count", "share",
                             "retried", "first_seen", "last_seen", "example_keys",
                             "over_represented"]
    assert table["count"].to_list() == [5, 3, 1, 1]
    assert table["id"].to_list() == [c.id for c in fc]
    assert table["example_keys"][1].to_list() == ["k06", "k07", "k08"]
    assert table["over_represented"][0].to_list()[0].startswith("80% of TimeoutError")


def test_str_and_html(items):
    """__str__ lists clusters with their findings; _repr_html_ escapes templates."""
    fc = cluster_failures(items, INPUTS)
    text = str(fc)
    assert text.splitlines()[0] == "4 failure clusters over 10 failed rows (of 20)"
    assert f"[{fc[0].id}] 5 rows (50%) search: TimeoutError: {TEMPLATE_A}" in text
    assert "    80% of TimeoutError errors in step 'search' have country = 'BR'" in text
    page = fc._repr_html_()
    assert "&lt;n&gt;" in page and "<n>" not in page
    assert page.count("<tr>") == 5
    assert len(fc[1:3]) == 2 and list(fc)[0] is fc[0]


def test_no_failures_and_empty_frames():
    """Nothing failed (or no rows at all): an empty result that still renders."""
    done = _items().with_columns(pl.lit("done").alias("_status"))
    fc = cluster_failures(done, INPUTS)
    assert (len(fc), fc.failed, fc.total) == (0, 0, 20)
    assert str(fc) == "no failures (20 rows)"
    assert fc.table.height == 0 and "count" in fc.table.columns
    assert "no failures" in fc._repr_html_()
    empty = cluster_failures(pl.DataFrame(), [])
    assert (len(empty), empty.failed, empty.total) == (0, 0, 0)


def test_missing_status_columns_count_as_null():
    """A frame without _step, _finished_at or _key still clusters (nulls)."""
    items = pl.DataFrame({"_id": [1, 2], "_status": ["failed", "failed"],
                          "_error_type": ["KeyError", "KeyError"],
                          "_error_message": [None, None]})
    (c,) = cluster_failures(items, [])
    assert (c.step, c.template, c.count, c.first_seen, c.example_message) == (
        None, "", 2, None, None)


def test_bad_arguments_raise_config_errors(items):
    """Unknown input columns, negative top_values or min_lift <= 0 fail at once."""
    with pytest.raises(ConfigError, match=r"input columns \['nope'\] are not in the items"):
        cluster_failures(items, ["country", "nope"])
    with pytest.raises(ConfigError, match="top_values"):
        cluster_failures(items, INPUTS, top_values=-1)
    with pytest.raises(ConfigError, match="min_lift"):
        cluster_failures(items, INPUTS, min_lift=0)


# -- with the attempt log ------------------------------------------------------------------

def _attempts() -> pl.DataFrame:
    rows = [
        # row 9 (now done) hit the search timeout once, then succeeded
        (9, 1, None, 0.0, "retry", "TimeoutError",
         "timed out after 3 s calling https://api.example.com/v1/company/9?q=q"),
        (9, 1, "search", 0.0, "failed", "TimeoutError",
         "timed out after 3 s calling https://api.example.com/v1/company/9?q=q"),
        (9, 2, None, 600.0, "done", None, None),
        # rows 12 and 13 hit a 503 in search, retried, and are done: a retry-only pattern
        (12, 1, None, 0.0, "retry", "HTTPStatusError", "503 Service Unavailable (req 4411)"),
        (12, 1, "search", 0.0, "failed", "HTTPStatusError", "503 Service Unavailable (req 4411)"),
        (13, 1, None, 30.0, "retry", "HTTPStatusError", "503 Service Unavailable (req 97)"),
        (13, 1, "search", 30.0, "failed", "HTTPStatusError", "503 Service Unavailable (req 97)"),
        # row 14 retried with no step row: the step is unknown
        (14, 1, None, 60.0, "retry", "ConnectionError", "connection reset"),
        # a final failure in the log is not counted again (items hold it)
        (1, 1, None, 0.0, "failed", "TimeoutError", ERRORS[1][2]),
    ]
    return pl.DataFrame(
        [{"_id": i, "attempt": a, "step": s, "started_at": T0 + timedelta(seconds=t),
          "duration_s": 2.0, "outcome": o, "error_type": e, "error_message": m}
         for i, a, s, t, o, e, m in rows],
        schema={"_id": pl.Int64, "attempt": pl.Int32, "step": pl.String,
                "started_at": pl.Datetime("us"), "duration_s": pl.Float64,
                "outcome": pl.String, "error_type": pl.String, "error_message": pl.String})


def test_attempts_add_retried_errors(items):
    """With the log, retried errors count per cluster and retry-only patterns get clusters."""
    fc = cluster_failures(items, INPUTS, attempts=_attempts())
    got = [(c.step, c.error_type, c.template, c.count, c.retried, c.ids) for c in fc]
    assert got == [
        ("search", "TimeoutError", TEMPLATE_A, 5, 1, (1, 2, 3, 4, 5)),
        ("extract", "ValueError", TEMPLATE_B, 3, 0, (6, 7, 8)),
        (None, "KeyError", "<str>", 1, 0, (10,)),
        ("extract", "TimeoutError", TEMPLATE_A, 1, 0, (11,)),
        ("search", "HTTPStatusError", "<n> Service Unavailable (req <n>)", 0, 2, ()),
        (None, "ConnectionError", "connection reset", 0, 1, ()),
    ]
    assert fc.failed == 10 and fc[4].share == 0.0
    # the retried attempt of row 9 ended at T0 + 2 s, before the first final failure
    assert (fc[0].first_seen, fc[0].last_seen) == (T0 + timedelta(seconds=2),
                                                   T0 + timedelta(minutes=5))
    assert fc[0].example_keys == ("k01", "k02", "k03", "k04", "k05")
    assert fc[4].example_keys == ("k12", "k13")
    assert (fc[4].first_seen, fc[4].last_seen) == (T0 + timedelta(seconds=2),
                                                   T0 + timedelta(seconds=32))
    assert items.filter(fc[4].expr).height == 0  # nothing of it is left to re-run
    # its over-represented values come from the rows that hit it (12 and 13: both US)
    assert [v.sentence for v in fc[4].over_represented] == [
        "100% of HTTPStatusError errors in step 'search' have country = 'US' (vs 50% overall)"]


def test_empty_attempt_log_changes_nothing(items):
    """An empty attempt log gives the same clusters as none."""
    assert cluster_failures(items, INPUTS, attempts=pl.DataFrame()) == cluster_failures(
        items, INPUTS)
