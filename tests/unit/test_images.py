"""Tests for the image pipeline (vlmserve.images and its helper modules).

Every image is generated here with Pillow or built byte by byte; nothing is
read from disk except files the tests write to tmp_path.
"""

from __future__ import annotations

import base64
import io
import math
import random
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError, ImageTooLargeError
from vlmserve.images import (
    CropRegion,
    decode_data_uri,
    image_grid,
    image_token_count,
    load_image_file,
    prepare_image,
)
from vlmserve.images.containers import gif_frame_count, tiff_frame_count
from vlmserve.types import PreparedImage

RED, GREEN, BLUE, WHITE, BLACK = (220, 30, 30), (30, 200, 40), (30, 40, 210), (255,) * 3, (0,) * 3


# --- helpers -----------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def pixel(p: PreparedImage, x: int, y: int) -> tuple[int, int, int]:
    i = (y * p.width + x) * 3
    return tuple(p.rgb[i : i + 3])


def src_pixel(p: PreparedImage, x: int, y: int) -> tuple[int, int, int]:
    """The prepared pixel over the centre of pixel (x, y) of the region the model saw
    (the upright picture or its crop): every picture is resized by Qwen's rule."""
    left, top, right, bottom = p.geometry.crop_box
    ox = min(p.width - 1, int((x + 0.5) * p.width / (right - left)))
    oy = min(p.height - 1, int((y + 0.5) * p.height / (bottom - top)))
    return pixel(p, ox, oy)


CELL = 64  # colour-mode tests draw each test pixel as a CELL x CELL block


def cells(im: Image.Image) -> Image.Image:
    """``im`` with every pixel a CELL x CELL block, so resizing keeps block centres exact."""
    return im.resize((im.width * CELL, im.height * CELL), Image.Resampling.NEAREST)


def cell(p: PreparedImage, x: int, y: int) -> tuple[int, int, int]:
    return src_pixel(p, x * CELL + CELL // 2, y * CELL + CELL // 2)


def near(got: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got, want, strict=True))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels but carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def tiny_frame_gif(n_frames: int) -> bytes:
    """A GIF of ``n_frames`` 1x1 frames, written by hand (about 15 bytes a frame)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    # Image descriptor at (0, 0) size 1x1, no local palette; LZW min code size 2;
    # one 2-byte sub-block holding clear(4), index 0, end(5) as 3-bit codes; terminator.
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * n_frames + b"\x3b"


def peak_python_allocation(fn) -> int:
    """Peak bytes allocated by Python while ``fn()`` runs (it must raise)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tol"),
    [
        ("JPEG", {"quality": 95}, 12),
        ("PNG", {}, 0),
        ("WEBP", {"quality": 95}, 12),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("GIF", {}, 12),  # palette quantization
    ],
)
def test_each_format_decodes_to_size_and_colour(fmt, params, tol):
    data = encode(Image.new("RGB", (64, 48), RED), fmt, **params)
    p = prepare_image(data)
    assert (p.width, p.height) == (320, 224)  # Qwen's floor: 64 tokens at least (10 x 7)
    assert len(p.rgb) == 320 * 224 * 3
    assert p.geometry.stored_size == (64, 48)
    assert near(src_pixel(p, 10, 10), RED, tol)
    assert near(src_pixel(p, 63, 47), RED, tol)


def test_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in (RED, BLUE, GREEN)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    p = prepare_image(data)
    assert p.geometry.stored_size == (40, 30)
    assert near(src_pixel(p, 20, 15), RED)


