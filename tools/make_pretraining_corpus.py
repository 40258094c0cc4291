"""Builds bot/training/assets/jargon.txt.gz, the text the tiny base model learns English from.

    apt-get download jargon-text && dpkg-deb -x jargon-text_*.deb jargon
    python tools/make_pretraining_corpus.py jargon/usr/share/doc/jargon-text/jargon.txt.gz

The Jargon File 4.4.7 (Eric S. Raymond and others) is in the public domain: "to be freely used,
shared, and modified". Its prose paragraphs are kept, one per line; headings, the index, tables and
ASCII art are dropped. gzip without a timestamp, so the same input gives the same bytes.
"""

import gzip
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bot" / "training" / "assets" / "jargon.txt.gz"


def paragraphs(text: str):
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        para = " ".join(line for line in lines if line)
        words = para.split()
        letters = sum(c.isalpha() or c.isspace() for c in para)
        if len(words) >= 12 and letters / max(1, len(para)) > 0.9 and "----" not in para and "    " not in block.strip():
            yield para


def main(source: str) -> None:
    text = gzip.open(source, "rt", encoding="utf-8").read()
    kept = list(paragraphs(text))
    data = ("\n".join(kept) + "\n").encode("utf-8")
    with open(OUT, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    print(f"{len(kept)} paragraphs, {len(data):,} bytes of text, {OUT.stat().st_size:,} bytes gzipped -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
