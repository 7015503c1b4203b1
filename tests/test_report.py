"""evalkit report on small hand-made results folders; expected values computed by hand."""

import base64
import csv
import math
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

import evalkit
from evalkit.cli import main
from evalkit.results import PROFILE_COLUMNS, result_columns

PNG = b"\x89PNG\r\n\x1a\n"
Z = 1.959963984540054  # 97.5% normal quantile
BASE = dict(
    model="m",
    source="hub:m",
    trained_len="4096",
    seed="0",
    evalkit_version="0.3.0",
    status="ok",
    device="cpu",
    dtype="float32",
    transformers_version="5.23.0",
    torch_version="2.13.0",
    rope_scaling="default",
    created_at="2026-01-01T00:00:00+00:00",
)
PPL = dict(task="ppl", data="stdlib", text_field="text", stride="0", min_doc_tokens="0", shared="none")
SHARD = dict(device="cuda:0", dtype="bfloat16", transformers_version="4.57.1", created_at="2026-01-03T12:00:00+00:00")
SKIPPED = "ppl at 8192: skipped 2 document(s) shorter than 8193 tokens"
ODD = "cache <b>cleared</b> & resumed"  # must be shown as text, never as markup
OOM = "CUDA out of memory <tried 2 GiB>"


def ppl(method, length, sample, nll, tokens, seconds, mem, params="", **kw):
    return dict(
        BASE,
        **PPL,
        method=method,
        params=params,
        alpha=params.partition("=")[2],
        length=length,
        sample=sample,
        doc=f"d{sample}",
        nll=nll,
        tokens=tokens,
        ppl=math.exp(nll),
        seconds=seconds,
        peak_mem_mb=mem,
        **kw,
    )


def passkey(method, length, depth, sample, correct, seconds, mem, params="", **kw):
    return dict(
        BASE,
        method=method,
        params=params,
        alpha=params.partition("=")[2],
        task="passkey",
        length=length,
        depth=depth,
        sample=sample,
        correct=correct,
        tokens=length,
        passkey="12345",
        answer="12345",
        chat_template="0",
        seconds=seconds,
        peak_mem_mb=mem,
        **kw,
    )


def write(path, rows, columns=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns or result_columns())
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def run(tmp_path):
    """run/ (ppl, passkey, an OOM, notes.txt, positions.csv), run/shards/0-of-2 (passkey of ntk on
    another machine, its own notes.txt) and run/shards/1-of-2 (no notes.txt)."""
    run = tmp_path / "run"
    write(
        run / "results.csv",
        [
            ppl("none", 4096, 0, 2.0, 4095, 10, 1000),
            ppl("none", 4096, 1, 3.0, 1000, 20, 1200),
            ppl("none", 8192, 0, 4.0, 8191, 30, 1500),
            ppl("ntk", 4096, 0, 2.5, 4095, 12, 1100, params="alpha=2"),
            dict(
                ppl("ntk", 8192, 0, 0, 0, 99, 9000, params="alpha=2"),
                nll="",
                ppl="",
                tokens="",
                status="oom",
                error=OOM,
            ),
            passkey("none", 4096, 0.0, 0, 1, 5, 800),
            passkey("none", 4096, 0.0, 1, 0, 7, 900),
            passkey("none", 4096, 1.0, 0, 1, 9, 850),
            passkey("none", 8192, 0.0, 0, 0, 11, 950),
            passkey("none", 8192, 1.0, 0, 0, 13, 990),
        ],
    )
    (run / "notes.txt").write_text(
        f"2026-01-01T00:00:00+00:00\t{SKIPPED}\n2026-01-01T00:05:00+00:00\t{SKIPPED}\n"
        f"2026-01-01T00:06:00+00:00\t{ODD}\n"
    )
    keys = dict(
        model="m",
        source="hub:m",
        trained_len="4096",
        length="4096",
        sample="0",
        doc="d0",
        data="stdlib",
        stride="0",
        seed="0",
        min_doc_tokens="0",
        text_field="text",
        rope_scaling="default",
    )
    write(
        run / "positions.csv",
        [
            dict(keys, method=m, params=p, alpha=p.partition("=")[2], position_start=a, position_end=a + 2048, nll=v)
            for m, p, a, v in (
                ("none", "", 0, 2.0),
                ("none", "", 2048, 2.4),
                ("ntk", "alpha=2", 0, 2.1),
                ("ntk", "alpha=2", 2048, 2.2),
            )
        ],
        PROFILE_COLUMNS,
    )
    shard = run / "shards" / "0-of-2"
    write(
        shard / "results.csv",
        [dict(passkey("ntk", 4096, d, 0, 1, 6, 2000, params="alpha=2"), **SHARD) for d in (0.0, 1.0)],
    )
    (shard / "notes.txt").write_text("2026-01-03T12:00:00+00:00\tpasskey: resumed after a restart\n")
    write(run / "shards" / "1-of-2" / "results.csv", [])
    return run


