"""Inspect or verify an artifact:  python -m quant info final_model.gkq [--json]

Verifies magic, version and checksums, decodes every stream, and prints the tensor table.
Bad files print one error line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .artifact import decode_tensors, parse_artifact
from .errors import QuantError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["info"])
    ap.add_argument("path")
    ap.add_argument("--json", action="store_true", help="print the header as JSON")
    args = ap.parse_args(argv)
    try:
        p = Path(args.path)
        if not p.is_file():
            raise QuantError(f"{p}: artifact not found; check the path")
        blob = p.read_bytes()
        header, payload = parse_artifact(blob, str(p))
        tensors = decode_tensors(header, payload)
    except QuantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in header.items() if k != "tensors"} |
                         {"tensors": header["tensors"]}, indent=1))
        return 0
    print(f"{p}: {len(blob):,} bytes, format v{header['version']}, {len(tensors)} tensors, "
          f"payload sha256 {header['payload_sha256'][:16]}... OK")
    for s in header["streams"]:
        print(f"  stream {s['name']:<40} {s['codec']:<6} {s['length']:>10,} / {s['raw_length']:>10,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
