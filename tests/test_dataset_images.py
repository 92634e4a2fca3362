"""Images in dataset rows (rftkit/tasks/dataset_images.py): paths relative to the dataset file,
data URLs, bytes, the `datasets` Image storage in Parquet and `datasets` folders, lists of
images; grayscale, palette, alpha and 16-bit images converted to RGB with hand-computed
pixels; oversized images shrunk and counted; missing, corrupt and mistyped images are row
errors naming the file, the row and the field; text-only datasets are unchanged."""

import base64
import functools
import io
import json
import logging
import sys
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from rftkit.data.datasets import load_problems
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.tokenizer import CharTokenizer
from rftkit.model.vision import VisionConfig
from rftkit.tasks.dataset_images import CHAR_IMAGE_TOKENS, char_tokens
from rftkit.tasks.dataset_task import DatasetError, DatasetTask
from rftkit.types import Image


def _png(arr, **save) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(arr)).save(buf, "PNG", **save)
    return buf.getvalue()


def _rgb(value, h=2, w=3) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pixels(problem) -> list:
    return [im.pixels[0, 0].tolist() for im in problem.images]


def test_jsonl_paths_relative_to_the_file_lists_and_data_urls(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png(_rgb((10, 20, 30))))
    (tmp_path / "img" / "b.png").write_bytes(_png(_rgb((40, 50, 60), h=4, w=5)))
    url = "data:image/png;base64," + base64.b64encode(_png(_rgb((7, 8, 9)))).decode()
    path = _jsonl(tmp_path / "vqa.jsonl", [
        {"prompt": "one", "answer": "1", "images": "img/a.png"},
        {"prompt": "two", "answer": "2", "images": ["img/a.png", "img/b.png"]},
        {"prompt": "url", "answer": "3", "image": url},
        {"prompt": "none", "answer": "4", "images": []},
        {"prompt": "text", "answer": "5"},
    ])
    monkeypatch.chdir(tmp_path / "img")  # relative to the dataset file's folder, not the working directory
    problems, report = load_problems(path)
    assert [_pixels(p) for p in problems] == [[[10, 20, 30]], [[10, 20, 30], [40, 50, 60]], [[7, 8, 9]], [], []]
    assert problems[1].images[1].size == (4, 5) and isinstance(problems[1].images[0], Image)
    assert problems[0].images[0] == problems[1].images[0]  # same pixels, same key
    assert report["images"] == {"read": 4, "resized": 0, "converted": {}}


def test_parquet_bytes_and_the_datasets_image_storage(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "c.png").write_bytes(_png(_rgb(3)))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "prompt": ["p1", "p2", "p3"], "answer": ["1", "2", "3"],
        "pic": pa.array([{"bytes": _png(_rgb(1)), "path": "ignored.png"}, {"bytes": None, "path": "c.png"},
                         {"bytes": _png(_rgb(2)), "path": None}], struct),
        "raw": [_png(_rgb(4)), _png(_rgb(5)), _png(_rgb(6))],
        "frames": pa.array([[{"bytes": _png(_rgb(8)), "path": None}] * 2, [], None], pa.list_(struct)),
    })
    pq.write_table(table, tmp_path / "d.parquet")
    problems, _ = load_problems(str(tmp_path / "d.parquet"), columns={"prompt": "prompt", "image": "pic"})
    assert [_pixels(p) for p in problems] == [[[1, 1, 1]], [[3, 3, 3]], [[2, 2, 2]]]
    problems, _ = load_problems(str(tmp_path / "d.parquet"), columns={"images": "raw"})
    assert [_pixels(p) for p in problems] == [[[4, 4, 4]], [[5, 5, 5]], [[6, 6, 6]]]
    problems, _ = load_problems(str(tmp_path / "d.parquet"), columns={"images": "frames"})
    assert [_pixels(p) for p in problems] == [[[8, 8, 8]] * 2, [], []]


def test_datasets_folder_with_image_features_and_row_errors_for_bad_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "a.png").write_bytes(_png(_rgb((1, 2, 3))))
    (tmp_path / "b.png").write_bytes(_png(_rgb(9)))
    ds = datasets.Dataset.from_dict({"prompt": ["x", "y"], "answer": ["1", "2"],
                                     "image": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                                     "frames": [[str(tmp_path / "a.png")] * 2, []]})
    ds = ds.cast_column("image", datasets.Image()).cast_column("frames", datasets.List(datasets.Image()))
    ds.save_to_disk(str(tmp_path / "ds"))
    problems, report = load_problems(str(tmp_path / "ds"))
    assert [_pixels(p) for p in problems] == [[[1, 2, 3]], [[9, 9, 9]]]
    problems, _ = load_problems(str(tmp_path / "ds"), columns={"prompt": "prompt", "images": "frames"})
    assert [_pixels(p) for p in problems] == [[[1, 2, 3]] * 2, []]
    # `datasets` would raise mid-iteration decoding these; the task reads them as rows
    bad = datasets.Dataset.from_dict({"prompt": ["ok", "bad"], "answer": ["1", "2"],
                                      "image": [{"bytes": _png(_rgb(9)), "path": None},
                                                {"bytes": b"not an image", "path": None}]},
                                     features=datasets.Features({"prompt": datasets.Value("string"),
                                                                 "answer": datasets.Value("string"),
                                                                 "image": datasets.Image()}))
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DatasetError, match=r"bad: row 2: field 'images' \(column 'image'\): cannot read 12 bytes of "
                                           r"image data: not an image Pillow can read"):
        load_problems(str(tmp_path / "bad"))
    problems, report = load_problems(str(tmp_path / "bad"), on_error="skip")
    assert [p.prompt for p in problems] == ["ok"] and report["skipped_total"] == 1


