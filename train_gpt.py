"""Train the 11-layer XSA / QK-gain model, quantize it to the byte budget, evaluate, pack.

    python train_gpt.py                                  # CPU: embedded corpus, small preset
    torchrun --standalone --nproc_per_node=8 train_gpt.py # GPU: the 11L stack on FineWeb
    python train_gpt.py --help                           # every setting, its defaults, its meaning

Hyperparameters come from environment variables (docs/settings.md, generated from golf/run/settings.py).
`pack.py` turns this checkout into the single self-contained train_gpt.py a submission ships.
"""
import sys

from golf.main import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
