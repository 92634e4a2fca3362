"""The HTML report in a real browser: headless Chromium loads report.html from disk.

Checks that the browser decoded every image (a copy of the report gets a small script that
records each <img>'s natural size once the page has loaded; --dump-dom returns the result),
that each embedded PNG decodes with PIL, that the tables are there, and saves a screenshot
into the test's temp dir. Skipped when no Chromium is installed (.ci/run installs Debian's).
"""

import base64
import io
import json
import re
from html.parser import HTMLParser

import pytest

from rftkit.report.browser import dump_dom, find_chromium, screenshot
from rftkit.report.summary import write_report

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")

CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                               w: i.naturalWidth, h: i.naturalHeight}));
  const tables = [...document.querySelectorAll("table")].map(t => t.id || "");
  const pre = document.createElement("pre");
  pre.id = "browser-check";
  pre.textContent = JSON.stringify({imgs, tables});
  document.body.appendChild(pre);
});
</script>"""


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.check, self._in_check = [], [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self.tables.append(a.get("id", ""))
        elif tag == "pre" and a.get("id") == "browser-check":
            self._in_check = True

    def handle_data(self, data):
        if self._in_check:
            self.check = (self.check or "") + data

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_check = False


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from test_report_runs import toy_run

    run_dir = toy_run(tmp_path_factory.mktemp("runs"), "browser")
    return write_report(run_dir)


def test_report_renders_in_chromium(report, tmp_path):
    from PIL import Image

    probe = tmp_path / "report_probe.html"
    probe.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    dom = _Collect()
    dom.feed(dump_dom(probe))
    assert dom.check, "the check script did not run"
    check = json.loads(dom.check)
    assert len(check["imgs"]) >= 10 and len(dom.imgs) == len(check["imgs"])
    broken = [i["alt"] for i in check["imgs"] if not i["ok"]]
    assert not broken, f"images the browser could not decode: {broken}"
    for src in dom.imgs:  # and each one decodes outside the browser too
        m = re.fullmatch(r"data:image/png;base64,(.+)", src)
        assert m, src[:40]
        with Image.open(io.BytesIO(base64.b64decode(m.group(1)))) as im:
            im.load()
    for table_id in ["summary-table", "timeline-table", "forgetting-test", "behaviour-table"]:
        assert table_id in check["tables"], table_id
    assert sum(t == "" for t in check["tables"]) >= 1  # the sample inspector's tables

    shot = screenshot(report, tmp_path / "shot.png", width=1280, height=2000)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50  # not a blank page


def test_report_command_takes_a_screenshot(report, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from rftkit.cli import app

    res = CliRunner().invoke(app, ["report", str(report.parent), "--screenshot", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "r.png") as im:
        assert im.size == (1280, 2000)
