"""sdrun-report on folders crafted as a collaborator's tarball or a paper's artifact can be
(issue 26, items 2, 7, 10 and 11): it writes only into a report folder it made, deletes only
what it wrote, reads only inside the folders it is given, ends every bad file in a listed reason
within seconds, and no folder text becomes Markdown or a spreadsheet formula."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import pytest
import yaml
from report_builder import write_run

from sdrun.report import build_report, main
from sdrun.report.markdown import TABLE_HEADER

MANIFEST = ".sdrun-report.json"  # sdrun.report.output.MANIFEST: the report folder's record
BOUND_S = 60  # far above what any case takes; a hang (a FIFO read) never ends


def victims(tmp_path: Path) -> Path:
    """Files outside the folders given to the report, which crafted folders point at."""
    home = tmp_path / "home"
    (home / "pictures").mkdir(parents=True)
    (home / ".bashrc").write_text("# the user's shell\n")
    (home / "pictures" / "cat.png").write_bytes(b"\x89PNG not really")
    (home / "secret.yaml").write_text("objective: val/top1\n")
    return home


def digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}  # fmt: skip


def within_bound(argv: list[str]) -> int:
    """main(argv) in a thread: its exit code, or a failure when it has not ended in BOUND_S."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"sdrun-report {argv} still running after {BOUND_S} s"
    return result[0]


def received(tmp_path: Path) -> Path:
    """Two SD and two step runs, each with two epochs of metrics (a curve to draw)."""
    folder = tmp_path / "received"
    lines = "".join(json.dumps({"epoch": e, "student/top1": 60.0 + e}) + "\n" for e in (1, 2))
    for seed in (0, 1):
        for method, top1 in (("sd", 70.0), ("step", 69.0)):
            run = write_run(folder / f"{method}{seed}", method, seed, top1 + seed)
            (run / "metrics.jsonl").write_text(lines)
    return folder


