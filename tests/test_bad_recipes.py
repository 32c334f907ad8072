"""Bad recipes: every value range, hostile YAML and unsafe names, refused by `factory check` before any work.

Each row writes a recipe (or passes ``--set``) in a fresh directory, runs the real CLI and checks the exit code, the
``FILE:LINE: key`` (or ``--set key=value: key``) and the expectation named, and that no traceback was printed. The
tests after the table check that one run reports every problem at once and caps what it prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from bad_input import EXIT_INPUT, ROOT, Case, check_case, invoke

from factory.recipe import load_recipe
from factory.recipe.loader import MAX_ISSUES

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def recipe(text: str, *extra: str, name: str = "r.yaml", command: str = "check") -> Callable[[Path], Sequence[str]]:
    """A ``Case.make`` that writes ``text`` to ``name`` and runs ``factory COMMAND name EXTRA...``."""

    def make(tmp: Path) -> Sequence[str]:
        (tmp / name).write_text(text, encoding="utf-8")
        return [command, name, *extra]

    return make


def raw_recipe(data: bytes) -> Callable[[Path], Sequence[str]]:
    """A ``Case.make`` for a recipe given as bytes (not necessarily UTF-8 text)."""

    def make(tmp: Path) -> Sequence[str]:
        (tmp / "r.yaml").write_bytes(data)
        return ["check", "r.yaml"]

    return make


def with_taxonomy(taxonomy: str) -> Callable[[Path], Sequence[str]]:
    def make(tmp: Path) -> Sequence[str]:
        (tmp / "tax.yaml").write_text(taxonomy)
        (tmp / "r.yaml").write_text("seed: 0\ndata:\n  world: {taxonomy: tax.yaml}\n")
        return ["check", "r.yaml"]

    return make


def diamond_extends(levels: int) -> Callable[[Path], Sequence[str]]:
    """Fragments that each extend the next one twice: 2**levels reads without a limit."""

    def make(tmp: Path) -> Sequence[str]:
        for i in range(levels):
            (tmp / f"f{i}.yaml").write_text(f"extends: [f{i + 1}.yaml, f{i + 1}.yaml]\n")
        (tmp / f"f{levels}.yaml").write_text("seed: 1\n")
        return ["check", "f0.yaml"]

    return make


def no_file(name: str) -> Callable[[Path], None]:
    def after(tmp: Path) -> None:
        assert not (tmp / name).exists(), f"{name} was written"

    return after


TRAIN = "teacher:\n  train:\n    {}\n"  # the key sits on line 3
CASES = [
    # Training settings
    Case(
        "lr-zero",
        recipe(TRAIN.format("lr: 0")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.lr: got 0.0", "(expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "lr-nan",
        recipe(TRAIN.format("lr: .nan")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.lr: got nan", "(expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "lr-huge-integer",
        recipe(TRAIN.format("lr: 1" + "0" * 400)),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.lr:", "(expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "lr-inf-from-set",
        recipe("seed: 0\n", "--set", "distill.train.lr=inf"),
        EXIT_INPUT,
        ["--set distill.train.lr=inf: distill.train.lr: got inf (expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "lr-text-from-set",
        recipe("seed: 0\n", "--set", "distill.train.lr=abc"),
        EXIT_INPUT,
        ["--set distill.train.lr=abc: distill.train.lr: got str 'abc' (expected a number)"],
        max_lines=1,
    ),
    Case(
        "momentum-one",
        recipe(TRAIN.format("momentum: 1")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.momentum: got 1.0", "(expected a number in [0, 1))"],
        max_lines=1,
    ),
    Case(
        "weight-decay-negative",
        recipe(TRAIN.format("weight_decay: -1e-4")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.weight_decay:", "(expected a number >= 0)"],
        max_lines=1,
    ),
    Case(
        "steps-zero",
        recipe(TRAIN.format("steps: 0")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.steps: got 0", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "batch-size-one",
        recipe(TRAIN.format("batch_size: 1")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.batch_size: got 1", "(expected an integer >= 2)"],
        max_lines=1,
    ),
    # checkpoint_every: 0 was a ZeroDivisionError in the training loop, after the data stage had run.
    Case(
        "checkpoint-every-zero",
        recipe(TRAIN.format("checkpoint_every: 0")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.checkpoint_every: got 0", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "warmup-negative",
        recipe(TRAIN.format("warmup_steps: -5")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.warmup_steps: got -5", "(expected an integer >= 0)"],
        max_lines=1,
    ),
    Case(
        "step-schedule-without-step-every",
        recipe("distill:\n  train:\n    schedule: step\n"),
        EXIT_INPUT,
        ["r.yaml:3: distill.train.step_every: got 0", "(expected an integer >= 1 with schedule 'step'"],
        max_lines=1,
    ),
    Case(
        "multistep-without-milestones",
        recipe("distill:\n  train:\n    schedule: multistep\n"),
        EXIT_INPUT,
        ["r.yaml:2: distill.train.milestones: empty", "(expected the steps at which schedule 'multistep'"],
        max_lines=1,
    ),
    Case(
        "milestones-not-increasing",
        recipe(TRAIN.format("schedule: multistep\n    milestones: [60, 30]")),
        EXIT_INPUT,
        ["r.yaml:4: teacher.train.milestones: got [60, 30] (expected strictly increasing steps)"],
        max_lines=1,
    ),
    Case(
        "milestones-repeated",
        recipe(TRAIN.format("schedule: multistep\n    milestones: [30, 30]")),
        EXIT_INPUT,
        ["r.yaml:4: teacher.train.milestones: got [30, 30] (expected strictly increasing steps)"],
        max_lines=1,
    ),
    Case(
        "milestone-at-the-last-step",
        recipe(TRAIN.format("steps: 100\n    schedule: multistep\n    milestones: [30, 100]")),
        EXIT_INPUT,
        ["r.yaml:5: teacher.train.milestones: got [30, 100]", "(expected each < steps = 100"],
        max_lines=1,
    ),
    Case(
        "milestone-zero",
        recipe(TRAIN.format("schedule: multistep\n    milestones: [0, 30]")),
        EXIT_INPUT,
        ["r.yaml:4: teacher.train.milestones.0: got 0 (expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "milestones-without-multistep",
        recipe(TRAIN.format("milestones: [30]")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.milestones: got [30] with schedule 'cosine'", "or schedule 'multistep'"],
        max_lines=1,
    ),
    Case(
        "gamma-zero",
        recipe(TRAIN.format("schedule: step\n    step_every: 5\n    gamma: 0")),
        EXIT_INPUT,
        ["r.yaml:5: teacher.train.gamma: got 0.0 (expected a number in (0, 1])"],
        max_lines=1,
    ),
    Case(
        "gamma-above-one",
        recipe(TRAIN.format("schedule: multistep\n    milestones: [10]\n    gamma: 2")),
        EXIT_INPUT,
        ["r.yaml:5: teacher.train.gamma: got 2.0 (expected a number in (0, 1])"],
        max_lines=1,
    ),
    Case(
        "gamma-with-cosine",
        recipe(TRAIN.format("gamma: 0.5")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.gamma: got 0.5 with schedule 'cosine'", "or schedule 'step' or 'multistep'"],
        max_lines=1,
    ),
    Case(
        "nesterov-without-momentum",
        recipe(TRAIN.format("momentum: 0\n    nesterov: true")),
        EXIT_INPUT,
        ["r.yaml:4: teacher.train.nesterov: true with momentum 0", "(expected false, or momentum > 0"],
        max_lines=1,
    ),
    Case(
        "nesterov-with-adam",
        recipe(TRAIN.format("optimizer: adam\n    nesterov: true")),
        EXIT_INPUT,
        ["r.yaml:4: teacher.train.nesterov: true with optimizer 'adam'", "(expected false, or optimizer 'sgd')"],
        max_lines=1,
    ),
    Case(
        "grad-clip-zero",
        recipe(TRAIN.format("grad_clip_norm: 0")),
        EXIT_INPUT,
        ["r.yaml:3: teacher.train.grad_clip_norm: got 0.0 (expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "grad-clip-inf-from-set",
        recipe("seed: 0\n", "--set", "distill.train.grad_clip_norm=inf"),
        EXIT_INPUT,
        ["--set distill.train.grad_clip_norm=inf: distill.train.grad_clip_norm: got inf (expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "seed-negative",
        recipe("seed: -1\n"),
        EXIT_INPUT,
        ["r.yaml:1: seed: got -1", "(expected an integer in [0, 2**64 - 1])"],
        max_lines=1,
    ),
    Case(
        "world-seed-past-64-bits",
        recipe(f"data:\n  world: {{seed: {2**64}}}\n"),
        EXIT_INPUT,
        ["r.yaml:2: data.world.seed:", "2**64 - 1"],
        max_lines=1,
    ),
    # Heads: each accepts the margins it can train with, and a positive scale.
    Case(
        "cosface-margin-one",
        recipe("teacher:\n  head: cosface\n  margin: 1.0\n"),
        EXIT_INPUT,
        ["r.yaml:3: teacher.margin: got 1.0", "(expected a number in [0, 1) for head 'cosface')"],
        max_lines=1,
    ),
    Case(
        "arcface-margin-past-half-pi",
        recipe("teacher:\n  head: arcface\n  margin: 1.6\n"),
        EXIT_INPUT,
        ["r.yaml:3: teacher.margin: got 1.6", "for head 'arcface'"],
        max_lines=1,
    ),
    Case(
        "margin-negative",
        recipe("teacher:\n  margin: -0.2\n"),
        EXIT_INPUT,
        ["r.yaml:2: teacher.margin: got -0.2", "(expected a number in [0, 1)"],
        max_lines=1,
    ),
    Case(
        "scale-zero",
        recipe("teacher:\n  scale: 0\n"),
        EXIT_INPUT,
        ["r.yaml:2: teacher.scale: got 0.0", "(expected a number > 0)"],
        max_lines=1,
    ),
    # Gates, parity and export
    Case(
        "min-accuracy-as-percent",
        recipe("gates:\n  min_accuracy: 1.5\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.min_accuracy: got 1.5", "(expected a number in [0, 1])"],
        max_lines=1,
    ),
    Case(
        "max-std-negative",
        recipe("gates:\n  max_std: -0.01\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_std:", "(expected a number in [0, 1])"],
        max_lines=1,
    ),
    Case(
        "max-int8-drop-two",
        recipe("gates: {max_int8_drop: 2}\n"),
        EXIT_INPUT,
        ["r.yaml:1: gates.max_int8_drop: got 2.0", "(expected a number in [0, 1])"],
        max_lines=1,
    ),
    Case(
        "max-latency-zero",
        recipe("gates:\n  max_latency_ms: 0\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_latency_ms:", "(expected a number > 0)"],
        max_lines=1,
    ),
    # A gate as a mapping: {limit, mode, unresolvable}
    Case(
        "gate-limit-as-percent",
        recipe("gates:\n  min_accuracy: {limit: 85, mode: confidence}\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.min_accuracy.limit: got 85.0", "(expected a number in [0, 1])"],
        max_lines=1,
    ),
    Case(
        "gate-latency-limit-zero",
        recipe("gates:\n  max_latency_ms: {limit: 0}\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_latency_ms.limit: got 0.0", "(expected a number > 0)"],
        max_lines=1,
    ),
    Case(
        "gate-without-limit",
        recipe("gates:\n  max_std:\n    mode: confidence\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_std: missing 'limit' (expected a number in [0, 1])"],
        max_lines=1,
    ),
    Case(
        "gate-mode-typo",
        recipe("gates:\n  max_std: {limit: 0.05, mode: confident}\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_std.mode: got 'confident' (expected 'point' or 'confidence')"],
        max_lines=1,
    ),
    Case(
        "gate-unresolvable-not-a-verdict",
        recipe("gates:\n  max_int8_drop: {limit: 0.01, unresolvable: warn}\n"),
        EXIT_INPUT,
        ["r.yaml:2: gates.max_int8_drop.unresolvable: got 'warn' (expected 'pass' or 'fail')"],
        max_lines=1,
    ),
    Case(
        "gate-unresolvable-ignored-by-a-point-gate",
        recipe("gates:\n  max_int8_drop:\n    limit: 0.01\n    mode: point\n    unresolvable: pass\n"),
        EXIT_INPUT,
        ["r.yaml:5: gates.max_int8_drop.unresolvable: only applies with mode 'confidence'"],
        max_lines=1,
    ),
    Case(
        "gate-unknown-key",
        recipe("gates:\n  max_std: {limit: 0.05, unresolved: pass}\n"),
        EXIT_INPUT,
        [
            "r.yaml:2: gates.max_std.unresolved: unknown key (did you mean 'unresolvable'? expected one of: limit, "
            "mode, unresolvable)"
        ],
        max_lines=1,
    ),
    Case(
        "gate-as-a-list",
        recipe("gates:\n  max_std: [0.05, confidence]\n"),
        EXIT_INPUT,
        [
            "r.yaml:2: gates.max_std: got list [0.05, 'confidence'] (expected a number or a mapping (limit, mode, "
            "unresolvable) or null)"
        ],
        max_lines=1,
    ),
    Case(
        "gate-mode-by-set",
        recipe("gates:\n  max_std: {limit: 0.05}\n", "--set", "gates.max_std.mode=strict"),
        EXIT_INPUT,
        ["--set gates.max_std.mode=strict: gates.max_std.mode: got 'strict' (expected 'point' or 'confidence')"],
        max_lines=1,
    ),
    # Goals: {metric, artifacts, target, at_fmr, one of threshold / max_degradation / percent_max_degradation}
    Case(
        "goal-with-two-goals",
        recipe("gates:\n  goals:\n    - {metric: std, threshold: 0.05, max_degradation: 0.01}\n"),
        EXIT_INPUT,
        [
            "r.yaml:3: gates.goals.0: sets threshold and max_degradation (expected exactly one of threshold, "
            "max_degradation, percent_max_degradation)"
        ],
        max_lines=1,
    ),
    Case(
        "goal-without-a-goal",
        recipe("gates:\n  goals:\n    - {metric: std}\n"),
        EXIT_INPUT,
        ["r.yaml:3: gates.goals.0: sets no goal (expected exactly one of threshold"],
        max_lines=1,
    ),
    Case(
        "goal-metric-typo",
        recipe("gates:\n  goals:\n    - {metric: fmr, threshold: 0.001}\n"),
        EXIT_INPUT,
        ["r.yaml:3: gates.goals.0.metric: got 'fmr' (expected 'accuracy' or 'group_accuracy' or"],
        max_lines=1,
    ),
    Case(
        "goal-operating-point-not-measured",
        recipe("gates:\n  goals:\n    - {metric: fmr_max, at_fmr: 1e-5, threshold: 0.001}\n"),
        EXIT_INPUT,
        ["r.yaml:3: gates.goals.0.at_fmr: got 1e-05 (expected 1e-3 or 1e-4"],
        max_lines=1,
    ),
    Case(
        "goal-ratio-below-one",
        recipe("gates:\n  goals:\n    - {metric: ser, threshold: 0.5}\n"),
        EXIT_INPUT,
        ["r.yaml:3: gates.goals.0.threshold: got 0.5 (expected a number >= 1: ser is a ratio, 1 = equal)"],
        max_lines=1,
    ),
    Case(
        "goal-on-a-target-not-deployed-to",
        recipe("gates:\n  goals:\n    - {metric: latency_ms, target: jetson-orin-tensorrt, threshold: 5}\n"),
        EXIT_INPUT,
        ["r.yaml:3: gates.goals.0.target: got 'jetson-orin-tensorrt' (expected one of deploy.targets: none)"],
        max_lines=1,
    ),
    Case(
        "goal-metric-no-target-measures",
        recipe(
            "deploy:\n  targets: [local-cpu-openvino]\n"
            "gates:\n  goals:\n    - {metric: cosine, target: local-cpu-openvino, threshold: 0.99}\n"
        ),
        EXIT_INPUT,
        ["r.yaml:5: gates.goals.0.target: metric 'cosine' is not measured on targets"],
        max_lines=1,
    ),
    # Licences of the inputs the user supplies, and intended commercial use
    Case(
        "licence-of-no-input",
        recipe("release:\n  licences:\n    teacher.chekpoint: {licence: MIT, commercial: true}\n"),
        EXIT_INPUT,
        [
            "r.yaml:3: release.licences.teacher.chekpoint: not an input this recipe can take (its inputs: "
            "data.benchmark,"
        ],
        max_lines=1,
    ),
    Case(
        "commercial-use-of-a-non-commercial-input",
        recipe(
            "data:\n  benchmark: r.yaml\nrelease:\n  commercial_use: true\n  licences:\n"
            "    data.benchmark: {licence: RFW research licence, commercial: false}\n"
        ),
        EXIT_INPUT,
        [
            "r.yaml:6: release.licences.data.benchmark: RFW research licence does not allow commercial use, and "
            "release.commercial_use is true"
        ],
        max_lines=1,
    ),
    Case(
        "commercial-use-with-an-undeclared-input",
        recipe("data:\n  benchmark: r.yaml\nrelease:\n  commercial_use: true\n"),
        EXIT_INPUT,
        ["r.yaml:4: release.commercial_use: true, but the licence of data.benchmark is not declared"],
        max_lines=1,
    ),
    Case(
        "release-version-not-a-folder-name",
        recipe("release:\n  version: ../1.0\n"),
        EXIT_INPUT,
        ["r.yaml:2: release.version: got '../1.0' (expected a version like 1.2.0)"],
        max_lines=1,
    ),
    Case(
        "parity-cosine-zero",
        recipe("export:\n  min_parity_cosine: 0\n"),
        EXIT_INPUT,
        ["r.yaml:2: export.min_parity_cosine:", "(expected a number in (0, 1])"],
        max_lines=1,
    ),
    Case(
        "opset-the-exporter-cannot-write",
        recipe("export:\n  formats:\n    - {kind: onnx, opset: 13}\n"),
        EXIT_INPUT,
        [
            "r.yaml:3: export.formats.0.opset: got 13",
            "(expected an integer in [18, ",
            "the opsets torch's ONNX exporter",
        ],
        max_lines=1,
    ),
    # Threads and counts
    Case(
        "threads-zero",
        recipe("threads: 0\n"),
        EXIT_INPUT,
        ["r.yaml:1: threads: got 0", f"(expected an integer in [1, {CPUS}]"],
        max_lines=1,
    ),
    Case(
        "validate-threads-past-the-cpus",
        recipe(f"validate:\n  threads: {CPUS + 1}\n"),
        EXIT_INPUT,
        [f"r.yaml:2: validate.threads: got {CPUS + 1}", f"{CPUS} is the number of CPUs this process may use"],
        max_lines=1,
    ),
    Case(
        "pairs-zero",
        recipe("data:\n  benchmark_pairs_per_group: 0\n"),
        EXIT_INPUT,
        ["r.yaml:2: data.benchmark_pairs_per_group: got 0", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "calibration-images-zero",
        recipe("data:\n  calibration:\n    images: 0\n"),
        EXIT_INPUT,
        ["r.yaml:3: data.calibration.images:", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "preview-samples-zero",
        recipe("data:\n  preview_samples: 0\n"),
        EXIT_INPUT,
        ["r.yaml:2: data.preview_samples:", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "latency-repeats-zero",
        recipe("validate: {latency_repeats: 0}\n"),
        EXIT_INPUT,
        ["r.yaml:1: validate.latency_repeats:", "(expected an integer >= 1)"],
        max_lines=1,
    ),
    Case(
        "latency-warmup-negative",
        recipe("validate:\n  latency_warmup: -1\n"),
        EXIT_INPUT,
        ["r.yaml:2: validate.latency_warmup:", "(expected an integer >= 0)"],
        max_lines=1,
    ),
    Case(
        "latency-batches-without-1",
        recipe("validate:\n  latency_batches: [8, 32]\n"),
        EXIT_INPUT,
        ["validate.latency_batches: got [8, 32] (expected distinct batch sizes >= 1, including 1)"],
        max_lines=1,
    ),
    Case(
        "benchmark-app-seconds-negative",
        recipe("validate: {benchmark_app_seconds: -1}\n"),
        EXIT_INPUT,
        ["r.yaml:1: validate.benchmark_app_seconds:", "expected"],
        max_lines=1,
    ),
    # Source configs (union members get the same range checks)
    Case(
        "mix-weight-negative",
        recipe(
            "distill:\n  source:\n    kind: mix\n    sources: [{kind: procedural}, {kind: files, path: .}]\n"
            "    weights: [1, -1]\n"
        ),
        EXIT_INPUT,
        ["r.yaml:5: distill.source.weights.1: got -1.0", "(expected a number >= 0)"],
        max_lines=1,
    ),
    Case(
        "mix-weights-all-zero",
        recipe("distill:\n  source:\n    kind: mix\n    sources: [{kind: procedural}]\n    weights: [0]\n"),
        EXIT_INPUT,
        ["r.yaml:5: distill.source.weights: all 0", "(expected at least one weight > 0"],
        max_lines=1,
    ),
    Case(
        "stylegan-truncation-psi",
        recipe("seed: 0\n", "--set", "distill.source={kind: stylegan, truncation_psi: 1.5}"),
        EXIT_INPUT,
        [
            "--set distill.source={kind: stylegan, truncation_psi: 1.5}: distill.source.truncation_psi: got 1.5 "
            "(expected a number in (0, 1])"
        ],
    ),
    # Names and folders: a run lives in runs/<name>
    Case(
        "name-leaves-runs",
        recipe("name: ../../etc\n"),
        EXIT_INPUT,
        ["r.yaml:1: name: got '../../etc'", "(expected letters, digits, '.', '_' and '-'"],
        max_lines=1,
    ),
    Case(
        "name-with-separator",
        recipe("name: a/b\n"),
        EXIT_INPUT,
        ["r.yaml:1: name: got 'a/b'", "runs/<name>"],
        max_lines=1,
    ),
    Case(
        "name-hidden",
        recipe("name: .cache\n"),
        EXIT_INPUT,
        ["r.yaml:1: name: got '.cache'", "starting with a letter or digit"],
        max_lines=1,
    ),
    Case(
        "name-blank",
        recipe("name: '   '\n"),
        EXIT_INPUT,
        ["r.yaml:1: name: got '   '", "(expected letters"],
        max_lines=1,
    ),
    Case(
        "name-from-an-unusable-stem",
        recipe("seed: 1\n", name="my recipe.yaml"),
        EXIT_INPUT,
        ["my recipe.yaml:1: name: not set, and the file's stem 'my recipe'", "(expected letters"],
        max_lines=1,
    ),
    Case(
        "name-from-set",
        recipe("seed: 1\n", "--set", "name=../x"),
        EXIT_INPUT,
        ["--set name=../x: name: got '../x'"],
        max_lines=1,
    ),
    Case(
        "run-dir-empty",
        recipe("run_dir: ''\n"),
        EXIT_INPUT,
        ["r.yaml:1: run_dir: empty", "(expected a folder"],
        max_lines=1,
    ),
    # A taxonomy file is read by `check`, not first by the data stage.
    Case(
        "taxonomy-nan",
        with_taxonomy("groups:\n  - name: a\n    identity_spread: .nan\n"),
        EXIT_INPUT,
        ["r.yaml:3: data.world.taxonomy:", "groups[0].identity_spread: expected a finite number, got nan"],
        max_lines=1,
    ),
    # Files that are not plain recipes
    Case(
        "not-utf8",
        raw_recipe(b"seed: 1\nrelease:\n  description: caf\xe9\n"),
        EXIT_INPUT,
        ["r.yaml:3: <top>: not UTF-8 text: byte 0xe9 at offset 35", "(expected a UTF-8 YAML file)"],
        max_lines=1,
    ),
    Case(
        "nul-byte",
        raw_recipe(b"seed: 1\x00\n"),
        EXIT_INPUT,
        ["r.yaml:1: <top>: not valid YAML: character #x0000"],
        max_lines=1,
    ),
    Case("too-large", recipe("# padding\n" * 110_000), EXIT_INPUT, ["r.yaml: <top>: larger than 1 MiB"], max_lines=1),
    Case(
        "alias-bomb",
        recipe(BOMB),
        EXIT_INPUT,
        ["r.yaml:", "more than 100000 values once YAML aliases are expanded"],
        subprocess=True,
        timeout=30,
        max_lines=1,
    ),
    Case(
        "alias-bomb-from-set",
        recipe("seed: 0\n", "--set", "description={" + BOMB.replace("\n", ", ") + "}"),
        EXIT_INPUT,
        ["--set description=", "more than 100000 values"],
        subprocess=True,
        timeout=30,
    ),
    Case(
        "self-referencing-alias",
        recipe("data: &d {world: [*d]}\n"),
        EXIT_INPUT,
        ["r.yaml:1: data: nested deeper than 64 levels"],
        max_lines=1,
    ),
    Case(
        "deep-nesting",
        recipe("seed: " + "[" * 3000 + "]" * 3000 + "\n"),
        EXIT_INPUT,
        ["r.yaml:1: <top>: nested too deeply to read"],
        max_lines=1,
    ),
    Case(
        "extends-diamond",
        diamond_extends(16),
        EXIT_INPUT,
        ["f", ".yaml:1: extends: pulls in more than 64 files"],
        subprocess=True,
        timeout=30,
        max_lines=1,
    ),
    Case(
        "python-tag-runs-nothing",
        lambda t: recipe(f"name: !!python/object/apply:os.system ['touch {t / 'pwned'}']\n")(t),
        EXIT_INPUT,
        ["r.yaml:1: name: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"],
        after=no_file("pwned"),
        max_lines=1,
    ),
    Case(
        "python-tag-from-set-runs-nothing",
        lambda t: recipe("seed: 0\n", "--set", f"seed=!!python/object/apply:os.system ['touch {t / 'pwned'}']")(t),
        EXIT_INPUT,
        ["--set seed=!!python/object/apply:os.system", "is not allowed (recipes are plain data)"],
        after=no_file("pwned"),
        max_lines=1,
    ),
    Case(
        "set-without-value",
        recipe("seed: 0\n", "--set", "seed"),
        EXIT_INPUT,
        ["--set seed: expected dotted.key=value"],
        max_lines=1,
    ),
    Case(
        "build-writes-nothing",
        recipe("gates:\n  min_accuracy: 1.5\n", command="build"),
        EXIT_INPUT,
        ["r.yaml:2: gates.min_accuracy: got 1.5"],
        after=no_file("runs"),
        max_lines=1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_recipes(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_case(case, tmp_path)


def test_every_range_problem_is_reported_in_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = """\
seed: -1
threads: 0
data:
  calibration: {images: 0}
