"""report.html: one self-contained page per run folder, readable offline in a browser."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from conftest import run_cli, user_data_overrides
from PIL import Image

from tasks.api import run
from tasks.report import write_report

#: The sections every report has (issue 21), in order.
HEADINGS = [
    "What ran",
    "Data findings",
    "Training history",
    "Test metrics",
    "Plots",
    "Cross-validation",
    "Export",
]
PRESETS = ["iris_mlp", "series_autoencoder", "forecast_csv"]
IMAGE_SUFFIXES = (".png", ".svg")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny trained run folder per preset: iris_mlp from the command line (so Hydra's
    ``.hydra/overrides.yaml`` and ``tasks.log`` are there), the others from Python."""
    folders = {}
    out = tmp_path_factory.mktemp("iris_mlp") / "run"
    result = run_cli(
        "+task=iris_mlp", "debug=tiny", "trainer.accelerator=cpu", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr
    folders["iris_mlp"] = out
    mp = pytest.MonkeyPatch()
    for preset in PRESETS[1:]:
        data = tmp_path_factory.mktemp(f"{preset}_data")
        overrides = user_data_overrides(preset, data, mp)
        out = tmp_path_factory.mktemp(preset) / "run"
        run(preset, ["debug=tiny", "trainer.accelerator=cpu", f"output_dir={out}", *overrides])
        folders[preset] = out
    mp.undo()
    return folders


@pytest.fixture
def copy_of(runs, tmp_path):
    """A copy of a trained run folder, to change files in: ``copy_of(preset)``."""

    def copy(preset: str) -> Path:
        folder = tmp_path / preset
        shutil.copytree(runs[preset], folder)
        return folder

    return copy


class Page(HTMLParser):
    """What the tests look at in a report: headings, images, links, scripts, metric cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.captions: list[str] = []
        self.references: list[str] = []  # every src and href
        self.tags: list[str] = []
        self.cells: dict[str, tuple[str, str]] = {}  # data-metric -> (data-value, text)
        self.rows: list[list[tuple[str | None, str]]] = []  # per <tr>: (data-metric, text)
        self._open: str | None = None
        self._metric: str | None = None
        self._text = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href"):
            if attrs.get(name) is not None:
                self.references.append(attrs[name])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "tr":
            self.rows.append([])
        if tag in ("h2", "figcaption", "td", "th"):
            self._open, self._metric, self._text = tag, attrs.get("data-metric"), ""
            if self._metric is not None:
                self.cells[self._metric] = (attrs["data-value"], "")

    def handle_data(self, data):
        if self._open:
            self._text += data

    def handle_endtag(self, tag):
        if tag != self._open:
            return
        text = " ".join(self._text.split())
        if tag == "h2":
            self.headings.append(text)
        elif tag == "figcaption":
            self.captions.append(text)
        else:
            self.rows[-1].append((self._metric, text))
            if self._metric is not None:
                self.cells[self._metric] = (self.cells[self._metric][0], text)
        self._open = None

    def section(self, text: str, heading: str) -> str:
        """The HTML of one section (from its heading to the next)."""
        start = text.index(f">{heading}</h2>")
        end = text.find("<h2", start)
        return text[start : end if end >= 0 else len(text)]


def _report(folder: Path) -> tuple[str, Page]:
    path = write_report(folder)
    assert path == folder / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def _check_image(uri: str) -> None:
    """A data: URI holding a PNG that decodes, or an SVG document."""
    head, _, data = uri.partition(",")
    assert head in ("data:image/png;base64", "data:image/svg+xml;base64"), head
    raw = base64.b64decode(data, validate=True)
    if head == "data:image/png;base64":
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 0
    else:
        assert ElementTree.fromstring(raw).tag.endswith("svg")


def _written_images(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and ".hydra" not in p.parts
    }


def _add_svg(folder: Path) -> None:
    """A per-task plot saved as SVG (matplotlib), as a task may write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 3, 2])
    fig.savefig(folder / "extra_plot.svg")
    plt.close(fig)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_section_is_there_and_every_plot_is_embedded(preset, copy_of):
    folder = copy_of(preset)
    _add_svg(folder)
    text, page = _report(folder)
    assert [h for h in page.headings if h in HEADINGS] == HEADINGS
    written = _written_images(folder)
    assert "history.png" in written and len(written) >= 3
    assert sorted(page.captions) == sorted(written)  # each plot once, named by its file
    assert len(page.images) == len(written)
    for uri in page.images:
        _check_image(uri)
    # offline: nothing is fetched (no scripts, style sheets, fonts or remote images)
    assert not [r for r in page.references if r.startswith(("http:", "https:", "//"))]
    assert all(r.startswith(("data:image/", "#")) for r in page.references), page.references
    assert "script" not in page.tags and "link" not in page.tags
    assert "@import" not in text and "url(" not in text


