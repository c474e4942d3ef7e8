"""`batchkit plan`: the architecture report from earlier runs (STORE BATCH) or the demo."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import polars as pl
import pytest

import batchkit as bk
from batchkit._cli import main

SECTIONS = ["## 1. Workflow analysis", "## 2. Chunking and parallelism",
            "## 3. State and resume", "## 4. Reliability", "## 5. Observability",
            "## 6. Projections and scaling"]

JOBS = textwrap.dedent('''
    """A two-step pipeline for the `batchkit plan` tests."""
    import batchkit as bk


    @bk.step("search", rate_limit="3000/min", cost=0.01)
    def search(row):
        return {"hit": row["n"] + 1}


    @bk.step("score", cost=0.02)
    def score(row):
        return {"score": row["hit"] * 2}


    pipe = bk.pipeline(search, score)
''')


@pytest.fixture
def cli(capsys):
    """Run ``main(argv)`` in-process; return (exit code, stdout, stderr)."""

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """The CLI puts the folder of a --function file on sys.path; undo it after."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder shared by the module's tests (the planning commands only read the store)."""
    return tmp_path_factory.mktemp("plan")


@pytest.fixture(scope="module")
def jobs(folder) -> str:
    """A jobs.py with the pipeline; returns its MODULE:FUNCTION spec by path."""
    path = folder / "jobs.py"
    path.write_text(JOBS)
    return f"{path}:pipe"


@pytest.fixture(scope="module")
def ran(folder, jobs) -> str:
    """A store whose batch ``leads`` ran 10 of its 40 items through the pipeline."""
    from batchkit._cli import load_function

    saved = list(sys.path)
    store = str(folder / "leads.duckdb")
    try:
        with bk.Batch("leads", store=store) as batch:
            batch.add(pl.DataFrame({"n": range(40)}), key="n")
            batch.run(load_function(jobs), only=pl.col("n") < 10, workers=2, progress=False)
    finally:
        sys.path[:] = saved
    return store


def sections(text: str) -> list[str]:
    """The report's second-level headings, in order."""
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_plan_has_help_that_describes_both_forms(cli):
    """`plan --help` exits 0 and describes STORE BATCH, --demo, and the exit codes."""
    code, out, _ = cli("plan", "--help")
    assert code == 0 and out.startswith("usage: batchkit plan")
    for text in ("STORE", "BATCH", "--demo", "--function", "--rate-limit", "--deadline",
                 "--sample", "exit codes:"):
        assert text in out, text


def test_plan_from_earlier_runs_prints_the_report(cli, ran, jobs):
    """STORE BATCH --function: the report of a plan calibrated from the runs, nothing run."""
    code, out, err = cli("plan", ran, "leads", "--function", jobs, "--volume", 5000,
                         "--deadline", "8h", "--budget", 100, "--workers", 3)
    assert code == 0, err
    assert out.startswith("# Batch plan: leads\n")
    assert sections(out) == SECTIONS
    assert "measured from the attempt log of 1 earlier run (10 items)" in out
    assert "5,000 items through 2 steps (search, score)" in out
    assert "**With 3 workers**" in out
    # 5,000 searches at 3,000/min: 100 s whatever the workers
    assert "search: 3,000 calls/min ÷ 1 calls/item = 3,000 items/min" in out
    assert "$150.00" in out  # $0.03 an item, measured
    with bk.Batch("leads", store=ran) as batch:
        assert batch.counts()["done"] == 10  # nothing ran


def test_plan_without_the_function_takes_rate_limits_per_step(cli, ran):
    """Without --function the logged steps are planned; --rate-limit adds their limits."""
    code, out, err = cli("plan", ran, "leads", "--rate-limit", "search=10/min",
                         "--volumes", 40, 400)
    assert code == 0, err
    assert "search: 10 calls/min ÷ 1 calls/item = 10 items/min" in out
    assert "| 400 |" in out and "| 40 |" in out
    code, out, err = cli("plan", ran, "leads")
    assert code == 0, err
    assert "| search | 1 | " in out and "10 calls/min" not in out  # no limit known


@pytest.mark.parametrize(("argv", "message"), [
    (["plan"], "needs STORE BATCH"),
    (["plan", "{store}"], "needs STORE BATCH"),
    (["plan", "nowhere.duckdb", "leads"], "no store at"),
    (["plan", "{store}", "other"], "has no batch 'other'"),
    (["plan", "{store}", "leads", "--rate-limit", "search"], "STEP=RATE"),
    (["plan", "{store}", "leads", "--rate-limit", "search=lots"], "lots"),
    (["plan", "{store}", "leads", "--volume", "0"], "volume"),
    (["plan", "{store}", "leads", "--deadline", "soon"], "'soon'"),
    (["plan", "{store}", "leads", "--budget", "-5"], "budget"),
    (["plan", "{store}", "leads", "--sample", "5"], "--sample is for --demo"),
    (["plan", "{store}", "leads", "--function", "nope:fn"], "nope"),
    (["plan", "--demo", "{store}", "leads"], "not both"),
    (["plan", "--demo", "--rate-limit", "search=1/s"], "for STORE BATCH"),
    (["plan", "--demo", "--speed", "0", "--limit", "5"], "speed"),
])
def test_plan_errors_exit_2_with_a_message(cli, ran, argv, message):
    """Bad arguments, stores or batches print `batchkit: error: ...` and exit 2."""
    code, out, err = cli(*[a.format(store=ran) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("batchkit: error: ") and message in err, err
    assert "Traceback" not in err


def test_plan_of_a_batch_that_never_ran_says_what_to_do(cli, tmp_path):
    """A batch without an attempt log: exit 2, pointing at a sample or a run."""
    store = str(tmp_path / "fresh.duckdb")
    with bk.Batch("fresh", store=store) as batch:
        batch.add(pl.DataFrame({"n": range(3)}), key="n")
    code, _, err = cli("plan", store, "fresh")
    assert code == 2 and "no attempt log yet" in err and "--demo" in err


def test_plan_demo_measures_a_sample_and_plans_the_rest(cli, tmp_path):
    """--demo runs a sample against the simulated services and prints its plan; --store
    keeps the sample's results for `batchkit demo` to go on from."""
    store = tmp_path / "demo.duckdb"
    code, out, err = cli("plan", "--demo", "--limit", 30, "--sample", 10, "--speed", 300,
                         "--workers", 2, "--store", store)
    assert code == 0, err
    assert out.startswith("lead-enrichment demo at speed 300: times below are demo seconds")
    assert "# Batch plan: lead_enrichment" in out and sections(out) == SECTIONS
    assert "**Measured**: measured from a sample of 10 items run with 2 workers" in out
    assert "30 items through 5 steps (search, extract, contacts, verify_emails, " \
           "compile_record)" in out
    with bk.Batch("lead_enrichment", store=str(store)) as batch:
        counts = batch.counts()
    assert counts["pending"] == 20 and counts["done"] + counts["failed"] == 10


def test_plan_runs_as_a_command(ran, jobs):
    """`python -m batchkit plan STORE BATCH` prints the report (a real process)."""
    out = subprocess.run([sys.executable, "-m", "batchkit", "plan", ran, "leads",
                          "--function", jobs, "--volume", "100"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# Batch plan: leads") and "## 6. Projections" in out.stdout
