"""`python -m golf.audit FOLDER ...`: one table per folder, non-zero exit on any FAIL."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from golf.run.atomic import atomic_write_json
from golf.audit.checks import run_checks
from golf.audit.context import Context
from golf.audit.folder import load_folder
from golf.audit.report import FAIL, format_table, worst
from golf.run.errors import user_errors


def _values(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--against-bpb wants comma-separated numbers, got {text!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m golf.audit", description=(
        "Review submission folders from their files (never imports, runs or unpickles them)."))
    ap.add_argument("folders", nargs="+", type=Path, help="records/ submission folders")
    ap.add_argument("--against", type=Path, action="append", default=[],
                    help="the previous row's folder (significance); repeat it to pool "
                         "independent reproductions of that row (#1902)")
    ap.add_argument("--against-bpb", type=_values, help="or its per-seed val_bpb, comma-separated")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--data", type=Path, help="shard folder: check train/val document overlap")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with user_errors():
        if args.json is not None and args.json.exists():
            raise ValueError(f"--json {args.json}: already exists and the audit never "
                                  "replaces a file it did not write; give a new name")
        against = [load_folder(p) for p in args.against]
        if args.data is not None and not args.data.is_dir():
            raise FileNotFoundError(f"--data {args.data}: not a folder; give the shard folder")
        report = []
        for root in args.folders:
            ctx = Context(load_folder(root), against, args.against_bpb, args.data)
            rows = run_checks(ctx)
            print(format_table(str(root), rows) + "\n")
            report.append({"folder": str(root), "status": worst(r.verdict.status for r in rows),
                           "skipped_files": ctx.folder.skipped,
                           "checks": [r.to_dict() for r in rows]})
        failed = any(f["status"] == FAIL for f in report)
        if args.json:
            atomic_write_json(args.json, {"folders": report, "exit_code": int(failed)})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
