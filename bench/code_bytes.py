"""Packaging benchmark: size of every train_gpt.py form and how long the amalgamation takes.

    python -m bench.code_bytes [--quick]

Falls back to packing the `quant` package alone while golf.main's closure is incomplete, and
says so in the result ("entry").
"""
from __future__ import annotations

import argparse
import json
import time


def run(quick: bool = False) -> dict:
    from golf.submission.amalgamate import compressed_forms, module_closure, render_plain
    from golf.submission import PackError
    entry, note = "golf.main", ""
    try:
        closure = module_closure(entry)
    except PackError as exc:
        entry, note = "quant", f"golf.main not packable yet: {exc}"
        closure = module_closure(entry)
    reps = 1 if quick else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        plain = render_plain(module_closure(entry), entry)
    build_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    forms = compressed_forms(plain)
    compress_s = time.perf_counter() - t0
    sizes = {"plain": len(plain), **{k: len(v) for k, v in forms.items()}}
    best = min(sizes, key=lambda k: (sizes[k], k))
    return {"entry": entry, "note": note, "modules": len(closure.modules),
            "third_party": sorted(closure.third_party), "bytes": sizes, "shipped_form": best,
            "shipped_bytes": sizes[best], "saved_vs_plain": sizes["plain"] - sizes[best],
            "build_seconds": round(build_s, 4), "compress_seconds": round(compress_s, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    res = run(ap.parse_args().quick)
    print(json.dumps(res, indent=2))
    print(f"\n{'form':<10}{'bytes':>12}")
    for k, v in res["bytes"].items():
        print(f"{k:<10}{v:>12,}{'  <- shipped' if k == res['shipped_form'] else ''}")


if __name__ == "__main__":
    main()
