"""A training stage on several processes: the build launches torchrun, whose workers run the stage as DDP ranks.

The pipeline stays one process. When ``factory build --nproc N`` reaches a stage that trains,
:func:`launch_stage` runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m
factory.pipeline.launch ...`` and waits. Each worker (:func:`main`) re-opens the build's resolved recipe (written into
the stage's folder as ``recipe.resolved.yaml``, the provenance copy the build writes there anyway), checks that it
computes the stage key the build computed (so it trains exactly what the build will record), joins the process group
(gloo on the CPU, NCCL on GPUs) and runs the stage function with ``torch.set_num_threads(max(1, threads // N))``.
The training loop (:func:`factory.train.loop.fit`) sees the process group and trains as one DDP rank; rank 0 alone
writes the model, the checkpoints and the stage's result, which the build reads back and records (cache, summary,
artifacts) as it does for a stage it ran itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from factory.files import read_json, write_json, write_text
from factory.pipeline.stage import Stage, StageContext, StageResult, cached_output, registry_of
from factory.runtime.artifacts import Artifact

RECIPE_FILE = "recipe.resolved.yaml"  # the name the build gives its provenance copy of the recipe
# Written by the workers, read and removed by the build before it hashes the stage's files.
RESULT_FILE = ".launch-result.json"
ERROR_FILE = ".launch-error.json"


def launch_stage(stage: Stage, ctx: StageContext, nproc: int, key: str) -> StageResult:
    """Run ``stage`` as ``nproc`` DDP processes under torchrun into ``ctx.work_dir``; return what rank 0 recorded.

    Args:
        stage: a stage that trains (``stage.trains(ctx.config)`` is not None).
        ctx: the stage's context in the build; its ``work_dir`` is the workers' too.
        nproc: processes (one per CPU or GPU; the build has checked the machine has them).
        key: the stage's cache key, which each worker recomputes from the recipe it re-opens.

    Raises:
        ValueError: a worker refused its input (a NaN loss, a bad setting), with the worker's message.
        OSError: a worker could not write.
        RuntimeError: the workers failed otherwise (their output is above the error).
    """
    recipe_file = write_text(ctx.work_dir / RECIPE_FILE, ctx.recipe.to_yaml())
    for stale in (RESULT_FILE, ERROR_FILE):
        (ctx.work_dir / stale).unlink(missing_ok=True)
    threads = max(1, ctx.recipe.threads // nproc)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        __name__,
        "--stage",
        stage.name,
        "--recipe",
        str(recipe_file),
        "--work-dir",
        str(ctx.work_dir),
        "--key",
        key,
        "--progress" if ctx.progress else "--no-progress",
    ]
    for name, out in ctx.inputs.items():
        command += ["--input", f"{name}={out.dir}"]
    # torchrun would set OMP_NUM_THREADS to 1 (with a warning) when it is unset; each rank's share is the right one.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached torchrun and its workers too: let them stop before the build lock is released, so no
        # worker still writes into the stage's folder behind the next build's back.
        proc.wait()
        raise
    error, result = ctx.work_dir / ERROR_FILE, ctx.work_dir / RESULT_FILE
    if error.is_file():
        failure = read_json(error)
        error.unlink()
        raise _rebuilt(failure)
    if code != 0 or not result.is_file():
        raise RuntimeError(f"the {nproc} training processes of stage {stage.name} failed (torchrun exit {code})")
    record = read_json(result)
    result.unlink()  # not an output of the stage: it must not enter the stage's files or their hashes
    return StageResult(record["metrics"], [Artifact.from_dict(a) for a in record["artifacts"]])


def _die_with_parent() -> None:
    """In torchrun's process before it starts: SIGTERM it when the build dies (Linux), and it stops its workers.

    Otherwise a build killed with SIGKILL would leave torchrun training into the stage's folder after the build lock
    is gone, under the feet of the next build that resumes there.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _record(error: Exception, rank: int) -> dict:
    """A worker's exception as JSON: its kind (what the CLI's exit code depends on) and what rebuilds it."""
    if isinstance(error, OSError):
        return {"kind": "machine", "rank": rank, "args": [error.errno, error.strerror or str(error), error.filename]}
    kind = "input" if isinstance(error, ValueError) else "other"
    return {"kind": kind, "rank": rank, "args": [str(error)]}


# A worker's exception kind -> what the build raises, so the CLI reports it with the exit code it would have in
# one process (bad input 2, the machine 3, a bug 1 with its message).
_ERRORS: dict[str, type[Exception]] = {"input": ValueError, "machine": OSError, "other": RuntimeError}


def _rebuilt(failure: dict) -> Exception:
    if failure["kind"] == "machine" and failure["args"][0] is None:  # an OSError without errno: its text only
        return OSError(failure["args"][1])
    return _ERRORS[failure["kind"]](*failure["args"])


def main(argv: list[str] | None = None) -> None:
    """One torchrun worker: run one stage of the build's recipe as a DDP rank (see the module docstring)."""
    import torch
    import torch.distributed as dist

    from factory.pipeline.cache import stage_key, stage_material
    from factory.recipe import load_recipe
    from factory.train.device import resolve_device
    from factory.train.distributed import BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--input", action="append", default=[], help="NAME=DIR of a finished upstream stage")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args(argv)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        recipe = load_recipe(args.recipe)
        from factory.pipeline.stages import STAGES

        stage = registry_of(STAGES)[0].get(args.stage)
        inputs = {}
        for item in args.input:
            name, folder = item.split("=", 1)
            inputs[name] = cached_output(name, Path(folder).name, Path(folder))
        if stage_key(stage_material(stage, recipe, inputs, size)) != args.key:
            raise RuntimeError(
                f"the worker of stage {stage.name} re-opened {args.recipe} and got another stage key than the build: "
                "it would train something the build does not record"
            )
        ctx = StageContext(
            config=stage.config(recipe),
            work_dir=args.work_dir,
            inputs=inputs,
            recipe=recipe,
            echo=print if rank == 0 else lambda line: None,
            progress=args.progress and rank == 0,
        )
        device = resolve_device(stage.trains(ctx.config).device, local_rank, stage.name)
        torch.set_num_threads(max(1, recipe.threads // size))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(BACKENDS[device.type])
        try:
            made = stage.run(ctx)
        finally:
            dist.destroy_process_group()
    except Exception as e:  # not a KeyboardInterrupt: the build got the same Ctrl-C and reports it itself
        write_json(args.work_dir / ERROR_FILE, _record(e, rank))
        if not isinstance(e, ValueError | OSError):
            raise  # a bug: its traceback
        print(f"rank {rank}: {e}", file=sys.stderr)
        sys.exit(1)
    if rank == 0:
        write_json(
            args.work_dir / RESULT_FILE, {"metrics": made.metrics, "artifacts": [a.to_dict() for a in made.artifacts]}
        )


if __name__ == "__main__":
    main()