def test_conversions_to_rgb_with_hand_computed_pixels(tmp_path):
    palette = PILImage.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 250, 120, 5] + [0] * 762)
    palette.putdata([1, 0])
    buf = io.BytesIO()
    palette.save(buf, "PNG")
    cases = {  # cell -> top-left pixel after conversion
        "gray": (_png(np.full((2, 2), 77, np.uint8)), [77, 77, 77]),
        "palette": (buf.getvalue(), [250, 120, 5]),
        # on white: round((c * a + 255 * (255 - a)) / 255) = (227, 177, 127) for a = 128
        "rgba": (_png(np.full((2, 2, 4), (200, 100, 0, 128), np.uint8)), [227, 177, 127]),
        "clear": (_png(np.full((2, 2, 4), (0, 0, 0, 0), np.uint8)), [255, 255, 255]),
        "la": (_png(np.full((2, 2, 2), (60, 51), np.uint8)), [216, 216, 216]),  # (60*51 + 255*204) / 255 = 216
        # 16-bit: round(v * 255 / 65535): 1000 -> 4 (3.89), 65535 -> 255
        "16bit": (_png(np.array([[1000, 65535]], np.uint16)), [4, 4, 4]),
    }
    rows = [{"prompt": name, "answer": "1", "images": "data:image/png;base64," + base64.b64encode(b).decode()}
            for name, (b, _) in cases.items()]
    problems, report = load_problems(_jsonl(tmp_path / "c.jsonl", rows))
    assert {p.prompt: _pixels(p)[0] for p in problems} == {k: v for k, (_, v) in cases.items()}
    sixteen = problems[-1].images[0].pixels
    assert sixteen.dtype == np.uint8 and sixteen[0, 1].tolist() == [255, 255, 255]
    assert sum(report["images"]["converted"].values()) == 6 and report["images"]["converted"]["L"] == 1


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[0, 0] = 255  # the top-left pixel
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored rotated: displayed after a 90 degree clockwise turn
    (tmp_path / "r.png").write_bytes(_png(arr, exif=exif))
    problems, _ = load_problems(_jsonl(tmp_path / "r.jsonl", [{"prompt": "r", "answer": "1", "image": "r.png"}]))
    px = problems[0].images[0].pixels
    assert px.shape == (4, 2, 3) and px[0, 1].tolist() == [255, 255, 255]  # top-left went to the top-right


def test_oversized_images_are_shrunk_counted_and_logged_once(tmp_path, caplog):
    (tmp_path / "wide.png").write_bytes(_png(_rgb(50, h=30, w=100)))
    (tmp_path / "tall.jpg").write_bytes(_jpeg_bytes(_rgb(200, h=90, w=40)))
    path = _jsonl(tmp_path / "big.jsonl", [{"prompt": "w", "answer": "1", "image": "wide.png"},
                                          {"prompt": "t", "answer": "2", "image": "tall.jpg"},
                                          {"prompt": "s", "answer": "3", "image": "wide.png"}])
    with caplog.at_level(logging.WARNING, logger="rftkit.tasks"):
        problems, report = load_problems(path, max_image_size=20)
    assert [p.images[0].size for p in problems] == [(6, 20), (20, 9), (6, 20)]  # aspect kept: 30*0.2, 40*20/90
    assert abs(int(problems[1].images[0].pixels.mean()) - 200) <= 2
    assert report["images"]["resized"] == 3
    logged = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(logged) == 1 and "big.jsonl: row 1: an image of 100x30 (width x height) resized to 20x6" in logged[0]
    problems, report = load_problems(path, max_image_size=None)
    assert problems[0].images[0].size == (30, 100) and report["images"]["resized"] == 0
    assert load_problems(path)[0][0].images[0].size == (30, 100)  # under the default 512
    with pytest.raises(DatasetError, match="max_image_size must be a positive integer"):
        load_problems(path, max_image_size=0)


def _jpeg_bytes(arr) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


BAD = [  # cell, the message after "field 'images'"
    ("img/nope.png", r": cannot read 'img/nope.png': file not found \(looked for .*img/nope\.png\)"),
    ("img", r": cannot read 'img': a folder, not a file"),
    ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\ntruncated").decode(),
     r": cannot read the data URL: corrupt or unreadable image \(OSError: Truncated File Read\)"),
    ("data:image/png;base64," + base64.b64encode(b"hello").decode(), r": cannot read the data URL: not an image"),
    ("data:image/png;base64,@@@", r": the data URL's base64 does not decode"),
    ("https://example.com/a.png", r": 'https://example.com/a.png' is a URL; images are not downloaded"),
    (5, r": expected an image path, bytes, a \{'bytes', 'path'\} dict or a PIL image \(or a list of them\), got int"),
    ({"url": "x"}, r": an image dict holds 'bytes' or 'path'"),
    (["ok.png", None], r": image 2 of 2: expected an image path, .*got NoneType"),
]