def wilson(k, n):
    p, d = k / n, 1 + Z * Z / n
    c, h = (p + Z * Z / (2 * n)) / d, Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return f"{max(0, c - h):.0%}, {min(1, c + h):.0%}"


# ppl cells (ci): token-weighted exp(Σ nll·t / Σ t); with two documents a quarter of all bootstrap
# resamples draw one document twice, so the 2.5% / 97.5% percentiles are exp(2) and exp(3) exactly
RESULTS = {
    "perplexity": [
        [
            "m",
            "none",
            f"{math.exp((2 * 4095 + 3 * 1000) / 5095):.3f} [{math.exp(2):.3f}, {math.exp(3):.3f}] (2)",
            f"{math.exp(4):.3f} [one sample] (1)",
        ],
        ["m", "ntk alpha=2", f"{math.exp(2.5):.3f} [one sample] (1)", "OOM"],
    ],
    "passkey accuracy": [
        ["m", "none", f"67% [{wilson(2, 3)}] (3)", f"0% [{wilson(0, 2)}] (2)"],
        ["m", "ntk alpha=2", f"100% [{wilson(2, 2)}] (2)", ""],
    ],
    # mean seconds of the ok rows / their largest peak memory (the OOM row's 99 s / 9000 MB left out)
    "ppl: mean seconds": [
        ["m", "none", "15.0 s / 1200 MB", "30.0 s / 1500 MB"],
        ["m", "ntk alpha=2", "12.0 s / 1100 MB", ""],
    ],
    "passkey: mean seconds": [
        ["m", "none", "7.0 s / 900 MB", "12.0 s / 990 MB"],
        ["m", "ntk alpha=2", "6.0 s / 2000 MB", ""],
    ],
}
FIGURES = ["m_ppl", "m_passkey", "m_passkey_heatmap", "m_positions"]  # ppl and passkey vs length, heatmap, positions