@pytest.mark.parametrize("preset", PRESETS)
def test_test_metrics_are_the_summarys_beside_their_baselines(preset, runs):
    summary = json.loads((runs[preset] / "summary.json").read_text())
    text, page = _report(runs[preset])
    expected = {**summary["metrics"], **summary.get("baseline", {}), **summary.get("peers", {})}
    assert any(k.startswith("test/") for k in expected)
    assert set(page.cells) == set(expected)
    for key, value in expected.items():
        exact, shown = page.cells[key]
        assert float(exact) == value, key  # the stored value, unrounded
        assert float(shown) == pytest.approx(value, rel=1e-3), key
    for row in page.rows:  # each row holds one metric: test/mae beside baseline/naive_mae
        name = row[0][1]
        for metric, _ in row[1:]:
            if metric is not None:
                assert metric.split("/", 1)[1].endswith(name), (metric, name)
    shown_text = html.unescape(page.section(text, "Test metrics"))
    for note in summary.get("notes", []):
        assert note in shown_text


def test_what_ran_names_the_command_device_versions_and_status(runs):
    summary = json.loads((runs["iris_mlp"] / "summary.json").read_text())
    text, page = _report(runs["iris_mlp"])
    section = page.section(text, "What ran")
    command = "python -m tasks task=iris_mlp debug=tiny"  # as Hydra recorded the overrides
    assert command in section and "trainer.accelerator=cpu" in section
    assert "cpu, precision 32-true" in section  # the runner's device line in tasks.log
    assert f"torch {summary['versions']['torch']}" in section
    assert f"{summary['wall_time_s']:.1f} s" in section
    assert ">completed<" in section
    assert "config.yaml" in section and "max_epochs: 2" in section


def test_a_run_from_python_says_its_command_is_not_recorded(runs):
    text, page = _report(runs["forecast_csv"])
    section = page.section(text, "What ran")
    assert "not recorded" in section and "forecast_csv" in section


def test_the_history_table_has_a_row_per_epoch_with_the_best_marked(runs):
    summary = json.loads((runs["iris_mlp"] / "summary.json").read_text())
    text, page = _report(runs["iris_mlp"])
    section = page.section(text, "Training history")
    header, *rows = Page(section).rows
    assert [cell for _, cell in header][:3] == ["epoch", "train/loss", "val/loss"]
    assert [row[0][1] for row in rows] == [str(e + 1) for e in range(summary["epochs"])]
    assert section.count('<tr class="best">') == 1
    assert f'<tr class="best"><td class="num">{summary["best_epoch"]}</td>' in section


def test_a_long_history_is_cut_to_spaced_epochs_keeping_the_best(copy_of):
    folder = copy_of("iris_mlp")
    rows = ["epoch,step,train/loss,val/loss"]
    losses = np.abs(np.sin(np.arange(40))) + 0.1
    for epoch, loss in enumerate(losses):
        rows.append(f"{epoch},{epoch},{loss + 0.5},")
        rows.append(f"{epoch},{epoch},,{loss}")
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = json.loads((folder / "summary.json").read_text())
    best = int(np.argmin(losses))
    summary["best_epoch"] = best + 1
    (folder / "summary.json").write_text(json.dumps(summary))
    text, page = _report(folder)
    section = page.section(text, "Training history")
    shown = [int(row[0][1]) for row in Page(section).rows[1:]]
    assert 10 <= len(shown) <= 16 and shown == sorted(shown)
    assert {1, 40, best + 1} <= set(shown)
    assert f"of {len(losses)} epochs shown" in section


def test_data_findings_come_from_doctor_json_most_serious_first_and_escaped(copy_of):
    folder = copy_of("iris_mlp")
    findings = [
        {"severity": "info", "what": "3 rows are duplicates <script>alert(1)</script>"},
        {"severity": "error", "what": "the target has 4 missing values", "option": None},
        {"severity": "warning", "what": "'id' looks like an identifier", "option": "drop=[id]"},
    ]
    (folder / "doctor.json").write_text(json.dumps({"findings": findings}))
    text, page = _report(folder)
    section = page.section(text, "Data findings")
    assert "script" not in page.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    order = [section.index(f["what"].split(" <")[0].replace("'", "&#39;")) for f in findings]
    assert order[1] < order[2] < order[0]  # error, warning, info
    assert "drop=[id]" in section
    assert "1 error, 1 warning, 1 info" in section


def test_without_doctor_json_the_section_says_so_and_shows_data_warnings(copy_of):
    folder = copy_of("iris_mlp")
    assert (folder / "doctor.json").is_file()  # every training run writes the findings
    for name in ("doctor.json", "doctor.md"):  # as a run folder of an older version has none
        (folder / name).unlink()
    text, page = _report(folder)
    assert "did not run" in page.section(text, "Data findings")
    summary = json.loads((folder / "summary.json").read_text())
    summary["data_warnings"] = ["column 'x' is constant: left out"]
    (folder / "summary.json").write_text(json.dumps(summary))
    text, page = _report(folder)
    section = page.section(text, "Data findings")
    assert "did not run" in section and "column &#39;x&#39; is constant: left out" in section


