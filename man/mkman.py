#!/usr/bin/env python3
"""Makes a man page from the documentation: a short head of our own (NAME, and for ccdockerd its
options) followed by the body of one docs/*.md page, converted by pandoc. docs/ stays the one source
of what the page says; the head holds only what a man page needs and the document does not have.

Usage: mkman.py PANDOC NAME SECTION VERSION HEAD DOC OUTPUT

DOC '-' is none: the head is the whole page (ccdocker-build-image, whose --help is its documentation).

The document's own title (its first '# ' line) is dropped, its '## ' sections become the page's
sections (upper-cased, as man pages spell them) and '### ' its subsections."""

import os
import re
import subprocess
import sys
import time


def cells(row):
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def widen(lines):
    """A pipe table's separator row sets pandoc's column widths when a row is long: give each column
    but the last the width of its longest cell (within a share of the page) and the last what is left, so
    that the text of a wide table wraps in its last column rather than overflowing the page."""
    rows = [cells(l) for l in lines]
    n = len(rows[0])
    if len(lines) < 2 or not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[1].strip()) or any(len(r) != n for r in rows):
        return lines
    # pandoc makes the widths fractions of 72 columns, and tbl puts 3 more between two columns.
    budget = 72 - 3 * n - 4
    cap = min(20, budget * 6 // 10 // max(1, n - 1))
    widths = [min(cap, max(len(r[i].strip()) for r in rows if r is not rows[1]) + 2) for i in range(n - 1)]
    widths.append(budget - sum(widths))
    return [lines[0], "|" + "|".join("-" * w for w in widths) + "|"] + lines[2:]


def tables(markdown):
    out, block = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            out += widen(block)
            block = []
        out.append(line)
    return "\n".join(out)


# Sections of a document that are for its developers, not for the reader of the man page: the source
# files of the program, and the knobs of the test suite.
SKIP = {"Files", "For tests", "How it works"}


def shift(markdown):
    out, fence, skipping = [], None, False
    for line in markdown.splitlines():
        if fence is None and line.startswith("## "):
            skipping = line[3:].strip() in SKIP
        if skipping:
            continue
        m = re.match(r"^(```+|~~~+)", line)
        if m and (fence is None or line.startswith(fence)):
            fence = None if fence else m.group(1)
        elif fence is None and line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if level == 1:
                continue  # the document's title: the page has its own NAME
            title = line[level:].strip()
            line = "#" * (level - 1) + " " + (title.upper() if level == 2 else title)
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    pandoc, name, section, version, head, doc, output = sys.argv[1:]
    with open(head) as f:
        text = f.read()
    if doc != "-":
        with open(doc) as f:
            text += "\n" + tables(shift(f.read()))
    text += "\n# SEE ALSO\n\nThe full documentation is in /usr/share/doc/cc-docker (docs/ in the source).\n"
    # The source's date when the build gives one (dpkg-buildpackage does), so that the page is the same
    # from build to build; none otherwise.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else ""
    cmd = [pandoc, "--standalone", "--from=markdown-smart-tex_math_dollars-subscript-superscript", "--to=man",
           f"--metadata=title:{name.upper()}", f"--metadata=section:{section}",
           "--metadata=header:cc-docker", f"--metadata=footer:cc-docker {version}",
           f"--metadata=date:{date}"]
    page = subprocess.run(cmd, input=text, text=True, check=True, stdout=subprocess.PIPE).stdout
    page = re.sub(r"^(lw\([0-9.]+n\) ?)+\.$", fit, page, flags=re.M)
    page = re.sub(r"^\.TS\n(.*?)^\.TE$", breakable, page, flags=re.M | re.S)
    # Ragged right: narrow table columns cannot be justified, and groff warns of every such line.
    page = re.sub(r"^(\.TH .*\n)", r"\1.ad l\n", page, count=1, flags=re.M)
    with open(output, "w") as f:
        f.write(page)


def breakable(m):
    """Paths, names and JSON in a narrow table cell may break after '/', '_', '.', ',', ':' or '|' (groff's \\: is a break
    point that prints nothing), rather than overflow the column."""
    lines = [l if l.startswith((".", "T{", "T}", "lw(", "tab(")) else
             re.sub(r"(?<=[/_.,:|])(?=[A-Za-z0-9$\\{])", r"\\:", l) for l in m.group(1).split("\n")]
    return ".TS\n" + "\n".join(lines) + ".TE"


def fit(m):
    """pandoc gives a table's columns 70 ens in all, and tbl puts 3 between two columns: more than the
    71 ens an 80-column terminal leaves inside a section's indent. Scale them down to fit."""
    widths = [float(w) for w in re.findall(r"lw\(([0-9.]+)n\)", m.group(0))]
    room = 70 - 3 * (len(widths) - 1)
    return " ".join(f"lw({w * room / sum(widths):.1f}n)" for w in widths) + "."


if __name__ == "__main__":
    main()
