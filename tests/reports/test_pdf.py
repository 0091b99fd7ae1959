"""The PDF of a real decision report: Chinese text in an embedded CJK font, a loud failure
for a character no font has, and an integrity receipt that is copied out of the PDF's text
and verified by the real ``xai-sandbox audit check-receipt``."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from xai_sandbox.cli import app
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.errors import RenderError, XaiSandboxError
from xai_sandbox.reports.render import (
    RECEIPT_BEGIN,
    RECEIPT_END,
    RECEIPT_WIDTH,
    check_glyphs,
    environment,
    receipt_lines,
    render_html,
    render_pdf,
)
from xai_sandbox.service.demo import DEMO_MODELS
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Store]]:
    """A full report of one decision of the German credit model, made by the real pipeline,
    and its store."""
    store = Store(Settings(data_dir=tmp_path_factory.mktemp("pdf")))
    try:
        decider = Decider(store)
        spec = copy.deepcopy(DEMO_MODELS[0])
        spec["version"] = "3"
        decider.register(spec)
        out = decider.decide(model_id="credit", version="3", subject_id="applicant-pdf",
                             features=credit_models().data.rows[0])
        yield decider.full_report(out.decision_id), store
    finally:
        store.close()


@pytest.fixture(scope="module")
def pdf(decided: tuple[dict[str, Any], Store]) -> PdfReader:
    return PdfReader(io.BytesIO(render_pdf(decided[0])))


def _text(reader: PdfReader) -> str:
    return "\n".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_chinese_text_is_drawn_with_the_embedded_cjk_font(decided, pdf) -> None:
    report, _ = decided
    fonts = {str(f.get_object()["/BaseFont"]) for page in pdf.pages
             for f in page["/Resources"].get("/Font", {}).values()}
    assert any("WenQuanYi" in f for f in fonts), fonts
    text = _flat(_text(pdf))
    zh = [r["text"]["zh"] for r in report["reasons"]["reasons"]]
    assert zh and all(re.search(r"[\u4e00-\u9fff]", t) for t in zh)
    for reason in zh:
        assert _flat(reason) in text


def test_control_and_private_use_characters_print_as_a_replacement(decided) -> None:
    # Text people wrote (an access's purpose, a rationale) may hold them; no font draws
    # them, so they print as U+FFFD instead of failing the whole report.
    report = copy.deepcopy(decided[0])
    report["reasons"]["reasons"][0]["text"]["en"] += " a\x1db\ue000c"
    text = _text(PdfReader(io.BytesIO(render_pdf(report))))
    assert "a\ufffdb\ufffdc" in _flat(text)


def test_a_macros_markup_is_printed_as_markup_and_still_cleaned() -> None:
    # The templates' macros (the console's filters, the LLM audit's numbers) return markup;
    # the environment's finalize must neither escape it a second time nor skip cleaning it.
    template = environment().from_string(
        '{% macro cell(v) %}<td>{{ v }}</td>{% endmacro %}{{ cell(text) }}|{{ text }}')
    assert template.render(text="<b>\x1d") == "<td>&lt;b&gt;\ufffd</td>|&lt;b&gt;\ufffd"


@pytest.mark.parametrize("char", ["\U0001F9EC", "\U00013000"])
def test_a_character_no_font_has_fails_the_render_and_is_named(decided, char) -> None:
    report = copy.deepcopy(decided[0])
    report["reasons"]["reasons"][0]["text"]["zh"] += f" {char}"
    with pytest.raises(RenderError) as caught:
        render_pdf(report)
    message = str(caught.value)
    assert f"U+{ord(char):04X} {char!r}" in message and "1 missing" in message
    assert "WenQuanYi Micro Hei -> /" in message and "DejaVu Sans ->" in message
    assert isinstance(caught.value, XaiSandboxError) and isinstance(caught.value, RuntimeError)


def test_the_check_reads_the_page_text_against_its_own_font_stacks() -> None:
    page = ("<html><head><title>\ue000</title><style>body {{ font-family: {fonts}; }}"
            "</style></head><body><p>批准 &amp; approved&#x2014;ok</p></body></html>")
    check_glyphs(page.format(fonts='"DejaVu Sans", "WenQuanYi Micro Hei"'))  # head skipped
    with pytest.raises(RenderError) as caught:        # no CJK font in the stack
        check_glyphs(page.format(fonts='"DejaVu Sans", "No Such Font Family"'))
    message = str(caught.value)
    assert "U+6279 '批'" in message and "U+51C6 '准'" in message and "2 missing" in message
    assert "No Such Font Family -> not installed (fontconfig substitutes" in message


def _receipt_from_pdf(text: str) -> str:
    """What the report tells a reader to do: take the lines between BEGIN and END and join
    them with every line break and space removed."""
    start, end = text.index(RECEIPT_BEGIN), text.index(RECEIPT_END)
    return _flat(text[start + len(RECEIPT_BEGIN):end])


def _check(receipt: str, pubkey: Path, tmp_path: Path) -> Any:
    path = tmp_path / "receipt.json"
    path.write_text(receipt, encoding="utf-8")
    return CliRunner().invoke(app, ["audit", "check-receipt", str(path), "--pubkey",
                                    str(pubkey)], env={"COLUMNS": "200"})


def test_the_receipt_copied_from_the_pdf_verifies_offline(decided, pdf, tmp_path) -> None:
    report, store = decided
    text = _text(pdf)
    joined = _receipt_from_pdf(text)
    assert json.loads(joined) == report["receipt"]
    assert hashlib.sha256(joined.encode()).hexdigest() in _flat(text)
    pubkey = tmp_path / "log.pub"
    pubkey.write_text("\n".join(v.encode() for v in store.log.verifiers()) + "\n",
                      encoding="utf-8")
    ok = _check(joined, pubkey, tmp_path)
    assert ok.exit_code == 0, ok.output
    assert "OK: entry explanation_generated is in the log" in ok.output

    # One character changed, in the entry (the report's digest) or in the signature.
    digest = json.loads(report["receipt"]["entry"])["report_sha256"]
    forged = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    assert joined.count(digest) == 1
    bad = _check(joined.replace(digest, forged), pubkey, tmp_path)
    assert bad.exit_code == 1 and "INVALID" in bad.output
    signature = report["receipt"]["checkpoint"].rsplit(" ", 1)[1].strip()
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 1
    bad_sig = joined.replace(signature, base64.b64encode(bytes(raw)).decode())
    assert bad_sig != joined
    bad = _check(bad_sig, pubkey, tmp_path)
    assert bad.exit_code == 1 and "INVALID" in bad.output


def test_every_receipt_value_is_whole_in_the_pdf_text_and_inside_the_page(decided,
                                                                         pdf) -> None:
    """Extraction alone cannot see clipping (text past the page edge still extracts), so
    the layout is read too: every box that draws a receipt value ends inside the page's
    content area, and no value is split over two lines."""
    import weasyprint
    from weasyprint.formatting_structure import boxes

    receipt = decided[0]["receipt"]
    body, signatures = receipt["checkpoint"].split("\n\n", 1)
    root = body.split("\n")[2]
    values = {receipt["leaf_hash"], *receipt["inclusion_proof"], root,
              *(line.rsplit(" ", 1)[1] for line in signatures.strip().split("\n"))}
    lines = receipt_lines(receipt)
    assert lines[0] == RECEIPT_BEGIN and lines[-1] == RECEIPT_END
    assert all(len(line) == RECEIPT_WIDTH for line in lines[1:-2])
    assert all(" " not in line and line.isascii() for line in lines[1:-1])
    extracted = {line.strip() for line in _text(pdf).split("\n")}
    for value in values:
        assert any(value in line for line in extracted), value
    for line in lines:
        assert line in extracted, line

    document = weasyprint.HTML(string=render_html(decided[0])).render()
    drawn: dict[str, float] = {}
    for page in document.pages:
        box = page._page_box
        right = box.margin_width() - box.margin_right
        for b in box.descendants():
            if isinstance(b, boxes.TextBox) and b.text.strip() in values | set(lines):
                drawn[b.text.strip()] = b.position_x + b.width - right
    assert set(drawn) == values | set(lines)       # each drawn whole, in one box
    assert max(drawn.values()) <= 0, drawn