def test_cross_validation_and_export_say_not_run_when_absent(runs):
    text, page = _report(runs["forecast_csv"])
    assert "not run" in page.section(text, "Cross-validation")
    assert "not run" in page.section(text, "Export")


def test_cross_validation_shows_the_summary_and_the_folds(copy_of):
    folder = copy_of("iris_mlp")
    cv = {"folds": 3, "test/acc": {"mean": 0.8125, "std": 0.0625}}
    (folder / "cv_summary.json").write_text(json.dumps(cv))
    (folder / "cv_results.csv").write_text("fold,test/acc\n0,0.75\n1,0.8125\n2,0.875\n")
    text, page = _report(folder)
    section = page.section(text, "Cross-validation")
    assert "not run" not in section
    for figure in ("0.8125", "0.0625", "0.875", "test/acc", ">3<"):
        assert figure in section, figure


@pytest.mark.slow
def test_export_shows_the_bundle_and_its_onnx_parity(copy_of):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra")
    from tasks.bundle import export_bundle

    folder = copy_of("series_autoencoder")
    bundle = export_bundle(folder, onnx=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    text, page = _report(folder)
    section = page.section(text, "Export")
    assert "not run" not in section and str(bundle) in section
    parity = manifest["onnx"]["parity"]
    assert f"on {parity['rows']} rows" in section
    for check in ("batched", "batch_size_1"):
        assert f"{parity[check]['max_abs_diff']:.4g}" in section
        assert f"{100 * parity[check]['agreement']:.2f} %" in section


def test_missing_or_damaged_files_become_lines_not_errors(copy_of):
    folder = copy_of("iris_mlp")
    (folder / "summary.json").write_text('{"preset": "iris_mlp", "metr')
    (folder / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "metrics.csv").write_bytes(b"epoch,val/loss\n0,\xff\xfe\n")
    (folder / "doctor.json").write_text("[not json")
    (folder / "notes.svg").write_text("plain text, not an image")
    text, page = _report(folder)
    assert [h for h in page.headings if h in HEADINGS] == HEADINGS
    assert "summary.json could not be read" in page.section(text, "What ran")
    assert "doctor.json could not be read" in page.section(text, "Data findings")
    assert "metrics.csv could not be read" in page.section(text, "Training history")
    plots = page.section(text, "Plots")
    assert "confusion_matrix.png: the image is damaged" in plots
    assert "notes.svg: not an SVG image" in plots
    assert "No test metrics" in page.section(text, "Test metrics")
    for uri in page.images:  # only the good plots are embedded
        _check_image(uri)


def test_an_empty_folder_still_gets_every_section(tmp_path):
    text, page = _report(tmp_path)
    assert [h for h in page.headings if h in HEADINGS] == HEADINGS
    assert "No summary.json" in text and "no plots" in text and not page.images


def test_a_report_that_cannot_be_written_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    import tasks.report

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tasks.report, "write_text_atomic", full_disk)
    path = write_report(tmp_path)
    assert path == tmp_path / "report.html" and not path.exists()
    assert "could not be written" in caplog.text and "No space left" in caplog.text


# -- in a real browser ------------------------------------------------------------------------

BROWSER = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser (chromium, chromium-browser or google-chrome) on PATH: "
    "apt-get install -y chromium",
)
#: Appended to a copy of the report: on load, counts the images that failed to decode.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const failed = [...document.images].filter((i) => !i.complete || i.naturalWidth === 0);
  document.body.dataset.images = document.images.length;
  document.body.dataset.failedImages = failed.length;
});
</script>"""


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    command = [
        BROWSER,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_browser
@pytest.mark.parametrize("preset", PRESETS)
def test_the_page_renders_in_chromium(preset, copy_of, tmp_path):
    folder = copy_of(preset)
    _add_svg(folder)
    report = write_report(folder)
    shot = tmp_path / "shot.png"
    result = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape == (4000, 1280)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 128).mean() > 0.005  # text and plots drawn in dark ink
    assert (pixels[:200] < 128).any()  # the title at the top


@needs_browser
@pytest.mark.parametrize("preset", PRESETS)
def test_every_section_and_image_loads_in_chromium(preset, copy_of, tmp_path):
    folder = copy_of(preset)
    _add_svg(folder)
    text = write_report(folder).read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"  # the report with the image check added
    probe.write_text(text.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    result = _browser(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    dom = Page(result.stdout)
    assert [h for h in dom.headings if h in HEADINGS] == HEADINGS, result.stderr[-2000:]
    body = result.stdout[result.stdout.index("<body") :].split(">", 1)[0]
    written = len(_written_images(folder))
    assert f'data-images="{written}"' in body, body
    assert 'data-failed-images="0"' in body, body
