"""Code the tests share, imported by name (conftest.py puts tests/ on sys.path):
  data    recipes for the data steps and a runner for them, rows of the repository's data/
  train   a small SFT recipe and what tests read back from a training run (losses, adapter weights)
  fomaml  small FOMAML problems with known answers (also a script for multi-process runs)
  hub     a fake Hugging Face hub cache with datasets in it"""
