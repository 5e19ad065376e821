#!/usr/bin/env python3
"""Writes the default /etc/ccdocker/ccdockerd.conf: every key of daemon/config.c's table, commented
out, with its type, default and meaning as docs/ccdockerd.conf.md gives them. The build fails when
the two disagree on the set of keys, so neither the file nor the documentation can drift from the
code.

Usage: gen-ccdockerd-conf.py CONFIG_C CONF_MD OUTPUT"""

import re
import sys
import textwrap


def code_keys(path):
    with open(path) as f:
        text = f.read()
    table = re.search(r"config_keys\[\] = \{(.*?)\n\};", text, re.S)
    if not table:
        sys.exit(f"{path}: no config_keys[] table")
    return re.findall(r'\{\s*"([A-Za-z]+)",', table.group(1))


def plain(cell):
    """Markdown of a table cell as plain text for a comment."""
    cell = re.sub(r"\[([^]]+)\]\([^)]+\)", r"\1", cell)
    return cell.replace("`", "").replace("\\|", "|").strip()


def doc_keys(path):
    """(section, key, type, default, meaning) for every key row of the Keys section, in order."""
    rows, section, in_keys = [], None, False
    with open(path) as f:
        for line in f:
            if line.startswith("## "):
                in_keys = line.strip() == "## Keys"
            elif in_keys and line.startswith("### "):
                section = line[4:].strip()
            elif in_keys and line.startswith("| `"):
                cells = [c for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                if len(cells) != 4:
                    sys.exit(f"{path}: a key row without 4 cells: {line.strip()}")
                rows.append((section, plain(cells[0]), plain(cells[1]), cells[2].strip(), plain(cells[3])))
    return rows


def default_value(cell):
    """The default as a value for the file when the documentation gives one literal (or one for
    --system, the mode this file is for), else ''."""
    m = re.fullmatch(r"`([^`]*)`(?: \([^)]*\))?", cell) or re.match(r"`--system`: `([^`]*)`;", cell)
    return m.group(1) if m else ""


def main():
    config_c, conf_md, output = sys.argv[1:]
    keys = code_keys(config_c)
    rows = doc_keys(conf_md)
    documented = [r[1] for r in rows]
    missing, extra = set(keys) - set(documented), set(documented) - set(keys)
    if missing or extra or len(documented) != len(set(documented)):
        sys.exit(f"{conf_md} and {config_c} disagree: undocumented keys {sorted(missing)}, "
                 f"documented keys the daemon does not know {sorted(extra)}")

    out = ["# /etc/ccdocker/ccdockerd.conf: the configuration of ccdockerd (ccdockerd.conf(5)).",
           "#",
           "# Every key is listed below, commented out, with its built-in default where it is one value;",
           "# remove the '#' to set one. A comment must be on a line of its own. The daemon reads this file",
           "# at start: `systemctl restart ccdockerd` after a change. Generated from docs/ccdockerd.conf.md.",
           "",
           "[ccdockerd]"]
    section = None
    wrap = textwrap.TextWrapper(width=100, initial_indent="# ", subsequent_indent="#   ")
    for sec, key, kind, default, meaning in rows:
        if sec != section:
            section = sec
            out += ["", "#" * 3 + f" {sec}"]
        out.append("")
        out += wrap.wrap(f"{key} ({kind}; default {plain(default)}): {meaning}")
        out.append(f"#{key}={default_value(default)}")
    with open(output, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
