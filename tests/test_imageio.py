"""Image IO: every awkward input decodes to 8-bit RGB or fails with a recorded reason."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from curation import reasons
from curation.imageio import ImageReadError, decode_rgb, probe

LIMIT = 10_000_000


def _rgb(h=60, w=90, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_pil(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


@pytest.mark.parametrize("suffix,kw", [(".png", {}), (".jpg", {"quality": 95}), (".tif", {}), (".webp", {"lossless": True})])
def test_formats_roundtrip(tmp_path, suffix, kw):
    arr = _rgb()
    p = _save_pil(tmp_path / f"a{suffix}", arr, **kw)
    out = decode_rgb(p, LIMIT)
    assert out.shape == (60, 90, 3) and out.dtype == np.uint8
    if suffix != ".jpg":
        assert np.array_equal(out, arr)  # lossless formats come back exactly, in RGB order


def test_16bit_png_scaled_to_8bit(tmp_path):
    arr16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    rgb16 = np.dstack([arr16, arr16 // 2, np.full_like(arr16, 65535)])
    p = tmp_path / "a16.png"
    cv2.imwrite(str(p), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    out = decode_rgb(p, LIMIT)
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 0], ((arr16.astype(np.uint32) + 128) // 257).astype(np.uint8))
    assert (out[..., 2] == 255).all()


def test_alpha_composited_over_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top opaque red-ish, bottom fully transparent
    p = _save_pil(tmp_path / "a.png", rgba)
    out = decode_rgb(p, LIMIT)
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[15, 0]) == (255, 255, 255)


def test_greyscale_and_cmyk(tmp_path):
    g = _rgb()[..., 0]
    out = decode_rgb(_save_pil(tmp_path / "g.png", g), LIMIT)
    assert out.shape == (60, 90, 3) and np.array_equal(out[..., 1], g)
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    p = tmp_path / "c.jpg"
    cmyk.save(p, quality=95)
    out = decode_rgb(p, LIMIT)
    ref = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert out.shape == (60, 90, 3)
    assert np.abs(out.astype(int) - ref).mean() < 8  # same colours as Pillow's CMYK conversion


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :10] = 255  # white band at the left of the stored pixels
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "r.jpg"
    im.save(p, quality=95, exif=exif.tobytes())
    head = probe(p, LIMIT)
    assert (head.width, head.height, head.orientation) == (40, 100, 6)
    out = decode_rgb(p, LIMIT)
    assert out.shape == (100, 40, 3)
    assert out[:10].mean() > 200 and out[50:].mean() < 30  # band is now on top


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated(tmp_path, fmt):
    p = tmp_path / f"t.{fmt}"
    _save_pil(p, _rgb(200, 200))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT)
    assert e.value.reason == reasons.TRUNCATED


def test_not_an_image_corrupt_and_huge(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"hello, I am text\n" * 10)
    with pytest.raises(ImageReadError) as e:
        probe(p, LIMIT)
    assert e.value.reason == reasons.NOT_AN_IMAGE
    # valid PNG signature, garbage after it
    p = tmp_path / "c.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT)
    assert e.value.reason in (reasons.UNREADABLE, reasons.TRUNCATED)
    # decompression bomb: refused from the header, before any decode
    p = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(p)
    with pytest.raises(ImageReadError) as e:
        probe(p, max_pixels=11_999_999)
    assert e.value.reason == reasons.TOO_MANY_PIXELS
    assert probe(p, max_pixels=12_000_000).pixels == 12_000_000


def test_animated(tmp_path):
    frames = [Image.fromarray(_rgb(seed=i)) for i in range(3)]
    p = tmp_path / "anim.webp"
    frames[0].save(p, save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT)
    assert e.value.reason == reasons.ANIMATED


@pytest.mark.parametrize("h,rows", [(1100, 1024), (50, 7), (64, 16)])
def test_strip_wise_grey_equals_whole_image_cvtcolor(h, rows):
    """to_grey converts strip by strip; across every strip boundary it equals one cv2.cvtColor of
    the whole image (and BGR2GRAY of the BGR image), also for a non-contiguous view."""
    from curation.imageio import to_grey

    rgb = _rgb(h, 37, seed=h)
    whole = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(to_grey(rgb, rows=rows), whole)
    assert np.array_equal(whole, cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY))
    view = rgb[3:, 2:-1]
    assert np.array_equal(to_grey(view, rows=rows), cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_RGB2GRAY))


def test_scores_of_a_tall_image_equal_the_whole_image_reference(tmp_path, paper_cfg):
    """score_one (decode -> strip-wise grey -> strip-wise scores) on an image taller than one grey
    strip equals the reference scores of one whole-image cvtColor, to 1e-9 relative."""
    from curation.purify import score_one
    from curation.scores import reference_scores
    from curation.synth import generate_photo

    rgb = generate_photo(300, 1100, seed=4)  # 1100 rows: two grey strips of 1024
    path = _save_pil(tmp_path / "tall.png", rgb)
    got = score_one(str(path), "tall", paper_cfg["purification"], LIMIT)
    ref = reference_scores(cv2.cvtColor(decode_rgb(path, LIMIT), cv2.COLOR_RGB2GRAY))
    assert (got["height"], got["width"]) == (1100, 300) and not got.get("reject_reason")
    for k in ("exposure_fraction", "laplacian_var", "flat_fraction", "entropy"):
        assert got[k] == pytest.approx(getattr(ref, k), rel=1e-9, abs=1e-12), k
