"""Write PDFs whose every object is chosen: page trees that lie, fonts without a Unicode map, hostile streams.

tests/pdfgen.make_pdf writes ordinary text pages; ``crafted_pdf`` takes raw content streams instead, so that tests
and benchmarks can build exactly the page that breaks a reader::

    crafted_pdf([text_page("A normal page."), glyph_page([260, 301, 290])], declared_count=9_999_999_999)
"""

from __future__ import annotations

import zlib


def text_page(text: str, font: str = "F1") -> bytes:
    return b"BT /%s 11 Tf 50 780 Td (%s) Tj ET" % (font.encode(), text.encode("latin-1"))


def glyph_page(glyph_ids: list[int]) -> bytes:
    """Text in F2, a CID font without a Unicode map: pypdf can only turn the glyph numbers into code points."""
    return b"BT /F2 11 Tf 50 780 Td <%s> Tj ET" % "".join(f"{g:04x}" for g in glyph_ids).encode()


def crafted_pdf(contents: list[bytes], *, declared_count: int | None = None) -> bytes:
    """One page per content stream, with F1 (Helvetica) and F2 (Identity-H, no ToUnicode) as fonts.

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
    kids = []
    for content in contents:
        packed = zlib.compress(content)
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(packed), packed))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % len(objects))
        kids.append(len(objects))
    count = len(kids) if declared_count is None else declared_count
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), count)
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
