"""Images in evaluation records (rftkit.eval.evaluate.image_records) and the report's images
section (rftkit/report/images.py): thumbnails decode to the pixels, text-only records do not
change, the section shows both frames of a two-frame problem, escapes text, and is absent for
text-only runs."""

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
import yaml

from rftkit.eval.evaluate import THUMB_MAX, evaluate, image_records, problem_record
from rftkit.model.io import build_model
from rftkit.model.tokenizer import CharTokenizer
from rftkit.report.html import build_html
from rftkit.report.images import images_section
from rftkit.report.rundata import load_run
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.types import Image, Problem

PIL = pytest.importorskip("PIL.Image")
PREFIX = "data:image/png;base64,"


def _frames(n: int, size=(32, 32), seed=0) -> tuple[Image, ...]:
    rng = np.random.default_rng(seed)
    return tuple(Image(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n))


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith(PREFIX)
    return np.asarray(PIL.open(io.BytesIO(base64.b64decode(uri[len(PREFIX):]))).convert("RGB"))


def test_image_records_decode_to_the_pixels_and_large_images_are_subsampled():
    small = _frames(2, size=(32, 40))
    recs = image_records(small)
    assert [r["key"] for r in recs] == [f"{im.key:010x}" for im in small]
    assert [r["size"] for r in recs] == [[32, 40], [32, 40]]
    for r, im in zip(recs, small):
        assert np.array_equal(_decode(r["png"]), im.pixels)  # PNG is lossless
    big = Image(np.random.default_rng(1).integers(0, 256, (300, 90, 3), dtype=np.uint8))
    (rec,) = image_records((big,))
    step = 3  # ceil(300 / 128): the smallest step that brings 300 rows under THUMB_MAX
    assert rec["size"] == [300, 90] and max(_decode(rec["png"]).shape[:2]) <= THUMB_MAX
    assert np.array_equal(_decode(rec["png"]), big.pixels[::step, ::step])


def test_evaluated_image_problems_carry_their_frames_and_text_records_do_not_change():
    torch.manual_seed(0)
    tok = CharTokenizer()
    model = build_model("nano", 96, tok, {"image_size": 16, "patch": 8, "d_vision": 32, "layers": 1,
                                         "heads": 2}).eval()
    frames = _frames(2)
    text = Problem("t", "1+1=", "2", "exact")
    probs = [Problem("t", "what changed=", "x", "exact", images=frames), text]
    kw = dict(n=2, ks=[1], temperature=1.0, max_new_tokens=4, seed=0)
    _, records = evaluate(KVCacheEngine(model, tok), tok, probs, **kw)
    assert [r["key"] for r in records[0]["images"]] == [f"{im.key:010x}" for im in frames]
    for r, im in zip(records[0]["images"], frames):
        assert np.array_equal(_decode(r["png"]), im.pixels)
    assert "images" not in records[1]
    _, alone = evaluate(KVCacheEngine(model, tok), tok, [text], **kw)
    assert set(alone[0]) == set(records[1])  # the same keys as a text-only evaluation


def _record(p: Problem, greedy: str, samples: list[str]) -> dict:
    return problem_record(p, greedy, samples, [len(t) for t in samples], [False] * len(samples), CharTokenizer(),
                          [-1.0] * len(samples))


def _fake_run(tmp_path, records: list[dict]):
    """A run dir with one evaluated stage whose test split holds `records`."""
    cfg = {"stages": [{"name": "rl", "steps": 1, "objectives": [{"name": "policy"}]}], "eval": {"ks": [1, 2]}}
    (tmp_path / "eval").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "eval" / "rl.json").write_text(json.dumps({"stage": "rl", "step": 1, "results": {"test": {}}}))
    (tmp_path / "eval" / "rl_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_run(tmp_path)


def test_the_images_section_shows_both_frames_answers_and_escapes_text(tmp_path):
    two = Problem("t", "<script>alert(1)</script> what changed?", "a&b", "exact", images=_frames(2))
    one = Problem("t", "count=", "3", "exact", images=_frames(1, seed=1))
    run = _fake_run(tmp_path, [_record(two, "no <b>#x", ["#ab", "#<i>"]),
                               _record(one, "#3", ["#3", "#4"]),
                               _record(Problem("t", "1+1=", "2", "exact"), "#2", ["#2", "#2"])])
    sec = images_section(run)
    assert sec.startswith('<section id="images">') and "after rl, ID (test)" in sec
    # two problems with images (the text-only one is left out), three frames in all
    assert sec.count("<img ") == 3 and "frame 1" in sec and "frame 2" in sec and "1+1=" not in sec
    recs = run.sample_records("rl", "test")
    for im in recs[0]["images"] + recs[1]["images"]:
        assert f'src="{im["png"]}"' in sec
    assert "image-rendering:pixelated;width:96px" in sec  # 32 px frames shown 3x, not re-encoded
    assert "<script>" not in sec and "&lt;script&gt;alert(1)&lt;/script&gt;" in sec
    assert "<b>#x" not in sec and "no &lt;b&gt;#x" in sec and "a&amp;b" in sec
    # greedy and first sample: answer, score and verdict
    assert re.search(r"<code>3</code></td><td>1</td><td class=\"ok\">correct", sec)
    assert re.search(r"<code>x</code></td><td>0</td><td class=\"bad\">wrong", sec)
    html = build_html(run)
    assert sec in html and '<a href="#images">' in html


def test_no_images_section_for_text_only_runs_and_a_placeholder_without_a_thumbnail(tmp_path):
    text = [_record(Problem("t", "1+1=", "2", "exact"), "#2", ["#2", "#3"])]
    run = _fake_run(tmp_path / "text", text)
    html = build_html(run)
    assert images_section(run) == "" and 'id="images"' not in html and '<a href="#images">' not in html
    rec = _record(Problem("t", "count=", "3", "exact", images=_frames(1)), "#3", ["#3"])
    rec["images"][0]["png"] = None  # a record written without a thumbnail
    sec = images_section(_fake_run(tmp_path / "bare", [rec]))
    assert "[no thumbnail stored]" in sec and "image, 32x32" in sec and "<img " not in sec
