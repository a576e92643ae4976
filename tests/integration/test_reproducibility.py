"""Reproducibility: the same seed gives the same weights whatever the thread count (trains twice), and
the fresh-clone script parses."""

from __future__ import annotations

import hashlib
from export.build import train


def test_same_seed_same_weights_whatever_the_thread_count(tmp_path):
    import torch

    digests, before = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)  # what the machine offers must not matter
            run_dir, _ = train("digits-cnn", {"epochs": 1, "train_limit": 600}, run_dir=tmp_path / f"t{threads}",
                               progress=False)
            digests.append(hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest())
    finally:
        torch.set_num_threads(before)  # the process's setting, as the next test expects it
    assert digests[0] == digests[1]


def test_fresh_clone_check_script_is_valid_bash():
    import subprocess

    subprocess.run(["bash", "-n", "scripts/fresh-clone-check.sh"], check=True)
