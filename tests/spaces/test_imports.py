"""Reading a search space does not load the workload: no torch, no PyG."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_loader_leaves_torch_out_of_sys_modules(tmp_path):
    code = (
        "import sys\n"
        "import spaces.loader\n"
        "from spaces import DEFAULT_SPACE, load_space\n"
        "load_space(DEFAULT_SPACE, 'planning')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torch_geometric')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
