#!/usr/bin/env python
"""Loader throughput of two revisions of this repository, side by side in one run.

Each revision (``--before``, ``--after``; a commit, tag or branch, or ``.`` for the working tree) is
checked out into a git worktree under ``--work`` (kept between runs), its native operator built there
for the CPU (CMake + Ninja with this venv's Python and DALI), and its own
``pipelines/bench_throughput.py`` run with the arguments after ``--``, importing that revision's
package (not the installed one) and loading its own plugin (``DALI_IPMIX_NATIVE_LIB``). The two
alternate for ``--rounds`` rounds (before, after, before, after, ...) so that a machine busy at one
moment does not favour one side; a row's rate is its best round. The table prints every row both
measured, samples/s, and after / before.

    python pipelines/bench_revisions.py --before 99aa14a^ --after . -- --rows dali-cpu,ipmix-native-cpu,ipmix-cpu --jsd on
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kwargs):
    """``cmd`` with its output shown only when it fails (a CalledProcessError names the command)."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:])
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return proc.stdout


def checkout(rev: str, work: str) -> str:
    """The tree of ``rev`` (``.``: this working tree, as it is), with its plugin built; its path."""
    if rev == ".":
        tree = REPO
    else:
        sha = run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"]).strip()
        tree = os.path.join(work, sha[:12])
        if not os.path.isdir(tree):
            print(f"[revisions] worktree of {rev} ({sha[:12]}) in {tree}", flush=True)
            run(["git", "-C", REPO, "worktree", "add", "--detach", tree, sha])
    build = os.path.join(tree, "build", "bench-revisions")
    print(f"[revisions] building the CPU plugin of {rev} in {build}", flush=True)
    run(["cmake", "-S", tree, "-B", build, "-G", "Ninja", f"-DPython_EXECUTABLE={sys.executable}",
         "-DIPMIX_GPU=OFF", "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", build])
    return tree


def bench(tree: str, args, out: str) -> dict:
    """``tree``'s bench_throughput.py with ``args``, its package first on the path; rows by name."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, sysconfig.get_paths()["purelib"]]),
               DALI_IPMIX_NATIVE_LIB=os.path.join(tree, "build", "bench-revisions",
                                                  "libdali_ipmix_native.so"))
    # -S: without site, the installed (editable) package's import hook does not shadow the tree's.
    subprocess.run([sys.executable, "-S", os.path.join(tree, "pipelines", "bench_throughput.py"), *args,
                    "--json", out], env=env, cwd=tree, check=True)
    with open(out) as f:
        return {r["name"]: r for r in json.load(f)["rows"]}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="revision measured first (commit, tag, branch, or .)")
    ap.add_argument("--after", default=".", help="revision compared with it (default: this working tree)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per revision (default 2)")
    ap.add_argument("--work", default=os.path.join(REPO, "build", "revisions"),
                    help="folder of the worktrees (default build/revisions)")
    args = ap.parse_args(argv[:split])
    bench_args = argv[split + 1:]
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds} is invalid: at least 1")
    trees = {side: checkout(getattr(args, side), args.work) for side in ("before", "after")}
    best = {"before": {}, "after": {}}
    for r in range(args.rounds):
        for side, tree in trees.items():
            print(f"[revisions] round {r + 1}/{args.rounds}: {side} ({getattr(args, side)})", flush=True)
            rows = bench(tree, bench_args, os.path.join(args.work, f"{side}-{r}.json"))
            for name, row in rows.items():
                rate = row.get("samples_per_s") if row.get("status") == "ok" else None
                if rate is not None and rate > best[side].get(name, 0.0):
                    best[side][name] = rate
    names = [n for n in best["before"] if n in best["after"]]
    print(f"\nsamples/s, best of {args.rounds} alternating rounds; before = {args.before}, after = "
          f"{args.after}; bench_throughput.py {' '.join(bench_args)}")
    print(f"  {'row':<28s} {'before':>10s} {'after':>10s} {'after/before':>13s}")
    for n in names:
        b, a = best["before"][n], best["after"][n]
        print(f"  {n:<28s} {b:10.1f} {a:10.1f} {a / b:12.2f}x")
    missing = sorted(set(best["before"]) ^ set(best["after"]))
    if missing:
        print(f"  (measured on one side only: {', '.join(missing)})")
    return 0 if names else 1


if __name__ == "__main__":
    raise SystemExit(main())