def test_multipage_tiff_uses_the_first_page():
    pages = [Image.new("RGB", (40, 30), c) for c in (GREEN, RED)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert near(src_pixel(prepare_image(data), 5, 5), GREEN, 0)


def test_heic_decodes_when_pillow_heif_can_write_it():
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed")
    pillow_heif.register_heif_opener()
    try:
        data = encode(Image.new("RGB", (64, 48), RED), "HEIF", quality=95)
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        pytest.skip(f"this pillow-heif build cannot encode HEIC: {exc}")
    assert data[4:12] == b"ftypheic"
    p = prepare_image(data)
    assert p.geometry.stored_size == (64, 48)
    assert near(src_pixel(p, 32, 24), RED, 16)


def test_heic_orientation_is_applied_once():
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed")
    pillow_heif.register_heif_opener()
    stored = Image.fromarray(np.ascontiguousarray(stored_as(upright_test_card(), 6)))
    exif = Image.Exif()
    exif[0x0112] = 6
    try:
        data = encode(stored, "HEIF", quality=95, exif=exif.tobytes())
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        pytest.skip(f"this pillow-heif build cannot encode HEIC: {exc}")
    # libheif stores the rotation as a transform and applies it while decoding;
    # the EXIF tag must not rotate the picture a second time.
    p = prepare_image(data)
    assert p.geometry.upright_size == (60, 40)
    assert near(src_pixel(p, 5, 5), RED, 20)
    assert near(src_pixel(p, 55, 5), GREEN, 20)


def test_formats_outside_the_list_are_refused():
    # Pillow reads ICO and PCX, but they are not in our list: the parser never runs.
    for fmt in ("ICO", "PCX"):
        data = encode(Image.new("RGB", (32, 32), RED), fmt)
        with pytest.raises(ImageError, match="unrecognized format"):
            prepare_image(data)


# --- colour modes ---------------------------------------------------------------------------


def test_rgba_is_composited_over_white():
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (255, 0, 0, 128)])
    p = prepare_image(encode(cells(im), "PNG"))
    assert cell(p, 0, 0) == (255, 0, 0)
    assert cell(p, 1, 0) == WHITE  # fully transparent: white, whatever its colour
    assert near(cell(p, 2, 0), (255, 127, 127), 2)  # half red over white


def test_palette_with_and_without_transparency():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.putdata([0, 1])
    opaque = prepare_image(encode(cells(im), "PNG"))
    assert cell(opaque, 0, 0) == BLACK
    assert cell(opaque, 1, 0) == (10, 200, 30)
    see_through = prepare_image(encode(cells(im), "PNG", transparency=0))
    assert cell(see_through, 0, 0) == WHITE  # palette entry 0 is transparent
    assert cell(see_through, 1, 0) == (10, 200, 30)


def test_la_grey_with_alpha():
    im = Image.new("LA", (2, 1))
    im.putdata([(0, 0), (0, 255)])
    p = prepare_image(encode(cells(im), "PNG"))
    assert cell(p, 0, 0) == WHITE
    assert cell(p, 1, 0) == BLACK


def test_cmyk():
    im = Image.new("CMYK", (3, 1))
    im.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    p = prepare_image(encode(cells(im), "TIFF"))
    assert cell(p, 0, 0) == WHITE
    assert cell(p, 1, 0) == (0, 255, 255)  # pure cyan
    assert cell(p, 2, 0) == BLACK


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535, 4096]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    data = encode(cells(im), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    p = prepare_image(data)
    assert [cell(p, x, 0) for x in range(4)] == [(0,) * 3, (128,) * 3, (255,) * 3, (16,) * 3]


def test_32_bit_int_and_float_greys():
    ints = Image.fromarray(np.array([[0, 32768, 65535, 100_000]], dtype=np.int32))
    assert ints.mode == "I"
    p = prepare_image(encode(cells(ints), "TIFF"))
    assert [cell(p, x, 0)[0] for x in range(4)] == [0, 128, 255, 255]  # 16-bit range, clipped
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert floats.mode == "F"
    p = prepare_image(encode(cells(floats), "TIFF"))
    assert [cell(p, x, 0)[0] for x in range(3)] == [0, 128, 255]


def test_l_and_bilevel():
    grey = prepare_image(encode(Image.new("L", (4, 4), 77), "PNG"))
    assert cell(grey, 1, 1) == (77, 77, 77)
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 255])
    p = prepare_image(encode(cells(bilevel), "PNG"))
    assert (cell(p, 0, 0), cell(p, 1, 0)) == (BLACK, WHITE)


