"""The ``factory`` command: parses arguments, calls library functions, prints. No logic lives here.

Exit codes (also in ``factory --help`` and the README): see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from factory.pipeline.lock import RunDirBusy
from factory.recipe import Recipe, RecipeError, load_recipe
from factory.recipe.schema import usable_cpus
from factory.registry import UnknownNameError

EXIT_GATE, EXIT_INPUT, EXIT_MACHINE, EXIT_INTERRUPT = 1, 2, 3, 130
EXIT_CODES = f"""\b
Exit codes:
  0    success
  {EXIT_GATE}    a release gate failed: no new release; the last good one stays
  {EXIT_INPUT}    bad input (recipe, file, option, a NaN loss) or the run directory is busy with another build
  {EXIT_MACHINE}    the machine: cannot write (read-only, disk full, permission); finished stages are cached
  {EXIT_INTERRUPT}  interrupted: run the same command again to resume"""

# Errors of the machine rather than of the input: the same command works once the disk or the permissions do.
MACHINE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO}

MISSING_ASSETS = "the recipe is sound, but files it names are not there (put them in place, or point the keys at them)"
SET_HELP = "Override a recipe value, e.g. --set distill.train.steps=200 (repeatable)."


THREADS = click.IntRange(1, usable_cpus())
RUNTIME_THREADS = min(2, usable_cpus())
BATCH = click.IntRange(1, 4096)
NPROC = click.IntRange(1)
NPROC_HELP = (
    "Train the teacher and the student with N processes (DDP under torchrun, each on a slice of every batch): at "
    "most one per CPU, or per GPU with train.device cuda. A run on N processes is cached apart from one on 1."
)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's precise exceptions into one-line messages and the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecipeError as e:
            if e.only_missing_assets:
                click.echo(f"error: {MISSING_ASSETS}:", err=True)
            click.echo(str(e), err=True)  # one located line per problem
            sys.exit(EXIT_INPUT)
        except UnknownNameError as e:
            click.echo(f"error: {e.message}", err=True)
            sys.exit(EXIT_INPUT)
        except RunDirBusy as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_INPUT)
        except OSError as e:
            if e.errno not in MACHINE_ERRNOS:
                # Not found, a folder for a file, ...: the input is wrong.
                click.echo(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", err=True)
                sys.exit(EXIT_INPUT)
            verb = "write" if e.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT) else "access"
            where = f" {e.filename}" if e.filename else ""
            cached = "; finished stages are cached" if fn.__name__ == "build" else ""
            click.echo(f"error: cannot {verb}{where}: {e.strerror}{cached}", err=True)
            sys.exit(EXIT_MACHINE)
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_INPUT)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished stages are cached; run the same command again to resume.", err=True)
            sys.exit(EXIT_INTERRUPT)

    return wrapper


def _given(name: str) -> bool:
    """Whether option ``name`` was typed on the command line (not left at its default)."""
    return click.get_current_context().get_parameter_source(name) is ParameterSource.COMMANDLINE


def _refuse_ignored(flags: dict[str, str], reason: str) -> None:
    """Options (parameter name -> flag) that would be silently ignored are an error instead."""
    for name, flag in flags.items():
        if _given(name):
            raise click.UsageError(f"{flag} {reason}")


def _model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model/--weights or --artifact, and --normalization: how `embed` and `eval` name the model to run."""
    options = [
        click.option(
            "--model", "model_name", metavar="NAME", help="Zoo architecture (with --weights, or a fresh one)."
        ),
        click.option(
            "--weights",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Weights for --model: a factory checkpoint, an insightface state_dict (.pth/.pt) or .safetensors.",
        ),
        click.option(
            "--artifact",
            type=click.Path(dir_okay=False, path_type=Path),
            help="An exported model instead: .onnx or .ort (ONNX Runtime), .xml (OpenVINO), .engine (TensorRT), "
            "TorchScript or a checkpoint.",
        ),
        click.option(
            "--normalization",
            type=click.Choice(["arcface", "legacy128"]),
            help="Input convention of the weights when it is not stored with them (legacy128: (x-127.5)/128).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EXIT_CODES)
@click.version_option(package_name="factory")
def main() -> None:
    """Edge-deployment model factory for fair face recognition.

    A recipe (YAML) describes one build: data -> teacher -> distill -> export -> compress -> validate -> release.
    `factory build RECIPE` runs it, caching every stage under runs/<recipe name>/, and publishes a release only if
    every gate in the recipe passes.
    """


@main.command(epilog=EXIT_CODES)
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--force", multiple=True, metavar="STAGE", help="Re-run this stage even if it is cached (repeatable).")
@click.option("--until", metavar="STAGE", help="Stop after this stage.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on when stderr is a terminal).")
@click.option("--wait", is_flag=True, help="If another build holds this run directory, wait for it instead of exiting.")
@click.option("--nproc", default=1, show_default=True, type=NPROC, help=NPROC_HELP)
@_friendly
def build(
    recipe: Path,
    overrides: tuple[str, ...],
    force: tuple[str, ...],
    until: str | None,
    progress: bool | None,
    wait: bool,
    nproc: int,
) -> None:
    """Run RECIPE end to end; print one line per stage, the gate table, the manifest's sha256 and, last, the release.

    Stages: data, teacher, distill, export, compress, validate, deploy (each of deploy.targets runs the shipped
    files through its bundle's runner), release. A stage whose settings, inputs and code
    are unchanged is skipped ("cached"). An interrupted build resumes where it stopped. One build runs per run
    directory at a time. A failed gate writes no release: <run_dir>/release keeps naming the last bundle that
    passed, and <run_dir>/release.failed.json records what failed.
    """
    from factory.pipeline.build import build as run_build
    from factory.pipeline.stage import GateFailure
    from factory.release.gates import GateResult, format_gate_table

    parsed = load_recipe(recipe, list(overrides))
    _warn_recipe(parsed)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = run_build(parsed, force=force, until=until, progress=show, wait=wait, nproc=nproc)
    except GateFailure as failure:
        if failure.validation is not None:
            _echo_validation(failure.validation)
            click.echo()
        click.echo(format_gate_table([GateResult(**g) for g in failure.gates]))
        click.echo(str(failure), err=True)
        click.echo(f"no new release written; the failure is recorded in {failure.record}", err=True)
        if failure.kept_release is not None:
            click.echo(f"the last good release remains: {failure.kept_release}", err=True)
        else:
            click.echo("no earlier release of this run directory exists", err=True)
        sys.exit(EXIT_GATE)
    if "validate" in result.stages:
        _echo_validation(result.stages["validate"].metrics)
    if result.stages.get("deploy") is not None and result.stages["deploy"].metrics["targets"]:
        from factory.deploy.report import targets_table

        click.echo("\non the targets (each bundle's runner there; benchmark_app beside each OpenVINO IR):")
        click.echo(targets_table(result.stages["deploy"].metrics["targets"]))
    if result.release_dir is not None:
        published = result.stages["release"].metrics
        click.echo("\n" + format_gate_table([GateResult(**g) for g in published["gates"]]) + "\n")
        bundle = result.release_dir.resolve()
        click.echo(f"manifest sha256 {published['manifest_sha256']}{' (signed)' if published['signed'] else ''}")
        click.echo(f"tarball {bundle.parent / published['tarball']} (sha256 {published['tarball_sha256']})")
        click.echo(str(result.release_dir.resolve()))


def _echo_validation(metrics: dict[str, Any]) -> None:
    """The accuracy table, the paired comparisons with parent artifacts and the latency table, where there are."""
    from factory.evaluate.tables import accuracy_table, comparison_table, latency_table

    click.echo("\n" + accuracy_table(metrics))
    paired = comparison_table(metrics)
    if paired:
        click.echo("\npaired with the parent artifact (same pairs and draws; McNemar p per group):\n" + paired)
    timed = latency_table(metrics)
    if timed:
        click.echo("\nlatency (the runtime's own call; benchmark_app beside each OpenVINO IR):\n" + timed)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--wait", is_flag=True, help="If a build holds the run directory, wait for it instead of exiting.")
@click.option(
    "--nproc", default=1, show_default=True, type=NPROC, help="Keep the training stages of builds with this --nproc."
)
@_friendly
def clean(recipe: Path, overrides: tuple[str, ...], dry_run: bool, wait: bool, nproc: int) -> None:
    """Free the space RECIPE's run directory spends on things its next build would not use.

    Removes stage results and .partial folders of other settings (older recipes, other --set values), folders of
    stages that no longer exist and leftovers of interrupted writes. Keeps what the next build uses (including
    resumable .partial folders) and the bundle <run_dir>/release names.
    """
    from factory.pipeline.clean import clean as run_clean

    result = run_clean(load_recipe(recipe, list(overrides)), dry_run=dry_run, wait=wait, nproc=nproc)
    for path in result.removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {path}")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{result.run_dir}: {verb} {_human_bytes(result.freed_bytes)} ({len(result.removed)} entries)")


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    power = min(3, (n.bit_length() - 1) // 10)  # 1 KiB .. GiB
    return f"{n / 1024**power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--resolved", is_flag=True, help="Print the resolved recipe (after extends and --set).")
@_friendly
def check(recipe: Path, overrides: tuple[str, ...], resolved: bool) -> None:
    """Validate RECIPE without running it.

    Exits 0 when it is valid; otherwise exits 2 and prints one line per problem as
    FILE:LINE: dotted.key: what is wrong (what is expected).
    A recipe whose only problems are missing files (a full-scale recipe in recipes/paper/ before its
    checkpoints, generator and datasets are in place) is valid: check lists the files and exits 0;
    `factory build` refuses it with the same list.
    """
    try:
        parsed = load_recipe(recipe, list(overrides))
    except RecipeError as e:
        if not e.only_missing_assets:
            raise
        click.echo(f"{recipe}: ok, but `factory build` needs files that are not there:")
        for issue in e.issues:
            click.echo(f"  {issue}")
        return
    _warn_recipe(parsed)
    if resolved:
        click.echo(parsed.to_yaml(), nl=False)
    else:
        click.echo(f"{recipe}: ok")


def _warn_recipe(parsed: Recipe) -> None:
    """``warning:`` lines on stderr: what the benchmark cannot resolve (FMR targets, gates), what calibration risks."""
    from factory.data.calibration import calibration_warnings
    from factory.evaluate.planning import recipe_warnings

    for line in [*calibration_warnings(parsed.data.calibration), *recipe_warnings(parsed)]:
        click.echo(f"warning: {line}", err=True)


@main.group()
def data() -> None:
    """Inspect, preview and convert datasets (and the built-in procedural world)."""


@data.command()
@click.argument("source", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("previews"),
    show_default=True,
    help="Folder for procedural previews; for a dataset SOURCE, the grid's .png file.",
)
@click.option(
    "--identities", default=8, show_default=True, type=click.IntRange(1, 256), help="Rows per grid (one per identity)."
)
@click.option(
    "--samples", default=6, show_default=True, type=click.IntRange(1, 256), help="Columns per grid (images of each)."
)
@_friendly
def preview(source: Path | None, out: Path, identities: int, samples: int) -> None:
    """Look at data: a PNG grid per group of the procedural world, or of a dataset.

    SOURCE is a recipe (its world; none for the built-in one) or a dataset (.rec, .bin, RFW root, image folder,
    list), shown as one grid with a row per group.
    """
    from factory.data.preview import write_dataset_preview, write_previews
    from factory.data.world.renderer import make_world
    from factory.recipe import Recipe

    if source is not None and source.suffix not in (".yaml", ".yml"):
        path = out if out.suffix == ".png" else out / f"{source.stem or source.name}.png"
        click.echo(str(write_dataset_preview(source, path, per_row=samples)))
        return
    parsed = load_recipe(source) if source else Recipe()
    for path in write_previews(
        make_world(parsed.data.world), out, identities=identities, samples=samples, seed=parsed.seed
    ):
        click.echo(str(path))


@data.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_friendly
def data_plan(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """How many benchmark pairs per group resolve RECIPE's gates and FMR targets, and what its size resolves.

    Estimates come from the newest validation in the recipe's run directory (per-group accuracies, interval widths,
    the INT8 comparison's discordant pairs), or from stated assumptions before the first build. Try another size
    with --set data.benchmark_pairs_per_group=N. Warnings (what the size cannot resolve) go to stderr; the exit
    code is 0 whatever the plan says.
    """
    import json

    from factory.evaluate.planning import format_plan, plan_benchmark, plan_warnings

    plan = plan_benchmark(load_recipe(recipe, list(overrides)))
    click.echo(json.dumps(plan.to_dict(), indent=2) if as_json else format_plan(plan, str(recipe)))
    for line in plan_warnings(plan):
        click.echo(f"warning: {line}", err=True)


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--sample", default=8, show_default=True, type=click.IntRange(0), help="How many images to decode as a check."
)
@_friendly
def inspect(path: Path, as_json: bool, sample: int) -> None:
    """Identify a dataset, count it and decode a sample of its images.

    Formats: RecordIO .rec, verification .bin, RFW root, image folder (BUPT or ImageFolder), CSV/TSV list.
    Exits 2 when a sampled image does not decode.
    """
    import json

    from factory.data.formats.convert import inspect_data

    info = inspect_data(path, sample=sample)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key:<12}{value}")
    if info["failures"]:
        sys.exit(EXIT_INPUT)


