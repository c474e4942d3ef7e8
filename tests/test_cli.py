"""The command line: `batchkit run/status/failed/export/demo`, in-process and as processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import batchkit as bk
from batchkit._cli import default_batch_name, main

REPO = Path(__file__).resolve().parents[1]
CLIFNS = str(Path(__file__).resolve().with_name("clifns.py"))
BATCHKIT_SCRIPT = Path(sys.executable).parent / "batchkit"
SUBCOMMANDS = ["run", "status", "failed", "export", "demo"]


def fn(name: str) -> str:
    """``MODULE:FUNCTION`` of a function in tests/clifns.py, given by file path."""
    return f"{CLIFNS}:{name}"


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """The CLI puts the working folder and script folders on sys.path; undo it after."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def cli(capsys):
    """Run ``main(argv)`` in-process; return (exit code, stdout, stderr)."""

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def numbers_csv(tmp_path) -> Path:
    """A CSV of n = 1..10 with a word column."""
    path = tmp_path / "numbers.csv"
    pl.DataFrame({"n": list(range(1, 11)),
                  "word": [f"w{i}" for i in range(1, 11)]}).write_csv(path)
    return path


@pytest.fixture
def store(tmp_path) -> str:
    """A store path in the test's folder."""
    return str(tmp_path / "cli.duckdb")


@pytest.fixture
def odd_failed(cli, numbers_csv, store) -> str:
    """A store whose batch ``numbers`` has odd n failed and even n done; returns the store."""
    code, _, err = cli("run", fn("fail_odd"), numbers_csv, "--store", store, "--key", "n",
                       "--no-progress")
    assert code == 0, err
    return store


def counts(store: str, batch: str) -> dict[str, int]:
    """Counts of a batch read through the library (the CLI has closed the store)."""
    with bk.Batch(batch, store=store) as b:
        return b.counts()


# -- run -----------------------------------------------------------------------------------


def test_run_over_csv_stores_results_and_exports(cli, numbers_csv, store, tmp_path):
    """`run` over a CSV adds the rows, runs the function, prints the report, exports done rows."""
    out_file = tmp_path / "out.parquet"
    code, out, err = cli("run", fn("double"), numbers_csv, "--store", store, "--key", "n",
                         "--workers", 2, "--chunk-size", 3, "--export", out_file,
                         "--no-progress")
    assert code == 0, err
    assert "RunReport 'numbers'" in out
    assert "10 new rows added" in out
    assert f"exported 10 done rows to {out_file}" in out
    result = pl.read_parquet(out_file).sort("n")
    assert result["double"].to_list() == [2 * n for n in range(1, 11)]
    assert result["label"].to_list() == [f"n{n}" for n in range(1, 11)]
    assert counts(store, "numbers") == {"pending": 0, "running": 0, "done": 10, "failed": 0}


def test_run_over_parquet_with_compound_key_resumes_as_noop(cli, tmp_path, store):
    """`run` over Parquet with two --key columns keys by both; running it again is a no-op."""
    source = tmp_path / "pairs.parquet"
    pl.DataFrame({"a": ["x", "x", "y", "y"], "b": [1, 2, 1, 2],
                  "n": [1, 2, 3, 4]}).write_parquet(source)
    argv = ["run", fn("double"), source, "--store", store, "--key", "a", "--key", "b",
            "--backend", "sequential", "--no-progress"]
    code, out, err = cli(*argv)
    assert code == 0, err
    with bk.Batch("pairs", store=store) as b:
        assert b.store.batch_info("pairs").key_columns == ("a", "b")
        assert sorted(b.results()["double"].to_list()) == [2, 4, 6, 8]
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "0 new rows added (4 already known)" in out
    assert "this run  0 rows" in out