# --- EXIF orientation -----------------------------------------------------------------------


def upright_test_card() -> np.ndarray:
    """60 x 40, blue, with a red block top-left and a green block top-right."""
    card = np.zeros((40, 60, 3), dtype=np.uint8)
    card[:, :] = BLUE
    card[0:14, 0:20] = RED
    card[0:14, 40:60] = GREEN
    return card


def stored_as(card: np.ndarray, orientation: int) -> np.ndarray:
    """How a camera stores ``card`` when it writes this EXIF Orientation value.

    From the EXIF spec's wording (where stored row 0 and column 0 appear on the
    upright picture), written with numpy rather than Pillow's transpose table.
    """
    u = card
    return {
        1: u,
        2: u[:, ::-1],  # row 0 top, column 0 right
        3: u[::-1, ::-1],  # row 0 bottom, column 0 right
        4: u[::-1, :],  # row 0 bottom, column 0 left
        5: u.transpose(1, 0, 2),  # row 0 left, column 0 top
        6: np.rot90(u, 1),  # row 0 right, column 0 top
        7: u[::-1, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 bottom
        8: np.rot90(u, -1),  # row 0 left, column 0 bottom
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_makes_the_picture_upright(orientation):
    stored = Image.fromarray(np.ascontiguousarray(stored_as(upright_test_card(), orientation)))
    if orientation >= 5:
        assert stored.size == (40, 60)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = prepare_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert (p.width, p.height) == (320, 224)  # 60 x 40 upright, raised to 64+ tokens
    assert p.geometry.upright_size == (60, 40)
    assert p.geometry.orientation == (orientation if orientation > 1 else 1)
    assert near(src_pixel(p, 5, 5), RED, 20)
    assert near(src_pixel(p, 55, 5), GREEN, 20)
    assert near(src_pixel(p, 30, 30), BLUE, 20)


def test_crop_is_applied_after_orientation():
    stored = Image.fromarray(np.ascontiguousarray(stored_as(upright_test_card(), 6)))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "PNG", exif=exif.tobytes())
    # The top-left 20 x 14 of the *upright* picture is the red block.
    p = prepare_image(data, crop=CropRegion(0.0, 0.0, 20 / 60, 14 / 40))
    assert near(pixel(p, 2, 2), RED, 0)
    assert near(pixel(p, p.width - 3, p.height - 3), RED, 0)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data"
def test_broken_exif_is_ignored():
    data = encode(Image.new("RGB", (30, 20), RED), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    p = prepare_image(data)
    assert p.geometry.upright_size == (30, 20)
    assert p.geometry.orientation == 1


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "options", "expected"),
    [
        ((4000, 3000), ImageOptions(), (1024, 768)),
        ((3000, 4000), ImageOptions(), (768, 1024)),
        ((500, 300), ImageOptions(), (512, 288)),  # sides to multiples of 32
        ((500, 300), ImageOptions(upscale=True), (1024, 608)),  # 1024 x 614, then 32s
        ((1024, 10), ImageOptions(), (2592, 32)),  # Qwen's 64-token floor widens it
        ((2000, 1000), ImageOptions(max_edge=512), (512, 256)),
    ],
)
def test_longest_edge(size, options, expected):
    p = prepare_image(encode(Image.new("L", size, 90), "PNG"), options)
    assert (p.width, p.height) == expected
    assert pixel(p, 0, 0) == (90, 90, 90)


def test_large_jpeg_is_scaled_down_with_its_colour():
    data = encode(Image.new("RGB", (4000, 3000), GREEN), "JPEG", quality=90)
    p = prepare_image(data)
    assert (p.width, p.height) == (1024, 768)
    assert near(pixel(p, 512, 384), GREEN)


