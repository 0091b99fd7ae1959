"""Input files the CLI cannot use end with a one-line error and exit code 2, never a
traceback: a CSV that is not UTF-8, a field over the csv module's size limit, rows longer
than the header, a value that looks like console markup, an image that is a
decompression bomb or is broken. Run as a real subprocess, the way a user runs it."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from xai_sandbox.datasets import load_german_credit

CLI = [sys.executable, "-m", "xai_sandbox.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "80"}, timeout=600)


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The single line the command printed, checked to be an error and no traceback."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def explain_csv(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run("explain", "--model", "german-credit-lightgbm", "--method", "tree_shap",
               "--csv", str(path), "--out", str(tmp / "out"), cwd=tmp)


def explain_image(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run("explain", "--model", "efficientnet-lite0", "--method", "grad_cam",
               "--image", str(path), "--out", str(tmp / "out"), cwd=tmp)


def credit_rows(path: Path, edit: dict[str, str] | None = None, extra: list[str] | None = None
                ) -> Path:
    data = load_german_credit()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(data.schema.names)
        row = {**data.rows[0], **(edit or {})}
        writer.writerow([*(row[n] for n in data.schema.names), *(extra or [])])
    return path


def png(path: Path, width: int, height: int) -> Path:
    """A complete one-bit PNG of ``width`` x ``height`` black pixels, written a row at a
    time: a huge image in a file of a few hundred kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)   # filter type 0, then the packed bits
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------- CSV
def test_a_csv_that_is_not_utf8(tmp_path):
    path = credit_rows(tmp_path / "latin1.csv")
    path.write_bytes(path.read_bytes().replace(b"A11", "Ä11".encode("latin-1"), 1))
    line = one_line_error(explain_csv(path, tmp_path))
    assert line.startswith("error: --csv: must be UTF-8 text (byte 0xc4 is not)")


def test_a_field_over_the_csv_size_limit(tmp_path):
    path = credit_rows(tmp_path / "huge.csv",
                       edit={"purpose": "x" * (csv.field_size_limit() + 10)})
    line = one_line_error(explain_csv(path, tmp_path))
    assert line.startswith("error: --csv: must be a CSV file (row 0: field larger than "
                           "field limit")


def test_a_nul_byte_in_the_csv_is_named_escaped(tmp_path):
    path = credit_rows(tmp_path / "nul.csv", edit={"purpose": "A4\x003"})
    line = one_line_error(explain_csv(path, tmp_path))
    assert line.startswith("error: rows[0].purpose: must be one of the categories")
    assert line.endswith("got 'A4\\x003'")


def test_a_row_longer_than_the_header(tmp_path):
    line = one_line_error(explain_csv(credit_rows(tmp_path / "long.csv", extra=["1"]),
                                      tmp_path))
    assert line.startswith("error: --csv: row 0 has more fields than the header")


def test_a_utf8_byte_order_mark_is_read(tmp_path):
    path = credit_rows(tmp_path / "bom.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    out = explain_csv(path, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_value_that_looks_like_markup_is_shown_as_text(tmp_path):
    path = credit_rows(tmp_path / "markup.csv", edit={"checking_status": "[/red]"})
    line = one_line_error(explain_csv(path, tmp_path))
    assert "rows[0].checking_status: must be one of the categories" in line
    assert line.endswith("got '[/red]'")


# ---------------------------------------------------------------------- images
@pytest.mark.parametrize("side", [30_000, 10_000])  # PIL's error, and its warning
def test_an_image_that_is_a_decompression_bomb(tmp_path, side):
    path = png(tmp_path / "bomb.png", side, side)
    data = path.read_bytes()
    assert len(data) < 1_000_000
    # A complete image: its pixel stream inflates to every row.
    idat = data.index(b"IDAT")
    stream = data[idat + 4: idat + 4 + struct.unpack(">I", data[idat - 4:idat])[0]]
    assert len(zlib.decompress(stream)) == side * (1 + (side + 7) // 8)
    line = one_line_error(explain_image(path, tmp_path))
    assert line.startswith(f"error: --image: must have at most {Image.MAX_IMAGE_PIXELS} "
                           "pixels")


def test_a_truncated_image(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (300, 300), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    line = one_line_error(explain_image(path, tmp_path))
    assert line.startswith("error: --image: must be a readable image file")
