"""Keep experiment YAMLs in the form `dvc exp run -S` writes them, so that setting one parameter changes one line.

`dvc exp run -S file.yaml:key=value` (dvc.utils.hydra.apply_overrides) reads the file with ruamel's round-trip
loader, merges the override and writes the whole file back with DVC's dumper: 80 columns, every list that is a
direct value in block style, quotes normalized. A file not already in that form is rewritten wholesale on the first
`-S`. This script puts each file in that form once: text folded with `>` is re-folded to 80 columns, as is plain
text too long for one line (DVC would wrap it leaving trailing spaces); a flow mapping too long for one line goes
to block style (DVC would break it mid-entry); then DVC itself writes the file with no override. Comments, key
order and every value are kept (checked). Merges (`<<: *anchor`) are spelled out, as DVC's write would do anyway.

    python workflow/scripts/dvc_param_form.py workflow/config/experiments/*.yaml          # rewrite in place
    python workflow/scripts/dvc_param_form.py --check workflow/config/experiments/*.yaml  # exit 1 if any would change
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import yaml
from dvc.utils.hydra import apply_overrides
from dvc.utils.serialize._yaml import _dump, _get_yaml, parse_yaml_for_update
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.scalarstring import FoldedScalarString

WIDTH = 80  # ruamel's default line width, which DVC's dumper keeps


def dvc_write(text: str, overrides: list[str] = ()) -> str:
    """``text`` as DVC writes it after `dvc exp run -S` with ``overrides`` (none: DVC's plain round trip)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        apply_overrides(path, list(overrides))
        return path.read_text()


def _one_line(node) -> str:
    """The flow node on one line, as DVC's dumper renders it when nothing limits the width."""
    out, dumper = io.StringIO(), _get_yaml()
    dumper.width = 10**9
    dumper.dump({"k": node}, out)
    return out.getvalue().split("\n")[0].removeprefix("k: ")


def _restyle(node, indent: int = 0) -> None:
    """Re-fold `>` text and put over-long flow mappings in block style, recursively."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, FoldedScalarString):
            node[key] = FoldedScalarString(str(value))  # no stored fold positions: folded anew at WIDTH
        elif type(value) is str and "\n" not in value and indent + len(f"{key}: {value}") > WIDTH:
            node[key] = FoldedScalarString(value)  # DVC would wrap it as plain text, with trailing spaces
        elif isinstance(value, CommentedMap) and value.fa.flow_style():
            if indent + len(f"{key}: {_one_line(value)}") > WIDTH:
                value.fa.set_block_style()
        if isinstance(value, (CommentedMap, CommentedSeq)) and not value.fa.flow_style():
            _restyle(value, indent + 2)


def _unmerge(node) -> None:
    """Spell out the keys every ``<<: *anchor`` merges in and drop the merge, recursively. DVC's write spells them
    out anyway, and a merge beside explicit copies of its keys would be a trap: editing the anchor would change
    nothing. Anchors left unreferenced are then not written."""
    if isinstance(node, CommentedMap):
        if node.merge:
            for key in list(node):
                node[key] = node[key]  # a merged-in key becomes the map's own
            setattr(node, merge_attrib, [])
        for value in node.values():
            _unmerge(value)
    elif isinstance(node, CommentedSeq):
        for value in node:
            _unmerge(value)


def dvc_form(text: str) -> str:
    """``text`` restyled and written by DVC, until DVC's write leaves it unchanged (DVC's own merge can lengthen a
    line: it writes the keys a `<<: *anchor` merges in explicitly, next to the merge)."""
    for _ in range(3):
        data = parse_yaml_for_update(text, "<experiment>")
        _unmerge(data)
        _restyle(data)
        out = io.StringIO()
        _dump(data, out)
        new = dvc_write(out.getvalue())
        if new == text:
            break
        text = new
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only report the files that are not in DVC's form")
    args = parser.parse_args(argv)
    changed = []
    for path in args.files:
        text = path.read_text()
        new = dvc_form(text)
        if yaml.safe_load(new) != yaml.safe_load(text) or dvc_write(new) != new:
            raise SystemExit(f"{path}: restyling would change its values or is not stable; fix it by hand")
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in changed:
        print(f"{'not in DVC form' if args.check else 'rewritten'}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
