"""Your own model, end to end: docs/your-own-model.md's walk-throughs run as written (on small
slices of real data: the registry's photographs, the SpamAssassin mail corpus), and what bad
data gets (one line, exit 1).

The walk-through lines are read from the doc itself. The only changes are the slice (fewer
photos and mails, fewer epochs, a smaller input): SLICE below lists them. A server line
(`edgestack serve ... &`) is started with edgestack.serverproc and stopped afterwards; a curl
line is sent with httpx, same form fields or JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgestack.serverproc import running_server
from training.data.samples import main as samples_main

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "your-own-model.md"
SLICE = {  # walk-through text -> what the test runs instead (small and fast)
    "--per-class 40": "--per-class 10",
    "--data scenes-photos --flip": "--data scenes-photos --flip --shape 3,32,32 --epochs 3",
    "--limit 1200": "--limit 240",
    "--data mail.csv --arch tiny": "--data mail.csv --arch tiny --epochs 2",
}

pytestmark = pytest.mark.slow


def walkthrough(name: str) -> list[str]:
    """The command lines of the doc's `<!-- walkthrough: NAME` block, comments dropped."""
    text = DOC.read_text()
    block = re.search(rf"<!-- walkthrough: {name}\b.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, f"docs/your-own-model.md has no walkthrough {name!r}"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def sliced(line: str) -> str:
    for old, new in SLICE.items():
        line = line.replace(old, new)
    return line


def photos_installed() -> bool:
    from edgestack.errors import DataMissing
    from training.data import samples

    try:
        samples.photo_files()
        return (samples.NPM / "datasets-spam-assassin" / "data").is_dir()
    except DataMissing:
        return False


needs_samples = pytest.mark.skipif(not photos_installed(), reason="sample data missing: run `make samples`")


class Session:
    """Runs walk-through lines in a folder, with its own spec folder and artifacts: `edgestack ...`
    and `python -m training.data.samples ...` in this process (their `main`, the same code as the
    console script, without paying an interpreter start each), the server as a real process."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder = folder
        # PYTHONPATH: this checkout's code, whatever the venv's editable install points at
        self.env = {"EDGESTACK_MODELS_DIR": str(folder / "specs"), "EDGESTACK_ARTIFACTS": str(folder / "artifacts"),
                    "EDGESTACK_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                          os.environ.get("PYTHONPATH")]))}
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(folder)
        self.server = None
        self.url = None

    def run(self, line: str) -> subprocess.CompletedProcess | httpx.Response | None:
        words = shlex.split(sliced(line))
        if words[0] == "make":
            return None  # the samples are the session's prerequisite (skipped above when missing)
        if words[0] == "edgestack" and words[1] == "serve":
            assert words[-1] == "&", line
            models = [w for w in words[2:-1] if not w.startswith("--") and not w.isdigit()]
            self.server = running_server(models, env=self.env, timeout=120,
                                         log_path=self.folder / f"server-{'-'.join(models)}.log")
            self.url, _ = self.server.__enter__()
            return None
        if words[0] == "curl":
            return self.curl(words)
        assert words[0] == "edgestack" or words[:3] == ["python", "-m", "training.data.samples"], line
        done = self.edgestack(*words[1:]) if words[0] == "edgestack" else self.call(samples_main, words[3:])
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    @staticmethod
    def call(main, args: list[str]) -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    def curl(self, words: list[str]) -> httpx.Response:
        url = re.sub(r"^http://localhost:\d+", self.url, words[-1])
        if "-F" in words:
            field, _, value = words[words.index("-F") + 1].partition("=")
            path = self.folder / value.removeprefix("@")
            return httpx.post(url, files={field: (path.name, path.read_bytes())}, timeout=60)
        headers = dict(h.split(": ", 1) for h in (words[i + 1] for i, w in enumerate(words) if w == "-H"))
        return httpx.post(url, content=words[words.index("-d") + 1], headers=headers, timeout=60)

    def close(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def edgestack(self, *args: str) -> subprocess.CompletedProcess:
        from cli import main

        return self.call(main, list(args))

    def manifest(self, name: str) -> dict:
        folder = self.folder / "artifacts" / name
        latest = max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        return json.loads((latest / "manifest.json").read_text())


def check_quality_report(manifest: dict) -> None:
    report = manifest["quality_report"]
    served = "int8" if "int8" in manifest["variants"] else next(iter(report))
    assert set(report) == set(manifest["variants"])
    rep = report[served]
    assert set(rep["per_class"]) == set(manifest["labels"])
    assert 0 <= rep["macro_f1"] <= 1 and rep["accuracy"] == manifest["variants"][served]["test_accuracy"]
    confusion = np.array(rep["confusion"])
    assert confusion.shape == (len(manifest["labels"]),) * 2 and confusion.sum() == rep["test_size"]
    quantization = manifest["quantization"]
    if "int8" in manifest["variants"]:  # published: within the spec's budget on test
        assert manifest["int8_accuracy_drop"] <= quantization["budget"] + 1e-9
    else:
        assert quantization["status"] == "withheld" and quantization["reason"]


def check_playground(url: str, photo: Path, labels: list[str]) -> None:
    """The playground with a photo model: the upload panel classifies, the drawing controls are not
    offered (its manifest lays out no drawings). Needs Debian's chromium (`make browser`); the
    drawing canvas of digits-cnn is tests/integration/test_playground_browser.py's."""
    import shutil

    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        return
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            assert page.inner_text("#digits-title") == "Classify an image"
            assert not page.is_visible("#classify-drawing") and not page.is_visible("#clear-pad")
            page.set_input_files("#upload", str(photo))
            page.wait_for_selector("[data-testid=image-label]", timeout=60_000)
            assert page.inner_text("[data-testid=image-label]") in labels
            assert page.evaluate("[document.getElementById('seen').width, document.getElementById('seen').height]") \
                == [32, 32]
        finally:
            browser.close()


@needs_samples
def test_images_walkthrough(tmp_path, monkeypatch):
    lines = walkthrough("images")
    assert [line.split()[:2] for line in lines[1:4]] == [["python", "-m"], ["edgestack", "new"], ["edgestack", "build"]]
    session = Session(tmp_path, monkeypatch)
    try:
        session.run(lines[1])  # the photographs, cut into class folders
        photos = tmp_path / "scenes-photos"
        (photos / "cat" / "broken.jpg").write_bytes((photos / "cat" / "cat-00000.jpg").read_bytes()[:300])
        (photos / "cat" / "notes.png").write_text("not an image")
        new = session.run(lines[2])
        assert "10 classes, 100 images" in new.stdout and "2 unreadable" in new.stdout, new.stdout
        assert "next: edgestack build scenes" in new.stdout
        session.run(lines[3])

        manifest = session.manifest("scenes")
        assert manifest["inputs"][0]["shape"] == [-1, 3, 32, 32]
        pre = manifest["preprocessing"]
        assert (pre["channels"], pre["height"], pre["width"], pre["dark_background"]) == (3, 32, 32, False)
        assert len(pre["normalization"]["mean"]) == 3
        assert manifest["training"]["skipped_files"] == 2  # the truncated JPEG and the text file
        assert manifest["training"]["config"]["arch"] == "dwsep"
        check_quality_report(manifest)
        assert (tmp_path / "runs" / "scenes" / "confusion.png").is_file()

        rest = iter(lines[4:])
        for line in rest:
            answer = session.run(line)
            if isinstance(answer, httpx.Response):
                assert answer.status_code == 200, answer.text
                prediction = answer.json()["predictions"][0]
                assert prediction["label"] in manifest["labels"]
                listing = httpx.post(session.url + "/models", json={}).json()["models"]
                assert listing[0]["image"] == {"height": 32, "width": 32, "channels": 3, "drawing": False}
                rgb = np.asarray(prediction["input"] if "input" in prediction else np.zeros((32, 32, 3)))
                pixels = httpx.post(session.url + "/classify", json={"pixels": rgb.tolist()}).json()
                assert pixels["predictions"][0]["label"] in manifest["labels"]
                bad = httpx.post(session.url + "/classify", json={"pixels": np.zeros((32, 32)).tolist()})
                assert bad.status_code == 400 and "[32, 32, 3]" in bad.text
                check_playground(session.url, photos / "cat" / "cat-00002.jpg", manifest["labels"])
                session.close()
    finally:
        session.close()

    bundle = tmp_path / "bundles" / f"scenes-v{manifest['version']}"
    edge = subprocess.run([sys.executable, "-m", "edge_runner", str(photos / "cat" / "cat-00001.jpg"), "--json"],
                          cwd=bundle, capture_output=True, text=True, timeout=120)
    assert edge.returncode == 0, edge.stderr
    assert json.loads(edge.stdout.splitlines()[0])["label"] in manifest["labels"]
    rows = [json.loads(line) for line in (tmp_path / "scenes-labels.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "scenes-labels.errors.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and {r["label"] for r in rows} <= set(manifest["labels"])
    assert sorted(e["key"] for e in errors) == ["cat/broken.jpg", "cat/notes.png"]

    clash = session.edgestack("new", "image", "scenes", "--data", "scenes-photos")
    assert clash.returncode == 1 and "clashes with a built model" in clash.stderr
    assert clash.stderr.count("\n") == 1 and "Traceback" not in clash.stderr
    listing = session.edgestack("models")
    assert re.search(r"scenes\s+image\s+v1 .*macro-F1", listing.stdout), listing.stdout


@needs_samples
def test_text_walkthrough(tmp_path, monkeypatch):
    lines = walkthrough("text")
    session = Session(tmp_path, monkeypatch)
    try:
        for line in lines:
            answer = session.run(line)
            if isinstance(answer, httpx.Response):
                assert answer.status_code == 200, answer.text
                body = answer.json()
                manifest = session.manifest("mail")
                assert body["predictions"][0]["label"] in manifest["labels"]
    finally:
        session.close()
    manifest = session.manifest("mail")
    assert sorted(manifest["labels"]) == ["easy-ham", "hard-ham", "spam"]
    assert manifest["training"]["config"]["class_weights"] is True  # hard-ham is rare: `new` turned them on
    check_quality_report(manifest)


@pytest.mark.parametrize("layout, expected", [
    ({"cat": 3}, "needs at least two class folders"),
    ({"cat": 3, "dog": 0}, "class 'dog' has no image files"),
    ({"cat": 3, "dog": -2}, "class 'dog' has no readable image"),
])
def test_bad_image_folders_get_one_line_and_exit_1(tmp_path, monkeypatch, capsys, layout, expected):
    """One class, an empty class, a class whose files do not decode: `new` (and the build) refuse."""
    from PIL import Image

    data = tmp_path / "photos"
    for cls, count in layout.items():
        (data / cls).mkdir(parents=True)
        for i in range(abs(count)):
            if count > 0:
                Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(data / cls / f"{i}.png")
            else:
                (data / cls / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    from cli import main

    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path / "specs"))
    assert main(["new", "image", "x", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "specs" / "x.toml").exists()


def test_a_build_skips_and_counts_files_that_do_not_decode(tmp_path):
    """read_folder keeps the images that decode, counts the others, refuses a class left with
    fewer than three (the build's check, behind `new`'s header-only look)."""
    from PIL import Image

    from edgestack.errors import DataError
    from training.data import folders

    data = tmp_path / "photos"
    for cls, shade in (("dark", 30), ("light", 220)):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((40, 30, 3), shade + i, np.uint8)).save(data / cls / f"{i}.jpg")
    good = (data / "dark" / "0.jpg").read_bytes()
    (data / "dark" / "cut.jpg").write_bytes(good[:len(good) // 3])  # header fine, data truncated
    (data / "light" / "empty.png").write_bytes(b"")
    read = folders.read_folder(data, 16, 16, 3)
    assert read.images.shape == (8, 16, 16, 3) and len(read.skipped) == 2
    assert {Path(p).name for p, _ in read.skipped} == {"cut.jpg", "empty.png"}
    for i in range(2, 4):
        (data / "light" / f"{i}.jpg").unlink()
    with pytest.raises(DataError, match="class 'light' has 2 readable images; every class needs at least 3"):
        folders.read_folder(data, 16, 16, 3)


def test_new_tune_from_a_folder_of_abc_files(tmp_path, monkeypatch, capsys):
    """A folder of .abc files (here the packaged Irish tunes, one file per 100) becomes a tune spec
    that the build reads as it is; a folder with too few tunes is refused in one line."""
    from cli import main
    from edgestack import registry
    from training.data import abc as abc_data

    tunes = abc_data.split_tunes(abc_data.irish_abc_path().read_text(encoding="utf-8"))
    folder = tmp_path / "reels"
    (folder / "more").mkdir(parents=True)
    for start in range(0, 300, 100):
        (folder / ("more" if start else "") / f"part{start}.abc").write_text("\n\n".join(tunes[start:start + 100]))
    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path / "specs"))
    assert main(["new", "tune", "reels", "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "300 tunes" in out and "next: edgestack build reels" in out
    spec = registry.get("reels")
    assert spec.family == "tune" and spec.defaults["data_dir"] == str(folder.resolve())
    from export.build import make_config

    cfg = make_config(spec)
    assert len(abc_data.load_splits(cfg.corpus, cfg.data_dir, seed=cfg.seed).train) == 240

    few = tmp_path / "few"
    few.mkdir()
    (few / "two.abc").write_text("\n\n".join(tunes[:2]))
    assert main(["new", "tune", "duo", "--data", str(few)]) == 1
    err = capsys.readouterr().err
    assert "2 tunes are too few" in err and err.count("\n") == 1