def test_crop_zooms_the_centre_quarter():
    # 2000 x 2000: blue frame; the centre quarter (500..1500) holds four colours.
    canvas = np.zeros((2000, 2000, 3), dtype=np.uint8)
    canvas[:, :] = BLUE
    canvas[500:1000, 500:1000] = RED
    canvas[500:1000, 1000:1500] = GREEN
    canvas[1000:1500, 500:1000] = WHITE
    canvas[1000:1500, 1000:1500] = BLACK
    data = encode(Image.fromarray(canvas), "PNG")
    p = prepare_image(data, crop=CropRegion(0.25, 0.25, 0.5, 0.5))
    assert (p.width, p.height) == (1024, 1024)  # 1000 px enlarged to max_edge: a zoom
    assert pixel(p, 256, 256) == RED
    assert pixel(p, 768, 256) == GREEN
    assert pixel(p, 256, 768) == WHITE
    assert pixel(p, 768, 768) == BLACK
    # The corners hold the quarter's own colours: none of the blue frame is left.
    assert (pixel(p, 0, 0), pixel(p, 1023, 0)) == (RED, GREEN)
    assert (pixel(p, 0, 1023), pixel(p, 1023, 1023)) == (WHITE, BLACK)


def test_crop_enlarges_a_small_region_even_without_upscale():
    data = encode(Image.new("RGB", (500, 300), RED), "PNG")
    p = prepare_image(data, ImageOptions(upscale=False), crop=CropRegion(0.0, 0.0, 0.1, 0.1))
    assert (p.width, p.height) == (1024, 608)  # 50 x 30 region, 1024 x 614, then 32s


@pytest.mark.parametrize(
    "region",
    [
        (-0.1, 0.0, 0.5, 0.5),
        (0.0, 1.0, 0.5, 0.5),
        (0.0, 0.0, 0.0, 0.5),
        (0.0, 0.0, 0.5, 1.5),
        (0.5, 0.0, 0.6, 0.5),
        (0.0, 0.7, 0.5, 0.31),
        (math.nan, 0.0, 0.5, 0.5),
        (0.0, 0.0, math.inf, 0.5),
        (True, 0.0, 0.5, 0.5),
        ("0", 0.0, 0.5, 0.5),
    ],
)
def test_invalid_crop_regions_are_refused(region):
    with pytest.raises(ImageError, match="crop"):
        CropRegion(*region)


def test_crop_region_of_less_than_a_pixel_is_refused():
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")
    with pytest.raises(ImageError, match="smaller than one pixel"):
        prepare_image(data, crop=CropRegion(0.5, 0.5, 0.001, 0.001))


def test_crop_touching_the_edges_is_accepted():
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")
    p = prepare_image(data, crop=CropRegion(0.1, 0.7, 0.9, 0.3))
    assert (p.width, p.height) == (1024, 352)  # 1024 x 341, then 32s
    # Fractions computed from pixels may add up to a hair over 1.
    x, w = 3 * (1 / 91), 88 * (1 / 91)
    assert x + w > 1.0
    assert prepare_image(data, crop=CropRegion(x, 0.0, w, 1.0)).height == 1024


# --- content hash ---------------------------------------------------------------------------


