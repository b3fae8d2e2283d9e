"""Training: the loop (Trainer), one step across ranks, optimizer groups, Muon, the seq-len schedule."""
