"""Vocabulary 1024 vs 8192 on the proxy corpus: the same small model, the same byte budget.

    python -m bench.vocab [--vocabs 1024,8192] [--iterations 150] [--batch-tokens 2048]
                          [--budget-bytes 340000] [--layers 2] [--dim 64]
                          [--stdlib-mb 2] [--work runs/bench_vocab] [--out bench/results/vocab.json]

For each vocabulary a tokenizer is trained with `prepare tokenizer` (the challenge's settings)
on the proxy corpus's *training* documents (`golf.data.sources.proxy.proxy_documents`: 900 C4 +
200 FineWeb documents + `--stdlib-mb` of stdlib source; validation = the first 100 C4
documents, never seen by the tokenizer or the model), the corpus is tokenized with it
(`prepare text`), and the main job (`train_gpt.py`, a subprocess, CPU preset) trains the same
model (NUM_LAYERS x MODEL_DIM, fixed ITERATIONS, MAX_WALLCLOCK_SECONDS=0, same seed) and
quantizes it with the budget fitter to the same BUDGET_BYTES, so both artifacts get the same
model bytes and the larger embedding must be paid for by coarser codes elsewhere.

Per vocabulary: val tokens per byte (the decoded val text's UTF-8 bytes, = the scorer's
denominator), pre- and post-quant val_bpb (chunked, full val split), the model and code
bytes, the tied embedding's bytes, its share of the artifact and the fitter's bits for it
(quant_report.json), training ms/step. JSON to --out and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ablation import parse_log  # noqa: E402
from golf.run import rundir as rd  # noqa: E402
from golf.run.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from golf.run.config import Config  # noqa: E402
from golf.data.sources.proxy import VAL_DOCS, proxy_documents  # noqa: E402
from golf.data.sources.text import prepare_text  # noqa: E402
from golf.data.sources.tokenizer_train import prepare_tokenizer  # noqa: E402

EMBEDDING = "tok_emb.weight"


def build_data(args: argparse.Namespace, work: Path, vocab: int) -> tuple[Path, Path]:
    """Tokenizer trained on the training documents, then both splits tokenized with it."""
    val, train, _ = proxy_documents(Path(args.shared), args.stdlib_mb, args.seed)
    train_txt = work / "proxy_train.jsonl"
    all_txt = work / "proxy_all.jsonl"
    if not all_txt.is_file():
        atomic_write_text(train_txt, "".join(json.dumps({"text": d}) + "\n" for d in train))
        atomic_write_text(all_txt, "".join(json.dumps({"text": d}) + "\n" for d in val + train))
    tok = work / "tokenizers" / f"proxy_{vocab}_bpe.model"
    t0 = time.perf_counter()
    prepare_tokenizer([train_txt], vocab, tok, force=True)
    print(f"vocab:{vocab} tokenizer {tok} seconds:{time.perf_counter() - t0:.1f}", flush=True)
    ds = work / "datasets" / f"proxy_sp{vocab}"
    prepare_text([all_txt], tok, ds, val_docs=VAL_DOCS, vocab_size=vocab)
    return ds, tok


def embedding_stats(report: dict) -> dict:
    """The tied embedding's row of quant_report.json and its share of the tensor bytes."""
    rows = report.get("tensors") or []
    emb = next((r for r in rows if r.get("name") == EMBEDDING), {})
    keep = {k: emb.get(k) for k in ("class", "method", "bits", "k", "params") if k in emb}
    return {**keep, "bytes": int(round(emb.get("bytes", 0))), "share": emb.get("share")}


def run_one(args: argparse.Namespace, vocab: int, ds: Path, tok: Path, runs: Path) -> dict:
    run_id = f"v{vocab}"
    env_over = {"VOCAB_SIZE": str(vocab), "DATA_PATH": str(ds), "TOKENIZER_PATH": str(tok),
                "NUM_LAYERS": str(args.layers), "MODEL_DIM": str(args.dim),
                "ITERATIONS": str(args.iterations), "WARMDOWN_ITERS": str(args.iterations // 4),
                "TRAIN_BATCH_TOKENS": str(args.batch_tokens), "MAX_WALLCLOCK_SECONDS": "0", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "20",
                "EVAL_STRIDE": "0", "BUDGET_BYTES": str(args.budget_bytes), "PACK": "0",
                "SEED": str(args.seed), "RUN_ID": run_id, "RUNS_DIR": str(runs), "OVERWRITE": "1"}
    ours = {f.upper() for f in Config().to_dict()} | {"PRESET", "QUANT_ONLY", "EVAL_ONLY", "RESUME"}
    env = {**{k: v for k, v in os.environ.items() if k not in ours}, **env_over,
           "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(runs / f"{run_id}.out", "w") as out:
        proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join((runs / f"{run_id}.out").read_text().splitlines()[-15:])
        raise SystemExit(f"error: vocab {vocab} run failed (exit {proc.returncode}):\n{tail}")
    run = runs / run_id
    ev = json.loads((run / rd.EVAL).read_text())
    summ = json.loads((run / rd.SUMMARY).read_text())
    rep = json.loads((run / rd.QUANT_REPORT_JSON).read_text())
    log = parse_log(run / rd.TRAIN_LOG)
    return {"vocab": vocab, "env": env_over, "wall_seconds": time.perf_counter() - t0,
            "params": log.get("params"), "ms_per_step": log.get("ms_per_step"),
            "val_tokens": ev["pre"]["tokens"], "val_bytes": ev["pre"]["bytes"],
            "tokens_per_byte": ev["pre"]["tokens"] / ev["pre"]["bytes"],
            "pre_val_bpb": ev["pre"]["val_bpb"], "post_val_bpb": ev["post"]["val_bpb"],
            "gap": ev["gap"], "model_bytes": summ.get("model_bytes"),
            "code_bytes": summ.get("code_bytes"), "embedding": embedding_stats(rep)}


def format_table(rows: list[dict]) -> str:
    head = ("| vocab | params | ms/step | val tokens/byte | pre val_bpb | post val_bpb | gap | "
            "model bytes | embedding bytes (share, bits) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        e = r["embedding"]
        share = f"{100 * e['share']:.1f} %" if e.get("share") is not None else "?"
        lines.append(f"| {r['vocab']} | {r['params']:,} | {r['ms_per_step']:.0f} | "
                     f"{r['tokens_per_byte']:.4f} | {r['pre_val_bpb']:.4f} | {r['post_val_bpb']:.4f} | "
                     f"{r['gap']:+.4f} | {r['model_bytes']:,} | {e.get('bytes', 0):,} ({share}, "
                     f"{e.get('method')} {e.get('bits')}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocabs", default="1024,8192")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--budget-bytes", type=int, default=340_000)
    ap.add_argument("--stdlib-mb", type=float, default=2.0)
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/bench_vocab")
    ap.add_argument("--out", default="bench/results/vocab.json")
    args = ap.parse_args(argv)
    work = Path(args.work)
    rows = []
    t0 = time.perf_counter()
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        ds, tok = build_data(args, work, vocab)
        row = run_one(args, vocab, ds, tok, work / "runs")
        print(f"vocab:{vocab} pre:{row['pre_val_bpb']:.6f} post:{row['post_val_bpb']:.6f} "
              f"wall:{row['wall_seconds']:.0f}s", flush=True)
        rows.append(row)
    out = {"args": vars(args), "rows": rows, "wall_seconds": time.perf_counter() - t0}
    atomic_write_json(args.out, out)
    print(json.dumps(out, indent=1))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