def test_same_pixels_in_lossless_containers_hash_alike():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(256, 320, 3), dtype=np.uint8)  # 80 tokens: kept
    im = Image.fromarray(pixels)
    hashes = {
        fmt: prepare_image(encode(im, fmt, **params)).content_hash
        for fmt, params in (("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {}))
    }
    assert len(set(hashes.values())) == 1, hashes
    assert hashes["PNG"] == PreparedImage.hash_pixels(pixels.tobytes(), 320, 256)

    changed = pixels.copy()
    changed[11, 20, 1] ^= 1
    assert prepare_image(encode(Image.fromarray(changed), "PNG")).content_hash != hashes["PNG"]


# --- refusing bad input ---------------------------------------------------------------------


def test_one_byte_and_empty_input():
    with pytest.raises(ImageError, match="not an image") as info:
        prepare_image(b"\x89")
    assert type(info.value) is ImageError
    with pytest.raises(ImageError, match="empty"):
        prepare_image(b"")
    with pytest.raises(ImageError, match="must be bytes"):
        prepare_image("not bytes")  # type: ignore[arg-type]


def test_truncated_jpeg():
    noise = np.random.default_rng(3).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated or corrupt JPEG image") as info:
        prepare_image(data[: len(data) // 2])
    assert type(info.value) is ImageError


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image") as info:
        load_image_file(path)
    assert str(path) in str(info.value)


def test_header_claiming_50000_by_50000_pixels_is_refused_without_decoding():
    data = png_header_only(50_000, 50_000)
    assert len(data) < 200
    peak = peak_python_allocation(lambda: pytest.raises(ImageTooLargeError, prepare_image, data))
    assert peak < 64 * 1024 * 1024
    with pytest.raises(ImageTooLargeError, match="50000x50000"):
        prepare_image(data)


def test_pillow_bomb_warning_does_not_come_first():
    # 10,000 x 10,000 is over Pillow's own warning threshold (~89 MP) and under its
    # error threshold: Image.open would warn. We answer with our limit instead.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError, match="10000x10000"):
            prepare_image(png_header_only(10_000, 10_000))


def gif_with_first_frame(width: int, height: int) -> bytes:
    """A GIF with a 1x1 canvas whose first frame claims width x height."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def test_pillow_bomb_checks_inside_plugins_become_our_error():
    # Pillow grows a GIF's canvas to its first frame and checks that size itself.
    with pytest.raises(ImageTooLargeError):
        prepare_image(gif_with_first_frame(20_000, 20_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError):
            prepare_image(gif_with_first_frame(10_000, 10_000))


def test_gif_with_10000_frames_is_refused_with_bounded_memory():
    data = tiny_frame_gif(10_000)
    assert Image.open(io.BytesIO(data)).n_frames == 10_000  # the file is what it claims
    peak = peak_python_allocation(lambda: pytest.raises(ImageTooLargeError, prepare_image, data))
    assert peak < 64 * 1024 * 1024
    with pytest.raises(ImageTooLargeError, match="more than 1000 frames"):
        prepare_image(data)
    p = prepare_image(data, ImageOptions(max_frames=10_000))  # at the limit: first frame
    assert (p.geometry.stored_size, pixel(p, 0, 0)) == ((1, 1), BLACK)


def test_frame_walkers_agree_with_pillow():
    gif = tiny_frame_gif(300)
    assert gif_frame_count(gif, 10**6) == Image.open(io.BytesIO(gif)).n_frames == 300
    assert gif_frame_count(gif, 10) == 11  # stops one past the limit
    pages = [Image.new("L", (2, 2), i) for i in range(7)]
    tiff = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert tiff_frame_count(tiff, 10**6) == Image.open(io.BytesIO(tiff)).n_frames == 7
    assert tiff_frame_count(tiff, 3) == 4
    with pytest.raises(ImageTooLargeError, match="more than 6 frames"):
        prepare_image(tiff, ImageOptions(max_frames=6))
    assert prepare_image(tiff, ImageOptions(max_frames=7)).geometry.stored_size == (2, 2)


def test_tiff_with_a_looping_ifd_chain_terminates():
    data = bytearray(encode(Image.new("L", (2, 2), 9), "TIFF"))
    (first_ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first_ifd)
    struct.pack_into("<I", data, first_ifd + 2 + entries * 12, first_ifd)  # next IFD = itself
    assert tiff_frame_count(bytes(data), 10**6) == 1


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64), RED), "BMP")  # 12 kB
    with pytest.raises(ImageTooLargeError, match="over the limit of 1000 bytes"):
        prepare_image(data, ImageOptions(max_bytes=1000))


def test_pixel_limit():
    data = encode(Image.new("L", (200, 200), 1), "PNG")
    with pytest.raises(ImageTooLargeError, match="200x200"):
        prepare_image(data, ImageOptions(max_pixels=39_999))
    assert prepare_image(data, ImageOptions(max_pixels=40_000)).geometry.stored_size == (200, 200)


def test_file_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "zeros.jpg"
    path.write_bytes(b"\x00" * 5000)  # not an image, but too large is found first
    with pytest.raises(ImageTooLargeError):
        load_image_file(path, ImageOptions(max_bytes=1000))


def test_file_errors(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image_file(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image_file(tmp_path)
    path = tmp_path / "ok.webp"
    path.write_bytes(encode(Image.new("RGB", (20, 10), RED), "WEBP", lossless=True))
    p = load_image_file(str(path), crop=CropRegion(0, 0, 0.5, 1))
    assert (p.width, p.height) == (1024, 1024)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader complains
def test_damaged_files_only_ever_raise_image_errors():
    """Truncations and byte flips of every format: a result or an ImageError, nothing else."""
    rng = random.Random(11)
    noise = np.random.default_rng(5).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    im = Image.fromarray(noise)
    samples = [encode(im, f) for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")]
    samples.append(encode(im, "WEBP", lossless=True))
    outcomes = {"ok": 0, "error": 0}
    for data in samples:
        variants = [data[:n] for n in sorted(rng.sample(range(1, len(data)), 20))]
        for _ in range(30):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            variants.append(bytes(flipped))
        for variant in variants:
            try:
                prepare_image(variant)
                outcomes["ok"] += 1
            except ImageError as exc:
                assert "\n" not in exc.message and exc.message
                outcomes["error"] += 1
    assert outcomes["error"] > 50


# --- data URIs ------------------------------------------------------------------------------


def test_data_uri_good_cases():
    data = encode(Image.new("RGB", (8, 8), RED), "PNG")
    b64 = base64.b64encode(data).decode()
    assert decode_data_uri(f"data:image/png;base64,{b64}", 10_000) == data
    assert decode_data_uri(f"DATA:IMAGE/PNG;BASE64,{b64}", 10_000) == data
    assert decode_data_uri(f"data:image/png;name=a.png;base64,{b64}", 10_000) == data
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert decode_data_uri(f"data:image/png;base64,{wrapped}\n", 10_000) == data
    assert decode_data_uri(f"data:image/png;base64,{b64.rstrip('=')}", 10_000) == data
    prepared = prepare_image(decode_data_uri(f"data:image/png;base64,{b64}", 10_000))
    assert prepared.geometry.stored_size == (8, 8)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("hello", "malformed data URI"),
        ("data:image/png;base64", "malformed data URI"),
        ("image/png;base64,aGVsbG8=", "malformed data URI"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:;base64,aGVsbG8=", "not an image"),
        ("data:image/png,aGVsbG8=", "base64-encoded"),
        ("data:image/png;base64,", "no image data"),
        ("data:image/png;base64,aGVsb", "invalid base64"),
        ("data:image/png;base64,aGV@bG8=", "invalid base64"),
        ("data:image/png;base64,aGVsbG8é", "invalid base64"),
    ],
)
def test_data_uri_bad_cases(uri, message):
    with pytest.raises(ImageError, match=message) as info:
        decode_data_uri(uri, 10_000)
    assert type(info.value) is ImageError


def test_data_uri_size_is_checked_before_decoding():
    # Not valid base64 at all, but too long: the size check answers first.
    with pytest.raises(ImageTooLargeError):
        decode_data_uri("data:image/png;base64," + "@" * 4000, 1000)
    exact = base64.b64encode(b"x" * 1000).decode()
    assert len(decode_data_uri("data:image/png;base64," + exact, 1000)) == 1000
    with pytest.raises(ImageTooLargeError):
        decode_data_uri("data:image/png;base64," + exact, 999)


# --- vision token count ---------------------------------------------------------------------


def f32(value: float) -> float:
    """Round to the nearest float32, as the C++ does after each operation."""
    return struct.unpack("f", struct.pack("f", value))[0]


def reference_grid(width, height, patch=16, merge=2, min_tokens=8, max_tokens=4096):
    """llama.cpp's rule, written independently of the module (no numpy).

    Each float operation is done in float64 and rounded to float32; for +, *, /
    and sqrt of float32 operands that gives exactly the float32 result.
    """
    align = patch * merge
    lo, hi = min_tokens * align * align, max_tokens * align * align

    def q(v):  # v / align in float32
        return f32(f32(v) / align)

    def round_by(v):
        return math.floor(q(v) + 0.5) * align  # half away from zero, v > 0

    h_bar, w_bar = max(align, round_by(height)), max(align, round_by(width))
    if h_bar * w_bar > hi:
        beta = f32(math.sqrt(f32(f32(height * width) / f32(hi))))
        h_bar = max(align, math.floor(q(f32(height / beta))) * align)
        w_bar = max(align, math.floor(q(f32(width / beta))) * align)
    elif h_bar * w_bar < lo:
        beta = f32(math.sqrt(f32(f32(lo) / f32(height * width))))
        h_bar = math.ceil(q(f32(height * beta))) * align
        w_bar = math.ceil(q(f32(width * beta))) * align
    return w_bar // align, h_bar // align


def test_token_count_headline_cases():
    assert image_token_count(768, 768) == 576  # 24 x 24
    assert image_grid(768, 768) == (24, 24)
    assert image_token_count(1024, 512) == 512  # 32 x 16
    assert image_grid(1024, 512) == (32, 16)
    assert image_token_count(1024, 768) == 768
    # Over the 4096-token ceiling: 96 x 54 blocks shrink to 85 x 48.
    assert image_grid(3072, 1728) == (85, 48)


def test_token_count_bounds():
    assert image_grid(10, 10) == reference_grid(10, 10) == (3, 3)  # enlarged to >= 8 tokens
    assert image_token_count(1, 1) >= 8
    assert image_token_count(20_000, 20_000) == 4096
    assert image_token_count(40_000, 30) <= 4096
    assert image_token_count(640, 480, min_tokens=1024) >= 1024
    assert image_token_count(1920, 1080, max_tokens=256) <= 256
    # Qwen2.5-VL geometry (14 px patches) goes through the same rule.
    assert image_grid(448, 448, patch_size=14) == (16, 16)


def test_token_count_matches_reference_rule():
    sizes = [(w, h) for w in range(1, 4000, 97) for h in range(1, 4000, 89)]
    sizes += [(w, h) for w in (1, 2, 31, 32, 33, 47, 48, 49) for h in range(1, 300, 7)]
    # Half-way cases of the rounding: x.5 blocks round away from zero.
    sizes += [(16, 16), (48, 48), (1040, 1040), (2000, 655)]
    for w, h in sizes:
        assert image_grid(w, h) == reference_grid(w, h), (w, h)


def test_token_count_uses_float32_like_llama_cpp():
    # 10 x 45 is 450 pixels; beta = sqrt(8192 / 450) = 64/15 exactly, so in exact
    # arithmetic 45 * beta = 192 = 6 blocks. In float32, which is what the C++
    # computes, beta rounds up and ceil() gives 7 blocks (checked against the
    # C++ function compiled with g++). Plain float64 math happens to say 6.
    beta = math.sqrt(8192 / 450)
    assert math.ceil(45 * beta / 32) == 6
    assert image_grid(10, 45) == reference_grid(10, 45) == (2, 7)
    assert image_token_count(10, 45) == 14


@pytest.mark.parametrize("bad", [0, -5, 2.5, None, True])
def test_token_count_rejects_bad_sizes(bad):
    with pytest.raises(ImageError):
        image_token_count(bad, 100)
