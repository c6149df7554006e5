"""`orrery report` over two real tiny runs (two seeds): its pictures, its page, and the page in headless Chromium."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PRESET = "dmc-cartpole-swingup+debug"
SEEDS = (1, 2)


def orrery(*args, timeout=400):
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), RAY_DEDUP_LOGS="0")
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two seeds of a tiny run: 3 episodes of 200 env steps, an evaluation at 400 and the final one at 600."""
    root = tmp_path_factory.mktemp("runs")
    for seed in SEEDS:
        result = orrery("train", "--preset", PRESET, "--actors", "1", "--budget-steps", "600", "--seed", str(seed),
                        "--set", "train.eval_every_env_steps=400", "--run-dir", str(root / f"seed{seed}"))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return [root / f"seed{seed}" for seed in SEEDS]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = orrery("report", *map(str, runs), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in result.stdout
    assert f"results against PlaNet (Markdown): {out / 'results.md'}" in result.stdout
    assert f"where the time went (Markdown): {out / 'time.md'}" in result.stdout
    return out


def image_sources(page: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page.read_text())


def assert_picture(path: Path) -> None:
    """A whole image with something drawn on it (not one flat colour)."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert np.asarray(image.convert("RGB")).std() > 0, f"{path} is blank"


def has_losses(run_dir: Path) -> bool:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return any("learner/total_loss" in json.loads(line) for line in lines)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed; run scripts/system-deps.sh (as root or with sudo)")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_draws_every_figure_of_two_seeds(runs, report):
    page = report / "report.html"
    sources = image_sources(page)
    assert all(not Path(src).is_absolute() and (report / src).is_file() for src in sources), sources
    expected = {"report/curves-dmc-cartpole-swingup.png", "report/throughput.png", "report/open-loop-seed1.png",
                "report/open-loop-seed1.gif", "report/open-loop-seed2.png", "report/open-loop-seed2.gif"}
    assert expected <= set(sources)
    # The learner reports its losses when the driver asks, so a run this short may have none yet.
    if any(map(has_losses, runs)):
        assert "report/losses.png" in sources
    else:
        assert "report/losses.png" not in sources and "no learner losses" in page.read_text()
    for src in sources:
        assert_picture(report / src)
    with Image.open(report / "report/open-loop-seed1.gif") as gif:
        assert gif.n_frames > 1
    rows = re.findall(r"<tr><td>.*?</tr>", page.read_text())
    assert len(rows) == 2 and all(f"<td>{seed}</td>" in row for seed, row in zip(SEEDS, rows))
    assert all("dmc:cartpole-swingup" in row and "±" in row and "finished" in row for row in rows)
    assert "star: PlaNet's return after 100 episodes" in page.read_text()  # the reference the curves are read against
    results = (report / "results.md").read_text().splitlines()
    assert len(results) == 3 and results[2].startswith("| dmc:cartpole-swingup | 297 | ") and results[2].endswith(" | 2 |")
    # Where the time went: the learner, the actor and the evaluations of each seed, shares adding up to 100 %.
    profile = (report / "time.md").read_text().splitlines()[2:]
    processes = [re.sub(r" \(\d+\)$", "", row.split(" | ")[2]) for row in profile]
    assert processes == ["learner", "actor 0", "evaluations"] * 2, profile
    for row in profile[:2] + profile[3:5]:
        shares = [float(share) for share in re.findall(r" (\d+) %", row)]
        assert len(shares) in (5, 7) and 96 <= sum(shares) <= 104, row  # each share rounded to a whole percent
    assert all("planning" in row and "env steps" in row for row in (profile[1], profile[4]))
    assert page.read_text().count('<tr class="time">') == 6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_page_renders_in_chromium_with_every_image_loaded(report, tmp_path):
    page = (report / "report.html").as_uri()
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<body[^>]*data-images="loaded"', dom.stdout), re.findall(r"<body[^>]*>", dom.stdout)
    shot = tmp_path / "page.png"
    rendered = chromium(f"--screenshot={shot}", "--window-size=1280,2000", page, profile=tmp_path / "profile")
    assert rendered.returncode == 0 and shot.is_file(), rendered.stderr[-2000:]
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 24)) > 50, "the screenshot is (nearly) blank"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_stopped_before_its_evaluation_gets_notes_and_a_report_in_its_folder(runs, tmp_path):
    run_dir = tmp_path / "stopped"
    shutil.copytree(runs[0], run_dir, ignore=shutil.ignore_patterns("redis", "checkpoints"))
    shutil.rmtree(run_dir / "eval")
    (run_dir / "summary.json").unlink()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(line for line in lines if "eval/" not in line) + '\n{"time": 1')
    result = orrery("report", str(run_dir), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (run_dir / "report.html").read_text()
    assert "no evaluation" in text and "no eval/open_loop.png" in text and "no summary.json" in text
    assert "skipped 1 metrics.jsonl line" in text
    sources = set(image_sources(run_dir / "report.html"))
    assert {"report/curves-dmc-cartpole-swingup.png", "report/throughput.png"} <= sources


@pytest.mark.parametrize("case", ["missing", "not a run", "several without --out"])
def test_bad_input_exits_2_with_one_line(case, tmp_path):
    args = {"missing": [str(tmp_path / "nowhere")], "not a run": [str(tmp_path)],
            "several without --out": [str(tmp_path / "a"), str(tmp_path / "b")]}[case]
    result = orrery("report", *args, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("orrery report: error: ")
    expected = {"missing": "no such directory", "not a run": "no metrics.jsonl", "several without --out": "--out"}
    assert expected[case] in result.stderr
