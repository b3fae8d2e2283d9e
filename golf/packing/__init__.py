"""Packaging internals behind golf.pack: amalgamation, byte budget, statistics,
round-trip proof and pre-submit checks (one job per module)."""
