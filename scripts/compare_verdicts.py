"""Compare two checks' verdicts.json row by row (claim, family, per-seed values, verdict); exit 1 when they differ.

    python scripts/compare_verdicts.py HOST/verdicts.json IMAGE/verdicts.json

`make image-check` uses it to put the check run inside the image beside the same check on the host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[tuple[str, str, list[float], str]]:
    """The rows of a verdicts.json as (claim, family, values, verdict)."""
    payload = json.loads(path.read_text())
    return [(v["claim"], v["family"], v["values"], v["verdict"]) for v in payload["verdicts"]]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = (rows(Path(p)) for p in argv)
    for row in a:
        print(f"  {row[0]:<6} {row[1]:<6} {row[3]:<13} mean of {len(row[2])} seeds "
              f"{sum(row[2]) / max(len(row[2]), 1):.4f}")
    if a == b:
        print(f"same verdicts and values: {len(a)} rows")
        return 0
    print(f"the verdicts differ: {argv[0]} has {len(a)} rows, {argv[1]} has {len(b)}", file=sys.stderr)
    for x, y in zip(a, b, strict=False):
        if x != y:
            print(f"  {x}\n  {y}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
