"""Pure-PyTorch references: test oracles, fallbacks and benchmark baselines."""
