"""What keeps sdrun-report fast on many runs (issue 28, item 12): it imports nothing heavy (no
torch: the methods' report-facing facts are a table, checked here against the registry) and
reads only what it shows (a complete run's metrics.jsonl only for its curves). The timing
itself is scripts/bench_report.py's, in docs/PERFORMANCE.md."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from report_builder import write_run

from sdrun.report import build_report, write
from sdrun.report.method_catalog import CATALOG, FILE, SNAPSHOT
from sdrun.trust import files

HEAVY = ("torch", "torchvision", "timm", "wandb")

PROBE = """
import json, sys
from pathlib import Path
from sdrun.report import build_report
from sdrun.report.markdown import results_md
report = build_report([Path(sys.argv[1])], Path(sys.argv[1]) / "report")
results_md(report)
print(json.dumps({"rows": len(report.rows), "heavy": [m for m in %r if m in sys.modules]}))
"""


def test_the_report_imports_nothing_heavy(tmp_path: Path):
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0)
        write_run(tmp_path / f"kd{seed}", "kd", seed, 71.0,
                  config={"distill.teacher_checkpoint": str(tmp_path / f"sd{seed}")})  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), str(tmp_path)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result == {"rows": 2, "heavy": []}


def test_a_complete_runs_metrics_are_read_only_for_its_curves(tmp_path: Path, monkeypatch):
    for seed in (0, 1):
        run = write_run(tmp_path / "runs" / f"sd{seed}", "sd", seed, 70.0)
        # damaged after the summary was written: the summary's numbers still stand
        (run / "metrics.jsonl").write_text('{"epoch": 1, "student/top1": 60.0}\n5\n')
    read: list[Path] = []
    real = files.read_json_lines
    monkeypatch.setattr(files, "read_json_lines", lambda path, *a: read.append(path) or real(path))
    report = build_report([tmp_path / "runs"], tmp_path / "out")
    assert [row.n for row in report.rows] == [2] and read == []
    write(report)
    assert read == []  # RESULTS.md links each run's own curves.png, if it has one
    plotted = build_report([tmp_path / "runs"], tmp_path / "plots", run_plots=True)
    write(plotted)
    assert sorted(p.parent.name for p in read) == ["sd0", "sd1"]  # once each, for its curves
    assert len(list((tmp_path / "plots" / "runs").glob("*.png"))) == 2


def test_the_method_table_is_the_registrys():
    from sdrun.methods import FILE as REGISTRY_FILE
    from sdrun.methods import SNAPSHOT as REGISTRY_SNAPSHOT
    from sdrun.methods import find_method, method_names, settings_keys

    assert (FILE, SNAPSHOT) == (REGISTRY_FILE, REGISTRY_SNAPSHOT)
    assert set(CATALOG) == set(method_names())
    for name in method_names():
        method, info = find_method(name), CATALOG[name]
        assert info.teacher == method.teacher, name
        assert frozenset(info.reads) == settings_keys(name), name  # the method's schema
        for schedule in ("sd", "cosine", "step", "other"):
            assert info.label(schedule) == method.label(schedule), (name, schedule)
    from sdrun.methods import default_settings
    from sdrun.report.primary import SD_SETTINGS

    assert dataclasses.asdict(default_settings("sd")) == SD_SETTINGS


def test_file_names_the_report_shares_with_the_runner():
    from sdrun.report.run_files import CURVES
    from sdrun.report.runs import LAST
    from sdrun.runfolder.checkpoint import LAST as CHECKPOINT_LAST
    from sdrun.runfolder.run_plots import CURVES as RUN_CURVES

    assert (CURVES, LAST) == (RUN_CURVES, CHECKPOINT_LAST)