@data.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--to", "target", required=True, type=click.Choice(["imagefolder", "recordio", "bin", "rfw"]))
@click.argument("out", type=click.Path(path_type=Path))
@_friendly
def convert(src: Path, target: str, out: Path) -> None:
    """Convert SRC to another format at OUT, copying encoded image bytes unchanged.

    imagefolder: OUT/<identity>/<key>.<ext>; recordio: an insightface pack OUT (.rec, .idx, property); bin: OUT
    (.bin) or OUT/<set>_test.bin per RFW race; rfw: an RFW tree in OUT. A folder OUT must be empty or new and
    a file OUT must not exist: nothing is overwritten.
    """
    from factory.data.formats.convert import convert_data

    for written in convert_data(src, target, out):
        click.echo(str(written))


@data.command()
@click.argument("sources", nargs=-1, required=True, metavar="NAME=PATH:RATIO...")
@click.option(
    "--groups",
    "mapping",
    type=click.Path(dir_okay=False, path_type=Path),
    help="identity,group file for sources without group folders.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the mix as a path,identity,group CSV."
)
@_friendly
def mix(sources: tuple[str, ...], mapping: Path | None, seed: int, out: Path | None) -> None:
    """Mix labelled sources group by group, e.g. real=bupt/:0.7 synthetic=dcface/:0.3, and print the composition.

    Each PATH is an image folder (BUPT <group>/<identity>/ or <identity>/) or a CSV/TSV list; every group gets
    each source's ratio of its images.
    """
    from factory.data.mixing import mix_specs, write_image_list

    mixture = mix_specs(list(sources), mapping, seed=seed)
    click.echo(mixture.composition_table())
    if out is not None:
        click.echo(str(write_image_list(out, mixture.images)))


