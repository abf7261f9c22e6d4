"""Write the pilot file behind each theory row's power: the spreads of an earlier check's theory rows.

    python scripts/make_pilot.py docs/check/verdicts.json ptforget/check/pilot.json --source "quick check at <commit>"

A row's power (``verdicts.json``: ``power``, ``seeds_needed``) comes from this file, never from the run it judges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptforget.check.judge import pilot_of
from ptforget.io import read_json, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("verdicts", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", default="", help="what the pilot was (shown in the file)")
    args = ap.parse_args()
    payload = read_json(args.verdicts)
    payload["source"] = args.source or str(args.verdicts)
    pilot = pilot_of(payload)
    write_json(args.out, pilot)
    print(f"{args.out}: {len(pilot['rows'])} rows")


if __name__ == "__main__":
    main()