def test_run_without_key_hashes_rows_and_names_batch_after_file(cli, tmp_path, store):
    """--no-key keys rows by a hash; the batch name is the input file's stem, sanitised."""
    source = tmp_path / "My Numbers-2024.csv"
    pl.DataFrame({"n": [5, 6, 7]}).write_csv(source)
    code, out, err = cli("run", fn("double"), source, "--store", store, "--no-key",
                         "--no-progress")
    assert code == 0, err
    assert "batch 'my_numbers_2024'" in out
    with bk.Batch("my_numbers_2024", store=store) as b:
        assert b.store.batch_info("my_numbers_2024").key_columns is None
        assert b.counts()["done"] == 3


@pytest.mark.parametrize(("file_name", "expected"), [
    ("companies.csv", "companies"),
    ("data/Leads 2024.parquet", "leads_2024"),
    ("2024-leads.csv", "batch_2024_leads"),
    ("__.csv", "batch"),
    ("a__b.csv", "a_b"),
    ("x" * 80 + ".csv", "x" * 63),
])
def test_default_batch_name_is_valid(file_name, expected):
    """The default batch name is a valid batch name derived from the file name."""
    name = default_batch_name(file_name)
    assert name == expected
    assert bk.Batch(name, store=":memory:").name == name


def test_run_only_failed_reruns_exactly_the_failed_rows(cli, numbers_csv, odd_failed):
    """--only failed re-runs the failed rows and leaves the done ones untouched."""
    assert counts(odd_failed, "numbers")["failed"] == 5
    code, out, err = cli("run", fn("tag_second"), numbers_csv, "--store", odd_failed,
                         "--key", "n", "--only", "failed", "--no-progress")
    assert code == 0, err
    with bk.Batch("numbers", store=odd_failed) as b:
        tags = dict(b.results().select("n", "tag").iter_rows())
    assert tags == {n: "second" if n % 2 else "first" for n in range(1, 11)}


def test_run_with_failed_rows_exits_0_and_points_at_failed(cli, numbers_csv, store):
    """A completed run with failed rows exits 0 and says how to list and re-run them."""
    code, out, err = cli("run", fn("fail_odd"), numbers_csv, "--store", store, "--key", "n",
                         "--no-progress")
    assert code == 0, err
    assert f"batchkit failed {store} numbers" in out
    assert "--only failed" in out


def test_run_halt_exits_3_and_stays_resumable(cli, numbers_csv, store):
    """--on-error halt stops at the first failure with exit code 3; running again resumes."""
    argv = ["run", fn("fail_odd"), numbers_csv, "--store", store, "--key", "n",
            "--backend", "sequential", "--chunk-size", 1, "--no-progress"]
    code, out, err = cli(*argv, "--on-error", "halt")
    assert code == 3
    assert "halted" in out and "run halted" in err
    left = counts(store, "numbers")
    assert left["pending"] > 0 and left["failed"] >= 1
    code, out, err = cli(*argv)
    assert code == 0, err
    assert counts(store, "numbers") == {"pending": 0, "running": 0, "done": 5, "failed": 5}


def test_run_max_failure_rate_halts_with_exit_3(cli, tmp_path, store):
    """--max-failure-rate halts the run (exit 3) when too many rows fail."""
    source = tmp_path / "many.csv"
    pl.DataFrame({"n": list(range(1, 41))}).write_csv(source)
    code, out, err = cli("run", fn("fail_odd"), source, "--store", store, "--key", "n",
                         "--backend", "sequential", "--chunk-size", 2,
                         "--max-failure-rate", 0.1, "--no-progress")
    assert code == 3
    assert counts(store, "many")["pending"] > 0


def test_ctrl_c_exits_130_and_keeps_finished_rows(cli, numbers_csv, store):
    """Ctrl-C during a run exits 130; rows finished before it are kept, the rest pending."""
    code, out, err = cli("run", fn("interrupt_at_3"), numbers_csv, "--store", store,
                         "--key", "n", "--backend", "sequential", "--no-progress")
    assert code == 130
    assert "run the same command again" in err.lower()
    with bk.Batch("numbers", store=store) as b:
        status = dict(b.items().select("n", "_status").iter_rows())
    assert status[1] == status[2] == "done"
    assert status[3] == "pending"
    assert set(status.values()) == {"done", "pending"}


