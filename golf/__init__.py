"""golfkit: train, quantize, evaluate and pack Parameter Golf submissions."""
