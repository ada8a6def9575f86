#!/usr/bin/env python3
"""The HTML report renders: headless Chromium takes a screenshot of the page
mq-pipeline wrote, and the screenshot must show the SQNR bars (their colour, in the
width two bars take) and the size breakdown.

usage: check_html_report.py MQ_PIPELINE SOURCE_DIR WORK_DIR [SCREENSHOT_COPY]
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

BAR = (0x2B, 0x7B, 0xB9)


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(cur)
        prev = cur
    return width, height, channels, rows


def long_rows(rows, channels, rgb, min_run):
    """Rows holding at least min_run pixels of colour rgb: the bars of a chart."""
    n = 0
    for row in rows:
        n += sum(tuple(row[i : i + 3]) == rgb for i in range(0, len(row), channels)) >= min_run
    return n


def main(exe, source, work, copy_to=None):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    html = os.path.join(work, "report.html")
    subprocess.run([exe, "run", os.path.join(source, "configs", "example-dynamic-int8.yaml"), "--quiet",
                    "--set", f"format.output={os.path.join(work, 'out.safetensors')}",
                    "--set", "report=null", "--set", f"html_report={html}"], check=True)
    text = open(html, encoding="utf-8").read()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", ""), \
        "the report must be self-contained"
    png = os.path.join(work, "report.png")
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={os.path.join(work, 'profile')}",
                    "--window-size=1000,900", "--hide-scrollbars", f"--screenshot={png}",
                    "file://" + os.path.abspath(html)], check=True, capture_output=True, timeout=120)
    width, height, channels, rows = read_png(png)
    sqnr_rows = long_rows(rows, channels, BAR, 300)  # two SQNR bars, ~500 px wide
    size_rows = long_rows(rows, channels, (0x9E, 0x9E, 0x9E), 500)  # the original-size bar
    print(f"screenshot {width}x{height}: {sqnr_rows} rows of SQNR bars, {size_rows} of the size bar")
    assert sqnr_rows >= 2 * 14, "the SQNR chart did not render"
    assert size_rows >= 14, "the size breakdown did not render"
    if copy_to:
        shutil.copy(png, copy_to)
    print("ok: the HTML report renders its charts in Chromium")


if __name__ == "__main__":
    main(*sys.argv[1:5])