teacher:
  scale: -1
  margin: 1.5
  train:
    lr: .inf
    momentum: 1.0
    checkpoint_every: 0
distill:
  train:
    weight_decay: -0.5
    warmup_steps: -1
export:
  min_parity_cosine: 1.01
validate:
  latency_repeats: 0
gates:
  min_accuracy: 1.5
  max_latency_ms: -3
"""
    wrong = {  # key: (line, expectation)
        "seed": (1, "got -1 (expected an integer in [0, 2**64 - 1])"),
        "threads": (2, f"got 0 (expected an integer in [1, {CPUS}]"),
        "data.calibration.images": (4, "got 0 (expected an integer >= 1)"),
        "teacher.scale": (6, "got -1.0 (expected a number > 0)"),
        "teacher.margin": (7, "got 1.5 (expected a number in [0, 1) for head 'cosface')"),
        "teacher.train.lr": (9, "got inf (expected a number > 0)"),
        "teacher.train.momentum": (10, "got 1.0 (expected a number in [0, 1))"),
        "teacher.train.checkpoint_every": (11, "got 0 (expected an integer >= 1)"),
        "distill.train.weight_decay": (14, "got -0.5 (expected a number >= 0)"),
        "distill.train.warmup_steps": (15, "got -1 (expected an integer >= 0)"),
        "export.min_parity_cosine": (17, "got 1.01 (expected a number in (0, 1])"),
        "validate.latency_repeats": (19, "got 0 (expected an integer >= 1)"),
        "gates.min_accuracy": (21, "got 1.5 (expected a number in [0, 1])"),
        "gates.max_latency_ms": (22, "got -3.0 (expected a number > 0)"),
    }
    (tmp_path / "r.yaml").write_text(text)
    out = invoke(["check", "r.yaml"])
    assert out.exit_code == EXIT_INPUT, out.text
    reported = out.stderr.strip().splitlines()
    assert len(reported) == len(wrong), out.stderr
    for line, (key, (number, expected)) in zip(reported, wrong.items(), strict=True):
        assert line.startswith(f"r.yaml:{number}: {key}: {expected}"), (line, key)


def test_type_range_and_set_problems_come_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("seed: one\nteacher:\n  train: {lr: 0, schedule: step}\n")
    out = invoke(["check", "r.yaml", "--set", "gates.max_std=2", "--set", "distill.train.stepz=3"])
    assert out.exit_code == EXIT_INPUT
    assert out.stderr.strip().splitlines() == [
        "r.yaml:1: seed: got str 'one' (expected an integer)",
        "r.yaml:3: teacher.train.lr: got 0.0 (expected a number > 0)",
        "r.yaml:3: teacher.train.step_every: got 0 (expected an integer >= 1 with schedule 'step': the lr halves "
        "every step_every steps)",
        "--set gates.max_std=2: gates.max_std: got 2.0 (expected a number in [0, 1])",
        "--set distill.train.stepz=3: distill.train.stepz: unknown key (did you mean 'steps'? expected one of: steps, "
        "batch_size, optimizer, lr, weight_decay, momentum, nesterov, warmup_steps, schedule, step_every, milestones, "
        "gamma, grad_clip_norm, checkpoint_every, channels_last, tensorboard, device, amp)",
    ]


def test_reported_problems_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("".join(f"unknown_{i}: 1\n" for i in range(MAX_ISSUES + 30)))
    out = invoke(["check", "r.yaml"])
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == EXIT_INPUT and len(lines) == MAX_ISSUES + 1
    assert lines[0].startswith("r.yaml:1: unknown_0: unknown key") and lines[-1] == "… and 30 more problems"


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a float field takes any text ``float()`` reads, finite."""
    path = tmp_path / "r.yaml"
    path.write_text("distill:\n  train: {lr: 1e-3}\nteacher:\n  scale: '30'\n")
    loaded = load_recipe(path, ["teacher.train.lr=5e-2"])
    assert (loaded.distill.train.lr, loaded.teacher.scale, loaded.teacher.train.lr) == (1e-3, 30.0, 5e-2)


def test_shipped_recipes_still_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        out = invoke(["check", str(path.relative_to(ROOT))])
        assert out.exit_code == 0, out.text
