"""The photo generator: seeded, deterministic, ground truth that matches what is drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnn_ocr.data.photo_sets import KINDS, build_set, generate, load_set


@pytest.fixture(scope="module")
def test_digits(mnist_splits):
    return mnist_splits.test_x[:500], mnist_splits.test_y[:500]


def test_same_seed_same_bytes_other_index_other_photo(project_params, test_digits):
    x, y = test_digits
    a = generate(project_params.photos, x, y, "numbers", 3, megapixels=1.0)
    b = generate(project_params.photos, x, y, "numbers", 3, megapixels=1.0)
    c = generate(project_params.photos, x, y, "numbers", 4, megapixels=1.0)
    assert a.data == b.data and a.lines == b.lines
    assert c.data != a.data


@pytest.mark.parametrize("kind", KINDS)
def test_truth_matches_the_drawn_digits(project_params, test_digits, kind):
    x, y = test_digits
    photo = generate(project_params.photos, x, y, kind, 0, megapixels=1.5)
    img = Image.open(io.BytesIO(photo.data))
    assert img.format == "JPEG" and img.size == photo.size
    gray = np.asarray(img.convert("L"), np.float32)
    n_lines = len(photo.lines)
    assert (n_lines >= 3) if kind == "pages" else n_lines == 1
    for line in photo.lines:
        assert len(line.text) == len(line.boxes) and line.text.isdigit()
        assert (len(line.text) == 1) if kind == "digits" else 3 <= len(line.text) <= 8
        for bx, by, bw, bh in line.boxes:
            assert 0 <= bx and 0 <= by and bx + bw <= photo.size[0] + 2 and by + bh <= photo.size[1] + 2
            inside = gray[by:by + bh, bx:bx + bw]
            ring = gray[max(0, by - bh):by + 2 * bh, max(0, bx - 3 * bw):bx + 4 * bw]
            assert inside.min() < np.median(ring) - 40  # dark ink where the box says a digit is
    tops = [line.box[1] for line in photo.lines]
    assert tops == sorted(tops)  # lines top to bottom


def test_set_is_written_and_read_back(project_params, test_digits, tmp_path):
    x, y = test_digits
    small = project_params.photos.model_copy(update={"sizes": project_params.photos.sizes.model_copy(
        update={"digits": 1, "numbers": 1, "touching": 1, "pages": 0, "heldout": 1}),
        "style": project_params.photos.style.model_copy(update={"megapixels": (1.0, 1.2)})})
    folder = build_set(small, x, y, tmp_path / "photos", workers=1)
    items = load_set(folder)
    assert [i.kind for i in items] == ["digits", "numbers", "touching", "heldout"]
    assert all(i.path.is_file() for i in items)
    again = generate(small, x, y, "touching", 0)
    assert items[2].path.read_bytes() == again.data and items[2].text == again.lines[0].text
    pooled = build_set(small, x, y, tmp_path / "pooled", workers=2)  # two processes write the very same set
    assert sorted(p.name for p in pooled.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert all((pooled / p.name).read_bytes() == p.read_bytes() for p in folder.iterdir())


def test_heldout_uses_its_own_paper(project_params, test_digits):
    x, y = test_digits
    photo = generate(project_params.photos, x, y, "heldout", 0, megapixels=1.0)
    assert tuple(photo.settings["paper"]) in {tuple(c) for c in project_params.photos.heldout_paper.colours}
    tuned = {tuple(c) for c in project_params.photos.paper.colours}
    assert not tuned & {tuple(c) for c in project_params.photos.heldout_paper.colours}
