"""Run every benchmark and write one JSON file describing the machine and the figures.

    python -m bench.run_all            # full
    python -m bench.run_all --quick    # a couple of minutes on a laptop CPU

Each bench module exposes `run(quick: bool) -> dict`; a failing bench is recorded with its
error instead of aborting the others.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BENCHES = ("data", "train", "quant", "eval", "code_bytes")


def describe_machine() -> dict:
    import torch
    info = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI-friendly)")
    ap.add_argument("--only", nargs="*", choices=BENCHES, help="run a subset")
    ap.add_argument("--out", default="bench/results/bench.json")
    args = ap.parse_args(argv)
    results: dict = {"machine": describe_machine(), "quick": args.quick,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benches": {}}
    for name in args.only or BENCHES:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.{name}")
            results["benches"][name] = mod.run(quick=args.quick)
        except Exception as exc:  # record and continue: one broken bench must not hide the rest
            results["benches"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc(limit=3)}
        results["benches"][name]["bench_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"bench:{name} seconds:{results['benches'][name]['bench_seconds']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, out)
    print(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
