"""TTT gain on trained CPU demo models: post vs post+TTT val_bpb and seconds, both modes.

    python -m bench.ttt [--run runs/ID] [--proxy-run runs/ID] [--workdir /tmp/ttt_bench] [--quick]

Why: score-first TTT costs eval time (the 600 s limit counts it) and its gain depends on the
model and the text, so every setting is measured beside the plain post-quant score of the same
artifact, on the same tokens and windows (sliding, stride 64). Without --run the embedded-corpus
demo model is trained first (`python train_gpt.py`, CPU preset, ITERATIONS=150, no pack;
~1-2 minutes). The proxy corpus (web text: 100 held-out C4 documents, official sp1024
tokenizer) is built under WORKDIR/data with `python -m golf.data.prepare proxy` when ../shared/data
is there (web text only: --stdlib-mb 0), and a second demo model is trained on it; --no-proxy
skips that.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.run import rundir as rd  # noqa: E402  (after the path guard)

REPO = Path(__file__).resolve().parents[1]
# (mode, knobs): chunk sizes and LRs around R23's (32768 tokens, lr 0.002 on 62M tokens: the
# demo val splits hold 33k-69k tokens, so smaller chunks), LoRA LRs around our default 0.01.
CONFIGS = [("chunk", {"chunk_tokens": 4096, "lr": 0.002}),
           ("chunk", {"chunk_tokens": 4096, "lr": 0.01}),
           ("chunk", {"chunk_tokens": 16384, "lr": 0.01}),
           ("lora_golf", {"golf_lora_lr": 0.003}),
           ("lora_golf", {"golf_lora_lr": 0.01}),
           ("lora_golf", {"golf_lora_lr": 0.01, "lora_chunk": 96}),
           ("lora_golf", {"golf_lora_lr": 0.01, "lora_phases": 3, "lora_prefix_docs": 60})]
QUICK = [CONFIGS[1], CONFIGS[4]]


def train_demo(workdir: Path, run_id: str, iterations: int, extra: dict[str, str]) -> Path:
    """Train (or reuse) a CPU-preset demo run: train -> quantize -> eval, no pack."""
    run = workdir / "runs" / run_id
    if (run / rd.ARTIFACT).is_file() and (run / rd.EMA).is_file():
        return run
    env = {**os.environ, "ITERATIONS": str(iterations), "MAX_WALLCLOCK_SECONDS": "0",
           "WARMDOWN_ITERS": str(max(1, iterations // 5)), "VAL_LOSS_EVERY": "0", "PACK": "0",
           "RUN_ID": run_id, "RUNS_DIR": str(workdir / "runs"), "TTT": "off", **extra}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train_gpt.py")], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"bench.ttt: trained {run} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def proxy_data(workdir: Path, shared: Path) -> Path | None:
    """WORKDIR/data/datasets/proxy_sp1024, built once, web text only (--stdlib-mb 0): with the
    default 30 MB of Python sources a 150-step model learns code (train loss 0.8) and scores
    the C4 validation text worse than uniform (7.6 nats), which would flatter TTT."""
    ds = workdir / "data" / "datasets" / "proxy_sp1024"
    if ds.is_dir() and any(ds.glob("fineweb_val_*.bin")):
        return ds
    if not (shared / "corpora").is_dir():
        return None
    subprocess.run([sys.executable, "-m", "golf.data.prepare", "proxy", "--shared", str(shared),
                    "--root", str(workdir / "data"), "--stdlib-mb", "0"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return ds


def measure(run: Path, configs: list, stride: int, max_tokens: int | None) -> dict:
    """Plain post-quant score, then each TTT setting, on the same artifact, tokens and windows."""
    from golf.eval.score import Scoring, load_eval_data, load_eval_model, score_eval_data
    from golf.run.config import Config
    from golf.eval.ttt import TTTPass, TTTSettings, run_ttt
    cfg = Config.load(run / rd.CONFIG)
    model, cfg, _ = load_eval_model(run / rd.ARTIFACT, cfg_override=cfg)
    ed = load_eval_data(cfg.data_path, cfg.tokenizer_path, cfg.vocab_size, max_tokens=max_tokens, log=None)
    seq = cfg.effective_eval_seq_len
    post = score_eval_data(model, ed, Scoring(seq, stride=stride, batch_tokens=cfg.val_batch_size))
    out = {"run": str(run), "data": cfg.data_path, "tokens": post.tokens, "bytes": post.bytes,
           "seq_len": seq, "stride": stride, "post": {"val_bpb": post.val_bpb, "seconds": post.seconds},
           "ttt": []}
    print(f"bench.ttt: {run.name}: post val_bpb {post.val_bpb:.6f} ({post.seconds:.1f} s)", flush=True)
    for mode, knobs in configs:
        s = TTTSettings(mode=mode, **knobs).validated()
        p = TTTPass(Scoring(seq, stride=stride, batch_tokens=cfg.val_batch_size),
                    max_tokens=ed.n_targets, bos_id=cfg.bos_id)
        r = run_ttt(model, ed.tokens, ed.lut, s, p)
        assert r.tokens == post.tokens and r.bytes == post.bytes
        row = {"mode": mode, "knobs": knobs, "val_bpb": r.val_bpb, "gain": r.val_bpb - post.val_bpb,
               "seconds": r.seconds, "steps": r.adapt_steps, "units": r.units}
        out["ttt"].append(row)
        print(f"bench.ttt:   {mode} {knobs}: {r.val_bpb:.6f} ({row['gain']:+.6f}) {r.seconds:.1f} s",
              flush=True)
    return out


def format_table(results: list[dict]) -> str:
    lines = ["| data (run) | mode | knobs | post val_bpb | post+TTT val_bpb | gain | TTT s | post s |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        name = f"{Path(res['data']).name} ({res['tokens']:,} tokens)"
        for r in res["ttt"]:
            k = ", ".join(f"{a}={b}" for a, b in r["knobs"].items())
            lines.append(f"| {name} | {r['mode']} | {k} | {res['post']['val_bpb']:.6f} | "
                         f"{r['val_bpb']:.6f} | {r['gain']:+.6f} | {r['seconds']:.1f} | "
                         f"{res['post']['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="embedded-corpus run dir (default: train one under --workdir)")
    ap.add_argument("--proxy-run", help="proxy-corpus run dir (default: train one if possible)")
    ap.add_argument("--no-proxy", action="store_true")
    ap.add_argument("--workdir", default="/tmp/ttt_bench")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="two settings only")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ttt.json"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    work = Path(args.workdir)
    configs = QUICK if args.quick else CONFIGS
    runs = [Path(args.run) if args.run else train_demo(work, "ttt_demo", args.iterations, {})]
    if args.proxy_run:
        runs.append(Path(args.proxy_run))
    elif not args.no_proxy:
        ds = proxy_data(work, REPO.parent / "shared" / "data")
        if ds is not None:
            runs.append(train_demo(work, "ttt_demo_proxy", args.iterations, {
                "DATA_PATH": str(ds), "TOKENIZER_PATH": str(work / "data/tokenizers/fineweb_1024_bpe.model")}))
    t0 = time.perf_counter()
    results = [measure(r, configs, args.stride, args.max_tokens) for r in runs]
    report = {"threads": torch.get_num_threads(), "configs": configs, "results": results,
              "seconds": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(format_table(results))
    print(f"bench.ttt: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
