#!/usr/bin/env python3
"""Code footprint of a callgrind profile recorded with `--dump-instr=yes`:
how many distinct 64-byte lines of machine code the run executed.

Why: at 100 streams/s Lexora's request path takes several times as long as the
same instructions run back to back, most likely because between two
requests the kernel's network stack and the other streams evict its code
from the core's caches (a PGO build with 16 % fewer lines took a third less
time there). Each line of code the path touches is then fetched again, so the
number of lines, not only the number of instructions, is what a request pays
on a cold core. The requests of a scripts/bench-callgrind.sh run are all
alike, so the lines executed over the whole run are the lines one request
touches (plus a few from timers that fire during the run).

    code_lines.py PROFILE            -> prints the number of lines
    code_lines.py PROFILE --top N    -> also the N functions and the N
                                        crates (or Lexora modules) with most
"""

import collections
import re
import sys

LINE = 64  # bytes per cache line on x86-64


def executed(path):
    """Yields (function, instruction address) for every instruction the
    profile counts at least once. Call lines (the `calls=` record and the
    position line after it) carry a callee's inclusive cost, not the
    caller's own execution, and are skipped."""
    names = {}
    function = None
    address = 0
    after_call = False
    positions = 1  # "positions: instr" or "positions: instr line"
    with open(path) as f:
        for line in f:
            if line.startswith("positions:"):
                positions = len(line.split()) - 1
                continue
            if line.startswith("fn="):
                function = _name(names, line[3:].strip())
                continue
            if line.startswith("cfn="):
                _name(names, line[4:].strip())  # defines the id for later fn= lines
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            first = line[:1]
            if not (first.isdigit() or first in "+-*"):
                continue
            fields = line.split()
            position = fields[0]
            if position == "*":
                pass
            elif position[0] in "+-":
                address += int(position, 16)
            else:
                address = int(position, 16)
            if after_call:
                after_call = False
                continue
            if len(fields) > positions and int(fields[positions]) > 0:
                yield function, address


def _name(names, text):
    """Callgrind names a function once as "(id) name" and then as "(id)"."""
    m = re.match(r"\((\d+)\)(?: (.*))?$", text)
    if not m:
        return text
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), text)


def owner(function):
    """The crate a function belongs to, or lexora_core's module: what the
    footprint is grouped by. Drop glue counts with the type it drops."""
    name = (function or "?").lstrip("<&*").replace("mut ", "").replace("dyn ", "")
    prefix = "core::ptr::drop_in_place<"
    if name.startswith(prefix):
        return "drop " + owner(name[len(prefix):])
    m = re.match(r"(\w+)(?:::(\w+))?", name)
    if not m:
        return name[:40]
    if m.group(1) == "lexora_core" and m.group(2):
        return f"lexora_core::{m.group(2)}"
    return m.group(1)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    top = int(args[args.index("--top") + 1]) if "--top" in args else 0
    by_function = collections.defaultdict(set)
    for function, address in executed(args[0]):
        by_function[function].add(address // LINE)
    every = set().union(*by_function.values()) if by_function else set()
    print(len(every))
    if top:
        by_owner = collections.defaultdict(set)
        for function, lines in by_function.items():
            by_owner[owner(function)] |= lines
        for title, table in (("functions", by_function), ("crates and modules", by_owner)):
            print(f"\nlines  {title}")
            for key, lines in sorted(table.items(), key=lambda kv: -len(kv[1]))[:top]:
                print(f"{len(lines):5d}  {(key or '?')[:140]}")


if __name__ == "__main__":
    main()