def test_run_module_from_working_folder(cli, numbers_csv, store, tmp_path, monkeypatch):
    """MODULE is imported from the working folder, like `python -m` would."""
    (tmp_path / "cli_cwd_jobs.py").write_text(
        "def triple(row):\n    return {'triple': row['n'] * 3}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cli_cwd_jobs", raising=False)
    code, out, err = cli("run", "cli_cwd_jobs:triple", "numbers.csv", "--store", store,
                         "--key", "n", "--no-progress")
    monkeypatch.delitem(sys.modules, "cli_cwd_jobs", raising=False)
    assert code == 0, err
    with bk.Batch("numbers", store=store) as b:
        assert sorted(b.results()["triple"].to_list()) == [3 * n for n in range(1, 11)]


# -- status, failed, export ----------------------------------------------------------------


def test_status_prints_counts_per_batch(cli, odd_failed, tmp_path):
    """`status` prints one line of counts per batch; --json gives the same numbers."""
    other = tmp_path / "other.csv"
    pl.DataFrame({"n": [1, 2, 3]}).write_csv(other)
    code, _, err = cli("run", fn("double"), other, "--store", odd_failed, "--key", "n",
                       "--no-progress")
    assert code == 0, err
    code, out, err = cli("status", odd_failed)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["batch", "pending", "running", "done", "failed", "total"]
    table = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert table == {"numbers": ["0", "0", "5", "5", "10"], "other": ["0", "0", "3", "0", "3"]}
    code, out, err = cli("status", odd_failed, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["batches"]["numbers"] == {**counts(odd_failed, "numbers"), "total": 10}
    assert data["batches"]["other"]["done"] == 3


def test_status_of_store_without_batches(cli, tmp_path):
    """`status` of a store with no batches says so."""
    path = str(tmp_path / "empty.duckdb")
    bk.Batch("nothing", store=path).close()
    code, out, err = cli("status", path)
    assert code == 0, err
    assert "no batches" in out
    code, out, _ = cli("status", path, "--json")
    assert json.loads(out)["batches"] == {}


def test_failed_lists_the_dead_letter_rows(cli, odd_failed):
    """`failed` lists each failed row's key, error type, attempts and message."""
    code, out, err = cli("failed", odd_failed, "numbers")
    assert code == 0, err
    assert "5 failed rows" in out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert [r[0] for r in rows] == ["1", "3", "5", "7", "9"]
    assert all(r[1:4] == ["Permanent", "1", "no"] for r in rows)
    assert "odd number 7" in out


def test_failed_limit_and_json(cli, odd_failed):
    """`failed --limit` shortens the list and says so; --json carries inputs and totals."""
    code, out, err = cli("failed", odd_failed, "numbers", "--limit", 2)
    assert code == 0, err
    assert "showing the first 2" in out
    assert len(out.splitlines()) == 3 + 2
    code, out, err = cli("failed", odd_failed, "numbers", "--json", "--limit", 0)
    assert code == 0, err
    data = json.loads(out)
    assert data["total"] == 5
    assert [r["key"] for r in data["rows"]] == ["1", "3", "5", "7", "9"]
    assert {r["word"] for r in data["rows"]} == {"w1", "w3", "w5", "w7", "w9"}
    assert all(r["retryable"] is False and "Permanent" in r["error_trace"]
               for r in data["rows"])


def test_failed_of_batch_without_failures(cli, numbers_csv, store):
    """`failed` of a batch where every row is done says there are none."""
    assert cli("run", fn("double"), numbers_csv, "--store", store, "--key", "n",
               "--no-progress")[0] == 0
    code, out, err = cli("failed", store, "numbers")
    assert code == 0, err
    assert "no failed rows" in out


@pytest.mark.parametrize(("rows", "expected"), [("done", 5), ("failed", 5), ("all", 10)])
def test_export_writes_the_chosen_rows(cli, odd_failed, tmp_path, rows, expected):
    """`export --rows` writes the chosen rows; --status-columns adds the status columns."""
    out_file = tmp_path / f"{rows}.parquet"
    code, out, err = cli("export", odd_failed, "numbers", out_file, "--rows", rows)
    assert code == 0, err
    assert f"exported {expected} {rows} rows" in out
    frame = pl.read_parquet(out_file)
    assert frame.height == expected
    assert "_status" not in frame.columns
    code, _, err = cli("export", odd_failed, "numbers", out_file, "--rows", rows,
                       "--status-columns")
    assert code == 0, err
    statuses = set(pl.read_parquet(out_file)["_status"].to_list())
    assert statuses == ({"done", "failed"} if rows == "all" else {rows})


# -- demo ----------------------------------------------------------------------------------


def test_demo_enrich_is_deterministic():
    """`enrich` gives the same fields for the same row and a score within 0-100."""
    from batchkit.demo import enrich

    row = {"company": "Cedar Point Labs", "domain": "cedarpointlabs.com", "country": "JP",
           "industry": "Software", "employees": 5000, "founded": 2001}
    first, second = enrich(row), enrich(row)
    assert first == second
    assert first["size_band"] == "enterprise" and first["region"] == "APAC"
    assert 0 <= first["score"] <= 100
    assert first["email_guess"].endswith("@cedarpointlabs.com")


# -- errors --------------------------------------------------------------------------------


@pytest.fixture
def bad_json(tmp_path) -> Path:
    """An existing input file with an unsupported extension."""
    path = tmp_path / "rows.json"
    path.write_text('[{"n": 1}]')
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("no_colon", "expected MODULE:FUNCTION"),
    ("no_module", "cannot import module 'no_such_module_for_cli_tests'"),
    ("no_function", "has no function 'nope'; its functions are ['double'"),
    ("no_file", "module file"),
    ("missing_input", "input file"),
    ("bad_extension", "is not a Parquet or CSV file (extension '.json')"),
    ("bad_workers", "workers must be a positive whole number, got 0"),
    ("bad_key", "key column(s) ['id'] not in the frame"),
    ("bad_batch", "batch name must start with a letter"),
])
def test_run_errors_exit_2_with_a_clear_message(cli, numbers_csv, store, bad_json, case,
                                                message):
    """Bad functions, inputs and options print `batchkit: error: ...` and exit 2, no traceback."""
    function, source, extra = fn("double"), str(numbers_csv), ["--key", "n"]
    if case == "no_colon":
        function = "clifns"
    elif case == "no_module":
        function = "no_such_module_for_cli_tests:f"
    elif case == "no_function":
        function = fn("nope")
    elif case == "no_file":
        function = str(Path(store).with_name("missing.py")) + ":f"
    elif case == "missing_input":
        source = str(Path(store).with_name("missing.csv"))
    elif case == "bad_extension":
        source = str(bad_json)
    elif case == "bad_workers":
        extra += ["--workers", "0"]
    elif case == "bad_key":
        extra = ["--key", "id"]
    elif case == "bad_batch":
        extra += ["--batch", "9lives"]
    code, out, err = cli("run", function, source, "--store", store, *extra, "--no-progress")
    assert code == 2
    assert err.startswith("batchkit: error: ")
    assert message in err
    assert "Traceback" not in err


