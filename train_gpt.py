"""Train the 11-layer XSA / QK-gain model, quantize it to the byte budget, evaluate, pack.

    python train_gpt.py                                  # CPU: embedded corpus, small preset
    torchrun --standalone --nproc_per_node=8 train_gpt.py # GPU: the 11L stack on FineWeb

Hyperparameters come from environment variables (see README.md and golf/config.py).
`pack.py` turns this checkout into the single self-contained train_gpt.py a submission ships.
"""
from golf.main import main

if __name__ == "__main__":
    raise SystemExit(main())