@main.command("eval")
@click.argument("benchmark", required=False, type=click.Path(path_type=Path))
@_model_options
@click.option(
    "--embeddings",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Precomputed .npz: embeddings (2N×D), issame (N), optional groups (N) and subjects (2N).",
)
@click.option("--flip/--no-flip", default=True, show_default=True, help="insightface flip fusion.")
@click.option("--json", "as_json", is_flag=True, help="Print the full evaluation as JSON.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path), help="Write DET, histogram, accuracy PNGs.")
@click.option(
    "--bootstrap", default=1000, show_default=True, type=click.IntRange(1), help="Subject-level bootstrap replicates."
)
@click.option("--batch-size", default=64, show_default=True, type=BATCH)
@click.option("--threads", default=RUNTIME_THREADS, show_default=True, type=THREADS, help="CPU threads of the runtime.")
@_friendly
def eval_command(
    benchmark: Path | None,
    model_name: str | None,
    weights: Path | None,
    artifact: Path | None,
    normalization: str | None,
    embeddings: Path | None,
    flip: bool,
    as_json: bool,
    plots: Path | None,
    bootstrap: int,
    batch_size: int,
    threads: int,
) -> None:
    """Evaluate a model on BENCHMARK, or precomputed --embeddings.

    BENCHMARK is a .bin set, an RFW root, a pairs list (image1,image2,issame[,group]), a benchmark .npz or the word
    `procedural`. Reports per-group accuracy (insightface protocol), TAR@FAR, STD/SER and operational fairness at one
    global threshold (FMR/FNMR per group, max/geomean, GARBE, FDR, bootstrap intervals).
    """
    import json

    from factory.evaluate.evaluate_cli import benchmark_from_embeddings, embed_benchmark, evaluate_and_plot

    if embeddings is not None:
        if benchmark is not None:
            raise click.UsageError("give BENCHMARK with a model, or --embeddings FILE (which holds its own pairs)")
        ignored = {
            "model_name": "--model",
            "weights": "--weights",
            "artifact": "--artifact",
            "normalization": "--normalization",
            "flip": "--flip/--no-flip",
            "batch_size": "--batch-size",
            "threads": "--threads",
        }
        _refuse_ignored(ignored, "has no effect with --embeddings (the embeddings are already computed)")
        vectors, bench = benchmark_from_embeddings(embeddings)
    else:
        if benchmark is None or (model_name is None) == (artifact is None):
            raise click.UsageError("give BENCHMARK and exactly one of --model/--artifact, or --embeddings FILE")
        _refuse_ignored({"weights": "--weights"} if artifact is not None else {}, "belongs to --model, not --artifact")
        from factory.data.formats.benchmarks import load_benchmark
        from factory.models.external import model_runner

        bench = load_benchmark(str(benchmark))
        runner = model_runner(model_name, weights, artifact, normalization, threads)
        vectors = embed_benchmark(runner, bench, flip, batch_size, sys.stderr.isatty())
    report = evaluate_and_plot(vectors, bench, plots, replicates=bootstrap)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from factory.evaluate.operational import format_operational
    from factory.evaluate.tables import percent_interval

    fair, level = report["fairness"], report["uncertainty"]["level"]
    click.echo(f"accuracy % (± half the {level:.0%} bootstrap interval over subjects)")
    for name, group in report["groups"].items():
        click.echo(f"{name:<14}{percent_interval(group['accuracy_mean'], group['ci']):>14}")
    std = "-" if fair["std"] is None else percent_interval(fair["std"], fair["ci"]["std"], "brackets")
    ser_point, *ser_bounds = (
        f"{v:.2f}" if isinstance(v, float) else str(v) for v in (fair["ser"], *(fair["ci"]["ser"] or ()))
    )
    ser_text = ser_point + (f" [{', '.join(ser_bounds)}]" if ser_bounds else "")
    click.echo(f"{'mean':<14}{percent_interval(fair['mean'], fair['ci']['mean']):>14}   STD {std}   SER {ser_text}")
    for key, block in report["operational"].items():
        click.echo(format_operational(key, block))


@main.group()
def models() -> None:
    """The model zoo: every architecture the factory builds."""


@models.command("list")
@_friendly
def models_list() -> None:
    """A table of every model: parameters, MFLOPs (2 x MACs, as the papers count) and input size."""
    from factory.models.zoo import list_models, model_info

    click.echo(f"{'name':<15}{'params':>13}{'MFLOPs':>11}  input")
    for name in list_models():
        info = model_info(name)
        h, w = info["input_size"]
        click.echo(f"{name:<15}{info['params']:>13,}{info['flops'] / 1e6:>11.1f}  {h}x{w}")


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_friendly
def models_info(name: str, as_json: bool) -> None:
    """Size and input contract of model NAME."""
    import json

    from factory.models.zoo import model_info

    info = model_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(
                f"{key:<18}{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{key:<18}{value}"
            )


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz.")
@click.option("--flip", is_flag=True, help="Fuse each embedding with its mirrored image's (insightface).")
@click.option("--batch-size", default=64, show_default=True, type=BATCH)
@click.option("--threads", default=RUNTIME_THREADS, show_default=True, type=THREADS, help="CPU threads of the runtime.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on when stderr is a terminal).")
@_friendly
def embed(
    inputs: tuple[Path, ...],
    model_name: str | None,
    weights: Path | None,
    artifact: Path | None,
    normalization: str | None,
    out: Path,
    flip: bool,
    batch_size: int,
    threads: int,
    progress: bool | None,
) -> None:
    """Write L2-normalised embeddings of aligned face images to an .npz (arrays `embeddings` N×D and `paths`).

    INPUTS are image files, folders (searched recursively) or .txt lists of paths; images are embedded in sorted
    path order and must already be aligned at the model's input size.
    """
    from factory.evaluate.embed import embed_files, list_images, write_embeddings
    from factory.models.external import model_runner
    from factory.runtime.runners import embed_uint8

    if (model_name is None) == (artifact is None):
        raise click.UsageError("give exactly one of --model NAME [--weights FILE] or --artifact FILE")
    _refuse_ignored({"weights": "--weights"} if artifact is not None else {}, "belongs to --model, not --artifact")
    runner = model_runner(model_name, weights, artifact, normalization, threads)
    paths = list_images(inputs)
    show = sys.stderr.isatty() if progress is None else progress
    vectors = embed_files(embed_uint8(runner), paths, runner.contract.input_size[0], batch_size, flip, show)
    write_embeddings(out, vectors, paths)
    click.echo(f"{len(paths)} embeddings ({vectors.shape[1]}-d{', flip-fused' if flip else ''}) -> {out}")


@main.group()
def deploy() -> None:
    """Measure a release on its targets: bundles for a device, run there or ingested by hand.

    Targets are YAML files: the factory's own in deploy/targets/ (see `factory deploy targets`) or any path.
    """


TARGET_HELP = "A target name (deploy/targets/NAME.yaml, or one of the recipe's deploy.targets) or a target YAML path."


@deploy.command("targets")
def deploy_targets() -> None:
    """List the factory's targets: name, runtime, precisions, transport."""
    from factory.recipe.loader import load_target
    from factory.recipe.targets import TARGETS_DIR, known_targets

    for name in known_targets():
        t = load_target(TARGETS_DIR / f"{name}.yaml")
        click.echo(f"{name:<28} {t.runtime:<12} {','.join(t.precisions):<16} {t.transport.kind:<7} {t.description}")


@deploy.command("bundle", epilog=EXIT_CODES)
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target_name", required=True, metavar="TARGET", help=TARGET_HELP)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Bundle folder (default: <run_dir>/bundles/TARGET)."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_friendly
def deploy_bundle(recipe: Path, target_name: str, out: Path | None, overrides: tuple[str, ...]) -> None:
    """Write the self-contained folder TARGET runs: model files, runner, benchmark faces, golden vectors.

    Builds RECIPE up to validate first (cached stages are reused). On the device: `python run_target.py` in the
    folder (numpy and the target's runtime are all it needs) writes report.json; bring it back with
    `factory deploy validate RECIPE --target TARGET --report report.json`.
    """
    from factory.deploy.commands import bundle_target, target_of

    parsed = load_recipe(recipe, list(overrides))
    bundled = bundle_target(parsed, target_of(parsed, target_name), out, echo=click.echo)
    names = ", ".join(a["artifact"]["name"] for a in bundled.bundle["artifacts"])
    click.echo(f"{bundled.target.name}: {names}; {bundled.bundle['benchmark']['pairs']} benchmark pairs")
    for spec in bundled.bundle["engines"]:
        click.echo("engine built on the target, as trtexec: " + " ".join(spec["trtexec"]))
    click.echo(str(bundled.dir.resolve()))


@deploy.command("validate", epilog=EXIT_CODES)
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target_name", required=True, metavar="TARGET", help=TARGET_HELP)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A report run_target.py wrote on the device (manual targets); default: run the bundle through the "
    "target's transport.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_friendly
def deploy_validate(recipe: Path, target_name: str, report: Path | None, overrides: tuple[str, ...]) -> None:
    """Measure RECIPE's release on TARGET and print its gate rows (exit 1 when one fails).

    The report must come from this release's bundle for TARGET (its hashes are checked): anything else is refused.
    An accepted --report is kept for the next `factory build`, whose deploy stage reads it for a manual target.
    """
    from factory.deploy.commands import bundle_target, target_of, validate_target
    from factory.deploy.report import ReportRefused, targets_table
    from factory.deploy.transports import TransportError
    from factory.release.gates import GateResult, failure_message, format_gate_table

    parsed = load_recipe(recipe, list(overrides))
    bundled = bundle_target(parsed, target_of(parsed, target_name), echo=click.echo)
    try:
        rows, measured = validate_target(parsed, bundled, report, echo=click.echo)
    except (TransportError, ReportRefused) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_GATE)
    click.echo("\n" + targets_table({bundled.target.name: {"artifacts": measured}}))
    table = [GateResult(**r) for r in rows]
    click.echo("\n" + format_gate_table(table))
    if not all(r.passed for r in table):
        click.echo(failure_message(table), err=True)
        sys.exit(EXIT_GATE)


