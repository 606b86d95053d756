"""Tests on tiny models shaped like real checkpoints (seven architectures, real-style tokenizers)."""
