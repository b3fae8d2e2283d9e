"""Shared fixtures: paths to ../shared/data, the embedded corpus built once per session,
and a tiny model configuration that trains in seconds on CPU."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

# Before torch loads MKL: the legality tests compare scores bit for bit while the perturbation
# re-batches documents (other matrix shapes). MKL's default kernels on AVX-512 AMD cores round a
# row differently when the GEMM's shape changes (measured here: 4.8e-7 on one target);
# the COMPATIBLE path is shape-independent. Children (torchrun, spawn) inherit it.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

torch = pytest.importorskip("torch")
# At most 2 threads, and OMP_NUM_THREADS when it is set: on busy cores 2 spin-waiting threads
# made a tiny fit 12x slower (bench.mutation's children and loaded machines set it to 1).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

SHARED_DATA = Path(os.environ.get("GOLF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
OFFICIAL_TOKENIZER = SHARED_DATA / "tokenizers" / "fineweb_1024_bpe.model"
OFFICIAL_TOKENIZER_SHA256 = "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a"


# The records' per-group container (record_1855 / record_2135) runs the lrzip system binary.
needs_lrzip = pytest.mark.skipif(
    shutil.which("lrzip") is None,
    reason="lrzip not on PATH: record_1855 / record_2135 store codes in the records' per-group "
           "lrzip container; apt-get install lrzip (.ci/run installs it)")


@pytest.fixture()
def one_thread():
    """One OpenMP thread: tiny models on shared cores otherwise lose time to spin-waits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}: byte-exactness tests need the "
                    "shared corpora (set GOLF_SHARED_DATA to point at them)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def official_tokenizer(shared_data: Path) -> Path:
    if not OFFICIAL_TOKENIZER.is_file():
        pytest.skip(f"official tokenizer missing at {OFFICIAL_TOKENIZER}")
    return OFFICIAL_TOKENIZER


@pytest.fixture(scope="session")
def embedded_data(tmp_path_factory):
    """The embedded corpus (shards + tokenizer), built once per test session."""
    from golf.data.sources.embedded import prepare_embedded
    root = tmp_path_factory.mktemp("embedded_data")
    return prepare_embedded(root)


def tiny_pipeline_config(data, **changes):
    """A 2-layer model over the prepared corpus `data` (DatasetPaths): every feature on,
    seconds per dozen steps; `changes` override it (the shared base of the tiny runs)."""
    from golf.run.config import Config
    base = dict(data_path=str(data.dataset_dir), tokenizer_path=str(data.tokenizer_path),
                num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                train_seq_len=64, train_batch_tokens=1024, iterations=20, warmup_steps=0,
                warmdown_iters=5, max_wallclock_seconds=0.0, val_loss_every=0, train_log_every=5,
                val_batch_size=8192, eval_seq_len=64, eval_stride=0, compile=False,
                gptq_calib_batches=2, ema_decay=0.9)
    # pinned to the R29 CPU stack (bigram, VE, the old SmearGate): the CPU default is cpu_frontier
    return Config.from_env({"PRESET": "cpu"}, cpu_preset=True).replace(**{**base, **changes})


def randomize(m, seed: int = 0, std: float = 0.1):
    """Give every parameter of module `m` (zero-initialised ones too) non-trivial values, so
    every gate, lambda and projection matters in a comparison; returns `m`."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return m


def untrained_run(run: Path, cfg, seed: int = 0, noise: float = 0.0):
    """A run folder as the main job leaves it, without training: a seeded random GPT of `cfg`
    as ema.pt, its config.json and its int8 artifact (for eval/pack/TTT tests). Returns the model.
    noise > 0 adds N(0, noise^2) to every parameter: the zero-initialised output projections
    make a fresh GPT's prediction independent of context, which a window test cannot see."""
    import torch

    import quant
    from golf.run import rundir as rd
    from golf.model.gpt import GPT
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    run.mkdir(parents=True, exist_ok=True)
    (run / rd.CONFIG).write_text(json.dumps(cfg.to_dict()))
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, run / rd.EMA)
    quant.save_artifact(run / rd.ARTIFACT,
                        quant.quantize_model(model, method="int8", meta={"config": cfg.to_dict()}))
    return model


@pytest.fixture(scope="session")
def packed_tiny_run(tmp_path_factory, embedded_data):
    """The main job at tiny scale, trained, quantized, evaluated and packed once per session
    (golf.main.run_pipeline, the path `python train_gpt.py` takes): (cfg, summary, tmp) with
    the run under tmp/runs/e2e and its submission folder at tmp/submission. Tests that change
    the run refit it with PACK=0, so the submission folder stays as the pack wrote it."""
    from golf.main import run_pipeline
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny_pipeline_config(embedded_data, iterations=8, warmdown_iters=4, val_loss_every=4,
                               train_log_every=2, quant_small_numel=1024, max_eval_tokens=4096,
                               runs_dir=str(tmp / "runs"), run_id="e2e")
    summary = run_pipeline(cfg, do_pack=True, out_dir=str(tmp / "submission"))
    return cfg, summary, tmp


@pytest.fixture()
def tiny_config(embedded_data):
    """The tiny model (tiny_pipeline_config) over the embedded corpus."""
    return tiny_pipeline_config(embedded_data)


def exit_without_teardown() -> None:
    """End a spawned gloo worker whose results are all on disk. About one run in ten such a
    process aborted in torch's C++ teardown after its last Python frame ("terminate called
    without an active exception", no Python frame in faulthandler), failing a test whose work
    was done; os._exit skips that teardown. Called only on the success path, so a worker that
    raised still reports its error to mp.spawn."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