@pytest.mark.parametrize("cell,message", BAD)
def test_bad_images_are_row_errors_naming_file_row_and_field(tmp_path, cell, message):
    (tmp_path / "img").mkdir()
    (tmp_path / "ok.png").write_bytes(_png(_rgb(1)))
    path = _jsonl(tmp_path / "vqa.jsonl", [{"prompt": "a", "answer": "1", "image": "ok.png"},
                                           {"prompt": "b", "answer": "2", "images": cell}])
    with pytest.raises(DatasetError, match=r"vqa\.jsonl: row 2 \(line 2\): field 'images'" + message):
        load_problems(path)
    problems, report = load_problems(path, on_error="skip")
    assert [p.prompt for p in problems] == ["a"] and report["skipped_total"] == 1


def test_truncated_file_and_mapped_column_errors(tmp_path):
    good = _png(_rgb(1, h=40, w=40))
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    path = _jsonl(tmp_path / "v.jsonl", [{"prompt": "a", "answer": "1", "pic": "cut.png"}])
    with pytest.raises(DatasetError, match=r"v\.jsonl: row 1 \(line 1\): field 'images' \(column 'pic'\): cannot "
                                           r"read 'cut.png': corrupt or unreadable image"):
        load_problems(path, columns={"prompt": "prompt", "image": "pic"})
    with pytest.raises(DatasetError, match=r"field 'images' \(column 'photo'\): missing column 'photo'"):
        load_problems(path, columns={"prompt": "prompt", "images": "photo"})
    problems, _ = load_problems(path, columns={"prompt": "prompt", "images": None, "meta": ["pic"]})
    assert problems[0].images == () and problems[0].meta == {"pic": "cut.png"}


def test_text_only_datasets_are_unchanged_and_need_no_pillow(tmp_path, monkeypatch):
    rows = [{"prompt": f"{i}+{i}", "answer": str(2 * i)} for i in range(20)]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now fails: no image row may need it
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    problems, report = load_problems(path)
    assert [(p.prompt, p.answer, p.images) for p in problems] == [(r["prompt"], r["answer"], ()) for r in rows]
    assert set(report) == {"skipped", "skipped_total", "first_errors", "errors"}  # no images entry
    held = [p.prompt for p in DatasetTask(path=path, test_fraction=0.3).rows("test")]
    # the split hashes Problem.key, which is the prompt itself without images: the same split as before
    assert held == [r["prompt"] for r in rows if zlib.crc32(f"0\0{r['prompt']}".encode()) / 2**32 < 0.3] and held
    img = _jsonl(tmp_path / "i.jsonl", [{"prompt": "a", "answer": "1", "image": "x.png"}])
    with pytest.raises(DatasetError, match=r"i\.jsonl: column 'image' holds images; reading them needs Pillow: "
                                           r"pip install 'rftkit\[vision\]'"):
        load_problems(img)


def test_same_prompt_with_different_images_is_split_by_image(tmp_path):
    rows = [{"prompt": "how many?", "answer": "1",
             "image": "data:image/png;base64," + base64.b64encode(_png(_rgb(i))).decode()} for i in range(40)]
    task = DatasetTask(path=_jsonl(tmp_path / "s.jsonl", rows), test_fraction=0.5)
    train, test = task.rows("train"), task.rows("test")
    assert len(train) + len(test) == 40 and train and test  # a prompt-only hash would put all on one side
    assert not {p.key for p in train} & {p.key for p in test}


def test_prompt_length_counts_image_tokens(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(_rgb(1)))
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "abc", "answer": "1", "images": ["a.png", "a.png"]},
                                         {"prompt": "abcd", "answer": "2"}])
    assert CHAR_IMAGE_TOKENS == VisionConfig().n_tokens == 16
    problems, _ = load_problems(path)
    assert [char_tokens(p) for p in problems] == [1 + 3 + 2 * 16, 1 + 4]
    with pytest.raises(DatasetError, match=r"row 1 \(line 1\): field 'prompt': 36 tokens; at most 35"):
        load_problems(path, max_prompt_tokens=35)
    tok = CharTokenizer()
    tok.image_tokens = 4  # a built-in VLM with 4 tokens per image: measured as the rollout encodes
    problems, _ = load_problems(path, max_prompt_tokens=12, count_tokens=functools.partial(_n_ids, tok))
    assert len(problems) == 2  # bos + 2 * 4 + 3 = 12
    with pytest.raises(DatasetError, match=r"p\.jsonl: row 1 \(line 1\): .*has images, but the model is text-only"):
        load_problems(path, max_prompt_tokens=99, count_tokens=functools.partial(_n_ids, CharTokenizer()))


def _n_ids(tok, problem) -> int:
    return len(problem_prompt_ids(tok, problem))