# 2. links in the report folder a received folder holds: refused, nothing written through them
def test_a_report_folder_with_links_is_refused_and_nothing_is_written(tmp_path: Path, capsys):
    home, folder = victims(tmp_path), received(tmp_path)
    report = folder / "report"
    report.mkdir()
    for name in ("RESULTS.md", "results.csv", "gains.csv", "methods_cifar100.png"):
        (report / name).symlink_to(home / ".bashrc")
    (report / "runs").symlink_to(home / "pictures", target_is_directory=True)
    before, inside = digest(home), digest(folder)
    assert within_bound([str(folder), "--run-plots"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "symbolic link" in line and str(report) in line
    assert digest(home) == before and digest(folder) == inside
    assert sorted(os.listdir(report)) == sorted(["RESULTS.md", "results.csv", "gains.csv",
                                                 "methods_cifar100.png", "runs"])  # fmt: skip


# 2. a report folder sdrun-report did not make (a forged manifest too) is never written
def test_only_a_report_folder_it_made_is_written_and_only_its_own_files_are_removed(
    tmp_path: Path, capsys
):
    folder = received(tmp_path)
    forged = folder / "report"
    forged.mkdir()
    (forged / "RESULTS.md").write_text("the sender's\n")
    record = {"made_by": "sdrun-report", "folder": str(forged), "files": ["RESULTS.md"]}
    (forged / MANIFEST).write_text(json.dumps({**record, "seal": "0" * 64}))
    inside = digest(folder)
    assert main([str(folder)]) == 2
    line = capsys.readouterr().err.strip()
    assert "did not write there" in line and "--out" in line and digest(folder) == inside
    out, runs = tmp_path / "out", tmp_path / "mine"
    write_run(runs / "a", "sd", 0, 70.0)
    write_run(runs / "b", "sd", 0, 70.0, config={"dataset.name": "cifar10"})
    assert main([str(runs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "methods_cifar10.png",
        "methods_cifar100.png",
    ]
    (out / "methods_mine.png").write_bytes(b"the user's own file")
    (runs / "b" / "summary.json").unlink()  # no complete run of cifar10 left: its plot goes
    assert main([str(runs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["methods_cifar100.png", "methods_mine.png"]
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert "methods_mine.png" not in listed and "RESULTS.md" in listed
    elsewhere = tmp_path / "moved"
    (out).rename(elsewhere)  # a manifest holds for its own folder only
    assert main([str(runs), "--out", str(elsewhere)]) == 2


# 2. file names come from the report, never from a config value
def test_a_dataset_name_cannot_place_a_file(tmp_path: Path):
    home = victims(tmp_path)
    folder = tmp_path / "received"
    name = f"x/../../{home.relative_to(tmp_path)}/avatar"
    for seed in (0, 1):
        write_run(folder / f"sd{seed}", "sd", seed, 70.0, config={"dataset.name": name})
    before = digest(home)
    assert within_bound([str(folder)]) == 0
    assert digest(home) == before and not list(tmp_path.rglob("avatar*"))
    (png,) = (folder / "report").glob("methods_*.png")
    assert (
        png.name.startswith("methods_x-..-..-home-avatar_") and png.read_bytes()[:4] == b"\x89PNG"
    )


# 2. nothing outside the given folders is read: no link followed, no sweep.yaml above them,
# no teacher or backbone elsewhere
def test_nothing_outside_the_given_folders_is_read(tmp_path: Path):
    home = victims(tmp_path)
    (tmp_path / "sweep.yaml").write_text("objective: val/top1\n")  # above the given folder
    folder = received(tmp_path)
    (folder / "linked").symlink_to(home, target_is_directory=True)
    write_run(home / "teacher", "cosine", 0, 70.0)
    write_run(folder / "student", "kd", 0, 71.0,
              config={"distill.teacher_checkpoint": str(home / "teacher")})  # fmt: skip
    report = build_report([folder], tmp_path / "out")
    assert [row.n for row in report.rows] == [2, 2] and not report.searches
    (student,) = report.incomplete
    assert "outside the folders given to sdrun-report" in student.reason
    assert any("linked is a symbolic link" in note for note in report.notes)
    with_teacher = build_report([folder, home / "teacher"], tmp_path / "out")
    assert "born-again-g2" in {row.method for row in with_teacher.rows}


# 7. reads with bounds: every bad file is a listed reason, within seconds
def bomb(levels: int = 6) -> str:
    """A YAML alias bomb: each level maps 9 keys to the level below (9**levels leaves)."""
    lines = ["l0: &l0 {a: 1, b: 1}"]
    for i in range(1, levels + 1):
        refs = ", ".join(f"k{j}: *l{i - 1}" for j in range(9))
        lines.append(f"l{i}: &l{i} {{{refs}}}")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias_bomb": (".hydra/config.yaml", lambda p: p.write_text(bomb())),
    "fifo_summary": ("summary.json", lambda p: (p.unlink(), os.mkfifo(p))),
    "fifo_metrics": ("metrics.jsonl", lambda p: os.mkfifo(p)),
    "zero_summary": ("summary.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero"))),
    "deep_summary": ("summary.json", lambda p: p.write_text("[" * 100_000 + "]" * 100_000)),
    "huge_summary": ("summary.json", lambda p: os.truncate(p, 300 << 20)),  # sparse: no disk
    "linked_config": (".hydra/config.yaml", lambda p: (p.unlink(), p.symlink_to("/etc/hosts"))),
    "linked_hydra": (".hydra", lambda p: (_rmtree(p), p.symlink_to("/etc"))),
}
REASONS = {
    "alias_bomb": "anchor or alias",
    "fifo_summary": "is a FIFO",
    "fifo_metrics": "is a FIFO",
    "zero_summary": "is a symbolic link",
    "deep_summary": "nested too deeply",
    "huge_summary": "larger than 4 MiB",
    "linked_config": "is a symbolic link",
    "linked_hydra": ".hydra is a symbolic link",
}


def _rmtree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_every_hostile_file_is_a_listed_reason_within_seconds(tmp_path: Path, capsys):
    folder = received(tmp_path)
    for name, (file, make) in HOSTILE.items():
        run = write_run(folder / name, "sd", 7, 70.0)
        if name == "fifo_metrics":
            (run / "summary.json").unlink()  # an incomplete run: its epochs are counted
        make(run / file)
    assert within_bound([str(folder), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    for name, why in REASONS.items():
        line = next((x for x in err.splitlines() if f"{folder / name}:" in x), "")
        assert why in line, (name, line)
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["n"] for r in rows] == ["2", "2"]  # the hostile runs are in no row


# 10. a tampered sweep.yaml: its bad fields are ignored, with a note
def test_a_tampered_sweep_record_is_checked_field_by_field(tmp_path: Path, capsys):
    search = {"objective": "val/top1", "space": 5, "swept": 5}
    for kind, record in (("sweep", {"swept": 5}), ("search", search)):
        root = tmp_path / "runs" / kind
        root.mkdir(parents=True)
        (root / "multirun.yaml").write_text("hydra: {}\n")
        (root / "sweep.yaml").write_text(yaml.safe_dump(record))
        for t in (1.0, 4.0):
            write_run(root / f"T{t}", "sd", 0, 70.0 + t, summary={"val/top1": 60.0},
                      config={"distill.temperature": t, "schedule.cycles": 2})  # fmt: skip
    assert within_bound([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("swept is 5, not a list of keys") == 2
    assert "space is 5, not a mapping of keys to sweep expressions" in err
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "## Sweep" in text and "## Search" in text  # a search stays a search


# 11. no folder text becomes Markdown; no CSV cell is a formula; numbers stay numbers
def test_folder_text_is_escaped_in_markdown_and_csv(tmp_path: Path):
    model = "resnet56\n# Injected heading\n![x](https://evil.example/p.png)"
    device = "<img src=https://evil.example/t.png> [link](https://evil.example) `x` | y"
    for seed in (0, 1):
        config = {"model.name": model, "dataset.name": '=HYPERLINK("https://evil")'}
        write_run(tmp_path / "runs" / f"sd{seed}", "sd", seed, 70.0 + seed, config=config,
                  summary={"device": device, "device_type": device})  # fmt: skip
        write_run(tmp_path / "runs" / f"step{seed}", "step", seed, 72.0 + seed, config=config,
                  summary={"device": device, "device_type": device})  # fmt: skip
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "RESULTS.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert not any("Injected" in h for h in headings)
    # every `<`, `[` and `]` of folder text is escaped: shown, never an image, HTML or a link
    for made in (r"!\[x\]\(", r"<img", r"\[link\]\("):
        assert re.search(r"(?<!\\)" + made, text) is None, made
    assert "!\\[x\\](https://evil.example/p.png)" in text and "\\<img src=" in text
    rows = [line for line in text.splitlines() if line.startswith("| resnet56")]
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}  # no extra cell made
    assert len(rows) == 2 and cells == {len(TABLE_HEADER) + 1}
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["dataset"] == '\'=HYPERLINK("https://evil")' for r in rows)
    with open(out / "gains.csv", newline="") as f:
        (gain,) = list(csv.DictReader(f))
    assert float(gain["gain"]) == pytest.approx(-2.0)  # a negative number, not '-2.0