class Page(HTMLParser):
    """Tables (caption, header, rows of cell texts), <img> sources and all text of an HTML page."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tables, self.images, self.text, self.cell, self.in_caption = [], [], [], None, False
        self.classes = []  # (cell text, class attribute) of every td
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(dict(caption="", rows=[]))
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self.cell, self.cls = "", dict(attrs).get("class", "")
        elif tag == "caption":
            self.in_caption = True
        elif tag == "img":
            self.images.append(dict(attrs))
        elif self.cell is not None:
            raise AssertionError(f"markup <{tag}> inside a table cell")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append(self.cell)
            self.classes.append((self.cell, self.cls))
            self.cell = None
        elif tag == "caption":
            self.in_caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell += data
        elif self.in_caption:
            self.tables[-1]["caption"] += data

    def table(self, caption_start):
        found = [t for t in self.tables if t["caption"].startswith(caption_start)]
        assert len(found) == 1, (caption_start, [t["caption"] for t in self.tables])
        return found[0]["rows"]


def report(paths, out, *extra):
    with pytest.raises(SystemExit) as stop:
        main(["report", *map(str, paths), "--out", str(out), *extra])
    return stop.value.code


def test_html_report_holds_every_cell_fact_figure_and_note(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the figures are drawn
    (tmp_path / "tmp").mkdir()
    before = sorted(run.rglob("*"))
    out = tmp_path / "out" / "report.html"
    assert report([run], out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = Page(out.read_text(encoding="utf-8"))
    for caption, rows in RESULTS.items():
        assert page.table(caption) == [["model", "method", "4096", "8192"]] + rows, caption
    kinds = dict(page.classes)
    assert kinds["12.0 s / 1100 MB"] == kinds["OOM"] == "num" and kinds["ntk alpha=2"] == ""  # numbers to the right
    facts = {r[0]: r[1] for r in page.tables[0]["rows"]}
    assert facts["evalkit"] == "0.3.0" and facts["transformers"] == "4.57.1, 5.23.0" and facts["torch"] == "2.13.0"
    assert facts["devices"] == "cpu, cuda:0" and facts["dtypes"] == "bfloat16, float32"
    assert facts["methods"] == "none, ntk alpha=2" and facts["lengths (tokens)"] == "4096, 8192"
    assert facts["rows by status"] == "ok: 11, oom: 1"
    assert facts["created (UTC)"] == "2026-01-01T00:00:00+00:00 – 2026-01-03T12:00:00+00:00"
    assert facts["inputs"] == str(run)
    assert f"{run / 'shards' / '0-of-2' / 'results.csv'} (2 rows)" in facts["files read"]
    assert page.table("models")[1] == ["m", "hub:m", "4096", "default", "", "", "12"]
    methods = {r[0]: r for r in page.table("methods")[1:]}
    assert methods["ntk alpha=2"][1:] == ["ntk", "alpha=2", "", "2", "ppl, passkey", "4"]
    tasks = {r[0]: r for r in page.table("tasks")[1:]}
    assert tasks["passkey"][1:6] == ["4096, 8192", "0%, 100%", "2", "0", "7"]  # samples 0 and 1 at depth 0
    assert "data=stdlib" in tasks["ppl"][6] and "stride=0" in tasks["ppl"][6] and tasks["ppl"][7] == "d0, d1"
    assert page.table("cells without a number")[1:] == [["m", "ntk alpha=2", "ppl", "8192", "oom", "1", OOM]]
    notes = page.table("run notes")[1:]
    assert [n[0] for n in notes] == [SKIPPED, ODD, "passkey: resumed after a restart"]  # each message once
    assert notes[0][1:] == [str(run), "2026-01-01T00:00:00+00:00"]
    assert notes[2][1] == str(run / "shards" / "0-of-2")
    assert [i["alt"] for i in page.images] == FIGURES
    for image in page.images:
        head, _, data = image["src"].partition(",")
        assert head == "data:image/png;base64" and base64.b64decode(data, validate=True).startswith(PNG)
    assert f"evalkit {evalkit.__version__}" in "".join(page.text)  # generated by ... (the version of the code running)
    assert sorted(run.rglob("*")) == before and not list((tmp_path / "tmp").iterdir())  # nothing left behind


def test_markdown_report(run, tmp_path):
    out = tmp_path / "report.md"
    assert report([run], out, "--title", "Sweep <7>") == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Sweep &lt;7&gt;\n")
    for caption, rows in RESULTS.items():
        for r in rows:
            assert "| " + " | ".join(r) + " |" in text, (caption, r)
    assert "- **transformers**: 4.57.1, 5.23.0" in text and "- **devices**: cpu, cuda:0" in text
    assert text.count(SKIPPED) == 1 and "cache &lt;b&gt;cleared&lt;/b&gt; &amp; resumed" in text
    assert "| m | ntk alpha=2 | ppl | 8192 | oom | 1 | CUDA out of memory &lt;tried 2 GiB&gt; |" in text
    images = [line for line in text.splitlines() if line.startswith("![")]
    assert [line[2 : line.index("]")] for line in images] == FIGURES
    for line in images:
        data = line.split("(data:image/png;base64,", 1)[1].rstrip(")")
        assert base64.b64decode(data, validate=True).startswith(PNG)


def test_nothing_to_note_says_nothing(tmp_path):
    """No failed cell and no notes.txt: no notes section (and no error for the absent file)."""
    path = write(tmp_path / "ok" / "results.csv", [ppl("none", 4096, 0, 2.0, 4095, 10, 1000)])
    out = tmp_path / "r.md"
    assert report([path.parent], out) == 0
    text = out.read_text()
    assert "## Notes" not in text and f"| m | none | {math.exp(2):.3f} [one sample] (1) |" in text


@pytest.mark.parametrize("out, needle", [("report.pdf", ".html"), ("report", ".md")])
def test_an_unknown_suffix_is_one_line(run, tmp_path, capsys, out, needle):
    assert report([run], tmp_path / out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / out).exists()


def test_a_missing_foreign_or_empty_input_is_one_line(tmp_path, capsys):
    assert report([tmp_path / "nowhere"], tmp_path / "r.html") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and "does not exist" in err and len(err.splitlines()) == 1
    (tmp_path / "foreign.csv").write_text("a,b\n1,2\n")
    assert report([tmp_path / "foreign.csv"], tmp_path / "r.html") == 2
    err = capsys.readouterr().err.strip()
    assert "not an evalkit results file" in err and len(err.splitlines()) == 1
    write(tmp_path / "empty" / "results.csv", [])  # a run stopped before its first row
    assert report([tmp_path / "empty"], tmp_path / "r.html") == 2
    err = capsys.readouterr().err.strip()
    assert "no result rows" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def _chromium():
    return next((c for c in ("/usr/bin/chromium", shutil.which("chromium")) if c and os.access(c, os.X_OK)), None)


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="needs chromium")
def test_a_browser_shows_the_tables_and_figures(run, tmp_path):
    from PIL import Image

    out = tmp_path / "report.html"
    assert report([run], out) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,5000",
            out.as_uri(),
        ],
        check=True,
        timeout=180,
        capture_output=True,
    )
    pixels = Image.open(shot).convert("RGB")
    assert pixels.size == (1280, 5000)
    counts = {rgb: n for n, rgb in pixels.getcolors(1280 * 5000)}
    assert len(counts) > 100  # not blank
    # matplotlib's first two line colours (none, ntk), the zebra rows and the table headers
    for colour in ("#1f77b4", "#ff7f0e", "#f2f5fa", "#e6ebf3"):
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 200, colour
    # every figure is drawn at its full width or the page's (max-width 100%), none cut or missing
    dom = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            out.as_uri(),
        ],
        check=True,
        timeout=180,
        capture_output=True,
        text=True,
    ).stdout
    assert dom.count("<img") == len(FIGURES) and dom.count("<table") == 10