def test_module_that_fails_to_import_names_where(cli, numbers_csv, store, tmp_path):
    """A module raising while imported gives exit 2 with the error and the file:line."""
    broken = tmp_path / "broken_job.py"
    broken.write_text("x = 1\nraise RuntimeError('boom at import')\n")
    code, _, err = cli("run", f"{broken}:f", numbers_csv, "--store", store, "--key", "n")
    assert code == 2
    assert "broken_job.py:2: RuntimeError: boom at import" in err


def test_reading_commands_error_on_missing_store_or_batch(cli, odd_failed, tmp_path):
    """status/failed/export of a missing store or batch exit 2 naming it, creating nothing."""
    missing = tmp_path / "missing.duckdb"
    for argv in (["status", missing], ["failed", missing, "numbers"],
                 ["export", missing, "numbers", tmp_path / "x.parquet"]):
        code, _, err = cli(*argv)
        assert code == 2
        assert err.startswith(f"batchkit: error: no store at '{missing}'")
    assert not missing.exists()
    code, _, err = cli("failed", odd_failed, "nope")
    assert code == 2
    assert "has no batch 'nope'; its batches are ['numbers']" in err
    code, _, err = cli("export", odd_failed, "numbers", tmp_path / "no" / "x.parquet")
    assert code == 2
    assert "does not exist" in err


