"""PDFs for tests and benchmarks, written byte by byte (no PDF writer library ships text layout offline).

Two builders share one writer (``_serialised``):

* ``make_pdf(["page one text", "page two text"])``: ordinary text pages, one per string, set in Helvetica
  (WinAnsi), wrapped at 90 characters; ``None`` is a page with no text layer (like a scan).
* ``crafted_pdf([...])``: pages whose every object is chosen — page trees that lie, fonts without a Unicode map,
  hostile streams — from raw content streams, so that a test can build exactly the page that breaks a reader::

    crafted_pdf([text_page("A normal page."), glyph_page([260, 301, 290])], declared_count=9_999_999_999)

Besides Helvetica (F1) and a CID font without a Unicode map (F2), every crafted page can use F3, a CID font whose
ToUnicode map is right (any text: ``unicode_page("Все люди")``), F4, whose map is wrong by a fixed offset (a broken
ToUnicode map, ``unicode_page(text, font="F4")``), and Im1, a grey image (``image_page("stray label")``: a scan).
"""

from __future__ import annotations

import re
import textwrap
import zlib


def text_page(text: str, font: str = "F1") -> bytes:
    return b"BT /%s 11 Tf 50 780 Td (%s) Tj ET" % (font.encode(), text.encode("latin-1"))


def glyph_page(glyph_ids: list[int]) -> bytes:
    """Text in F2, a CID font without a Unicode map: pypdf can only turn the glyph numbers into code points."""
    return b"BT /F2 11 Tf 50 780 Td <%s> Tj ET" % "".join(f"{g:04x}" for g in glyph_ids).encode()


# F4's ToUnicode map sends each glyph this far from the character it draws: CJK lands among rare ideographs.
BROKEN_MAP_OFFSET = 0x3A7


def unicode_page(text: str, font: str = "F3", size: int = 11) -> bytes:
    """``text`` (Basic Multilingual Plane), one line of glyphs per line of text, in a CID font whose glyph numbers
    are the code points: F3 maps them back to the same characters, F4 to characters BROKEN_MAP_OFFSET further."""
    lines = [b"BT /%s %d Tf %d TL 40 800 Td" % (font.encode(), size, size + 3)]
    for line in text.split("\n"):
        lines.append(b"<%s> Tj T*" % "".join(f"{ord(c):04x}" for c in line).encode())
    lines.append(b"ET")
    return b"\n".join(lines)


def image_page(label: str = "", *, cover: float = 1.0, image: str = "Im1") -> bytes:
    """A page-wide picture (``cover`` of the page's width and height) with ``label`` as its only text. ``image``
    names the XObject drawn: a name the page does not define is a picture whose object was lost."""
    width, height = 595 * cover, 842 * cover
    drawing = b"q %.1f 0 0 %.1f 0 0 cm /%s Do Q" % (width, height, image.encode())
    return drawing + (b" " + text_page(label) if label else b"")


def _to_unicode(offset: int, blocks: set[int]) -> bytes:
    """A ToUnicode CMap for the 256-glyph blocks the pages use (pypdf expands every range it is given)."""
    ranges = b"\n".join(b"<%02x00> <%02xff> <%04x>" % (high, high, high * 256 + offset)
                        for high in sorted(blocks) if high * 256 + offset + 255 < 0xD800)
    count = ranges.count(b"\n") + 1
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Crafted def /CMapType 2 def "
            b"1 begincodespacerange <0000> <FFFF> endcodespacerange\n")
    # A CMap block holds at most 100 ranges.
    lines = ranges.split(b"\n")
    for start in range(0, count, 100):
        block = lines[start:start + 100]
        cmap += b"%d beginbfrange\n%s\nendbfrange\n" % (len(block), b"\n".join(block))
    return cmap + b"endcmap CMapName currentdict /CMap defineresource pop end end"


def crafted_pdf(contents: list[bytes], *, declared_count: int | None = None) -> bytes:
    """One page per content stream, with F1 (Helvetica), F2 (Identity-H, no ToUnicode), F3 (Identity-H, right
    ToUnicode), F4 (Identity-H, ToUnicode off by BROKEN_MAP_OFFSET) as fonts and Im1 (a grey image).

    ``declared_count`` is what the page tree's /Count claims; the pages themselves are always ``contents``.
    """
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, once the page objects are numbered
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /ABCDEF+Calibri /Encoding /Identity-H /DescendantFonts [5 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /ABCDEF+Calibri /FontDescriptor 6 0 R "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> >>",
        b"<< /Type /FontDescriptor /FontName /ABCDEF+Calibri /Flags 32 /FontBBox [0 0 1000 1000] /ItalicAngle 0 "
        b"/Ascent 800 /Descent -200 /CapHeight 700 /StemV 80 >>",
    ]
    blocks = {int(code[:2], 16) for content in contents for glyphs in re.findall(rb"<([0-9a-f]+)> Tj", content)
              for code in re.findall(rb"[0-9a-f]{4}", glyphs)} or {0}
    for offset in (0, BROKEN_MAP_OFFSET):
        cmap = zlib.compress(_to_unicode(offset, blocks))
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(cmap), cmap))
        objects.append(b"<< /Type /Font /Subtype /Type0 /BaseFont /ABCDEF+Calibri /Encoding /Identity-H "
                       b"/DescendantFonts [5 0 R] /ToUnicode %d 0 R >>" % len(objects))
    f3, f4 = len(objects) - 2, len(objects)
    pixels = bytes(range(64, 192)) * 2
    objects.append(b"<< /Type /XObject /Subtype /Image /Width 16 /Height 16 /ColorSpace /DeviceGray "
                   b"/BitsPerComponent 8 /Length %d >>\nstream\n%s\nendstream" % (len(pixels), pixels))
    image = len(objects)
    kids = []
    for content in contents:
        packed = zlib.compress(content)
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(packed), packed))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R /F2 4 0 R /F3 %d 0 R /F4 %d 0 R >> "
                       b"/XObject << /Im1 %d 0 R >> >> >>" % (len(objects), f3, f4, image))
        kids.append(len(objects))
    count = len(kids) if declared_count is None else declared_count
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), count)
    return _serialised(objects, header=b"%PDF-1.7\n")


def make_pdf(pages: list[str | None]) -> bytes:
    """One ordinary text page per string (Helvetica, wrapped at 90 characters); ``None`` for a page without text."""
    objects: list[bytes] = []
    kids = []
    font_id = 3
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"")  # the page tree, filled in once the page ids are known
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for text in pages:
        stream = _wrapped_text(text) if text is not None else b""
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content_id, font_id))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    return _serialised(objects, header=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrapped_text(text: str) -> bytes:
    lines = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, 90) or [""])
    body = ["BT", "/F1 10 Tf", "13 TL", "50 790 Td"]
    body += [f"({_escape(line)}) '" for line in lines[:58]]
    body.append("ET")
    return "\n".join(body).encode("latin-1", errors="replace")


def _serialised(objects: list[bytes], *, header: bytes) -> bytes:
    """The file: ``header``, the numbered objects (object 1 the catalog), the cross-reference table, the trailer."""
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
