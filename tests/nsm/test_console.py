"""``python -m nsm.train > log``: one line per epoch, no progress-bar redraws in a file."""

from __future__ import annotations

import subprocess
import sys


def test_redirected_output_has_no_progress_bar(tmp_path):
    (tmp_path / "small.yaml").write_text("num_graphs: 120\nhidden_dim: 16\nnum_bases: 4\nepochs: 2\nbatch_size: 16\n"
                                         "dropout: 0.3\n")
    done = subprocess.run([sys.executable, "-m", "nsm.train", "--config", "small.yaml", "--out", "run"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("training planning on cpu: lr 0.003, cycle_weight 0.01, batch_size 16, ")
    assert "dropout 0.3" in lines[0] and "hidden_dim 16" in lines[0]  # keys that differ from the defaults
    assert [line.split()[:2] for line in lines if line.startswith("epoch")] == [["epoch", "1"], ["epoch", "2"]]
