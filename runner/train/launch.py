"""Run a stage's training (any trainer's) in N processes: `recipe run --launcher deepspeed|torchrun --num-procs N
[--hostfile H]`. Each process runs `python -m runner.train.worker SPEC` (worker.py); the launcher
gives each its RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous address.

- torchrun: one node, N processes.
- deepspeed: N processes on this node, or the nodes and slots of a DeepSpeed hostfile (launched
  over pdsh/ssh by DeepSpeed's runner; not exercised on a single machine).
Without CUDA the processes share the CPU cores: each gets cores / N threads unless OMP_NUM_THREADS
is set, since N processes with every core each are slower than one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from .distributed import free_port

LAUNCHERS = ("torchrun", "deepspeed")


def check(launcher: str, num_procs: int | None, hostfile: str | Path | None) -> None:
    """The one rule for --launcher, --num-procs and --hostfile together (checked before anything runs)."""
    if launcher not in ("none", *LAUNCHERS):
        raise RecipeError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    if launcher != "none" and not num_procs:
        raise RecipeError(f"--launcher {launcher} needs --num-procs N (the total number of processes)")
    if launcher == "none" and num_procs:
        raise RecipeError("--num-procs needs --launcher torchrun or --launcher deepspeed")
    if hostfile and launcher != "deepspeed":
        raise RecipeError("--hostfile is read by the DeepSpeed launcher: add --launcher deepspeed --num-procs N")


def command(spec_path: str | Path, *, launcher: str, num_procs: int, hostfile: str | Path | None = None,
            master_port: int | None = None) -> list[str]:
    """The command line that trains the spec'd stage in `num_procs` processes."""
    check(launcher, num_procs, hostfile)
    port = str(master_port or free_port())
    worker = ["runner.train.worker", str(spec_path)]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={num_procs}",
                "--master-addr=127.0.0.1", f"--master-port={port}", "-m", *worker]
    where = ["--hostfile", str(hostfile)] if hostfile else ["--num_gpus", str(num_procs)]
    return [sys.executable, "-m", "deepspeed.launcher.runner", *where, "--master_port", port,
            "--module", *worker]


def launch(spec_path: str | Path, *, launcher: str, num_procs: int, hostfile: str | Path | None = None,
           log=print, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the command and return the metrics the main process wrote; `secrets` as given to write_spec
    travel in the processes' environment, never in a file."""
    import torch

    from .worker import SECRETS_ENV

    spec = json.loads(Path(spec_path).read_text())
    env = dict(os.environ)
    if secrets:
        env[SECRETS_ENV] = json.dumps(list(secrets), ensure_ascii=False)
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_procs)))
        env.setdefault("DS_ACCELERATOR", "cpu")
    # the workers import `runner` from wherever this process did
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = command(spec_path, launcher=launcher, num_procs=num_procs, hostfile=hostfile)
    log(" ".join(cmd))
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise RecipeError(f"{launcher} training of {spec['spec']['stage']} failed (exit {done.returncode}); "
                          "see the processes' output above")
    return json.loads((Path(spec["job"]["out_dir"]) / "metrics.json").read_text())