@main.group()
def release() -> None:
    """Check release bundles."""


@release.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--threads", default=1, show_default=True, type=THREADS, help="CPU threads of each runtime.")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ed25519 public key (PEM): the manifest must carry a valid signature by its private half.",
)
@click.option("--manifest-sha256", metavar="HEX", help="The manifest's sha256 as the build printed it.")
def release_verify(directory: Path, threads: int, public_key: Path | None, manifest_sha256: str | None) -> None:
    """Check a release bundle (exit 0 all ok, 1 any failure, 2 no readable manifest).

    Checks the manifest's own sha256 (against --manifest-sha256) and signature (with --public-key), that every
    gate it records passed, every listed file's sha256, that no file is present but unlisted, and re-runs the
    golden input through each shipped artifact with its runtime. The same check as deploy/verify_release.py on a
    target: one `ok`/`FAIL` line per check, naming what differs.
    """
    from factory.runtime.verify import verify_and_print

    sys.exit(verify_and_print(directory, threads, public_key, manifest_sha256))


@main.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write it as JSON.")
@click.option(
    "--benchmark",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The shared benchmark.npz, for paired tests when neither side's run directory holds it.",
)
@_friendly
def compare(a: Path, b: Path, json_path: Path | None, benchmark: Path | None) -> None:
    """Put two runs or releases side by side: per group, per artifact, per target (changes are B - A).

    A and B are run directories (runs/NAME: its release, else its newest validate stage) or release directories.
    On a shared benchmark each artifact is also compared pair by pair (paired intervals, McNemar p per group).
    Exit 0, or 2 with one line naming the path when A or B is neither or holds files a build does not write.
    """
    from factory.evaluate.compare import compare_paths, format_comparison
    from factory.files import write_json

    result = compare_paths(a, b, benchmark)
    click.echo(format_comparison(result))
    if json_path is not None:
        click.echo(str(write_json(json_path, result)))


if __name__ == "__main__":
    main()
