"""pipelines/bench_revisions.py: two revisions' loader throughput in one run."""

import os
import subprocess

from test_bench_throughput import TINY, run_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_revisions_compares_two_trees_in_one_run(tmp_path):
    """pipelines/bench_revisions.py: HEAD in a worktree (its own plugin built) against this tree, the
    rows both measured in one table with their ratio."""
    try:
        proc, log = run_script(["pipelines/bench_revisions.py", "--before", "HEAD", "--rounds", "1",
                                "--work", tmp_path / "revs", "--", *TINY, "--cache-dir", tmp_path / "cache",
                                "--rows", "dali-cpu,ipmix-native-cpu", "--jsd", "on", "--cpu-batch-size",
                                "8", "--batches", "1", "--warmup", "1"], timeout=600)
    finally:   # the repository keeps no registration of the test's worktree
        for tree in (tmp_path / "revs").glob("*/"):
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", str(tree)], check=False)
    assert proc.returncode == 0, log[-6000:]
    table = log[log.index("samples/s, best of 1 alternating rounds"):].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[2:] if line.strip()}
    assert set(rows) == {"dali-cpu", "ipmix-native-cpu-jsd"}, log[-3000:]
    for before, after, ratio in rows.values():
        assert float(before) > 0 and float(after) > 0
        assert abs(float(ratio.rstrip("x")) - float(after) / float(before)) < 0.01