def test_store_in_use_by_another_process_exits_2(cli, numbers_csv, store):
    """A store held by another process gives exit 2 naming that process, never a hang."""
    with subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", store],
        stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            for argv in (["status", store],
                         ["run", fn("double"), numbers_csv, "--store", store, "--key", "n"]):
                code, _, err = cli(*argv)
                assert code == 2
                assert f"store is in use by PID {holder.pid}" in err
                assert "Traceback" not in err
        finally:
            holder.kill()


# -- help and entry points -----------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_every_command_has_help(cli, command):
    """`--help` works for the program and every subcommand and describes it."""
    code, out, _ = cli(*([command] if command else []), "--help")
    assert code == 0
    assert out.startswith(f"usage: batchkit{' ' + command if command else ''}")
    assert len(out.splitlines()) > 5
    if command in (None, "run"):
        assert "exit codes:" in out and "130" in out


def test_usage_errors_exit_2(cli):
    """No command, an unknown command or a bad option value exit 2 with argparse's usage."""
    assert cli()[0] == 2
    assert cli("frobnicate")[0] == 2
    code, _, err = cli("run", "m:f", "x.csv", "--key", "n", "--backend", "gpu")
    assert code == 2
    assert "invalid choice: 'gpu'" in err
    code, _, err = cli("run", "m:f", "x.csv")
    assert code == 2
    assert "--key" in err


def test_version(cli):
    """`--version` prints the package version."""
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"batchkit {bk.__version__}"


def test_python_dash_m_runs_the_processes_backend(numbers_csv, tmp_path):
    """`python -m batchkit run` works, sending a script's function to worker processes."""
    store = tmp_path / "pm.duckdb"
    result = subprocess.run(
        [sys.executable, "-m", "batchkit", "run", fn("double"), str(numbers_csv),
         "--store", str(store), "--key", "n", "--backend", "processes", "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "outcome   completed" in result.stdout
    with bk.Batch("numbers", store=str(store)) as b:
        assert sorted(b.results()["double"].to_list()) == [2 * n for n in range(1, 11)]


def test_console_script_imports_from_working_folder(numbers_csv, tmp_path):
    """The `batchkit` script runs a module from the working folder; errors exit 2."""
    assert BATCHKIT_SCRIPT.exists(), f"no console script at {BATCHKIT_SCRIPT}"
    (tmp_path / "cwd_jobs.py").write_text(
        "def square(row):\n    return {'square': row['n'] ** 2}\n")
    result = subprocess.run(
        [str(BATCHKIT_SCRIPT), "run", "cwd_jobs:square", "numbers.csv", "--store",
         "cs.duckdb", "--key", "n"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    status = subprocess.run([str(BATCHKIT_SCRIPT), "status", "cs.duckdb", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["batches"]["numbers"]["done"] == 10
    bad = subprocess.run([str(BATCHKIT_SCRIPT), "status", "nope.duckdb"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith("batchkit: error: no store at 'nope.duckdb'")
    assert "Traceback" not in bad.stderr
