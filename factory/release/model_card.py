"""``MODEL_CARD.md``: the release described in the shape of a Hugging Face model card (Mitchell et al., 2019).

YAML front matter (licence, tags, ``model-index`` with the measured results) and the card's sections: model
details, intended use, factors (the demographic groups), metrics, training and evaluation data, quantitative
analyses with the release's plots, ethical considerations, caveats and recommendations, and the licences of the
inputs. Every number comes from the build's own measurements, with its interval.
"""

from __future__ import annotations

from typing import Any

import yaml

from factory.evaluate.tables import percent_interval

DEFAULT_USE = (
    "1:1 face verification on aligned face crops (does this face match that enrolled face?), run on the targets "
    "listed below at the thresholds this release records, by a deployer who has checked the model on faces of "
    "their own population."
)
OUT_OF_SCOPE = [
    "1:N identification of people in crowds or surveillance footage.",
    "Decisions with legal or similarly significant effects on a person without human review.",
    "Faces unlike the training and benchmark faces (other capture conditions, ages or populations) before the "
    "deployer has measured the model on them.",
    "Inferring a person's demographic group, emotion or any attribute: the model only compares identities.",
]


def render_model_card(card: dict[str, Any]) -> str:
    """The card's Markdown from what the release stage collected.

    ``card`` keys: name, version, description, intended_use, licence, student, params, teachers, steps, data
    (training data in words), procedural (bool: no face the user supplied was used), benchmark (its name and pair
    count), groups, artifacts ({name: {runtime, precision, files, size_mb}}), validation (the validate stage's
    metrics), thresholds (:func:`factory.release.thresholds.operating_thresholds`), targets ({name: {runtime,
    artifacts: {name: {accuracy_mean, latency_ms}}}}), licences (:func:`factory.recipe.inputs.licence_record`),
    gates (summary line), plots (file names present).
    """
    validation = card["validation"]
    shipped = list(card["artifacts"])
    front = {
        "license": card["licence"],
        "library_name": "onnx",
        "tags": ["face-recognition", "face-verification", "fairness", "edge", "int8", "factory"],
        "pipeline_tag": "image-feature-extraction",
        "model-index": [{"name": f"{card['name']}-{card['version']}", "results": _results(card, shipped)}],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {card['name']} {card['version']}",
        "",
        card["description"] or "A compact face-recognition model built by the factory.",
        "",
        "## Model details",
        "",
        f"- Architecture: `{card['student']}` ({card['params']:,} parameters), embedding model for face verification.",
        f"- Distilled from {card['teachers']} for {card['steps']} steps on {card['data']}.",
        f"- Licence: {card['licence']}.",
        "- Artifacts (all take the same input, `manifest.json` → `contract`):",
        *[
            f"  - `{name}`: {a['runtime']}, {a['precision'].upper()}, {a['size_mb']:.2f} MB ({', '.join(a['files'])})"
            for name, a in card["artifacts"].items()
        ],
        "",
        "## Intended use",
        "",
        card["intended_use"] or DEFAULT_USE,
        "",
        "Out of scope:",
        "",
        *[f"- {line}" for line in OUT_OF_SCOPE],
        "",
        "## Factors",
        "",
        f"Accuracy and error rates are reported per group: {', '.join(card['groups'])}. "
        + (
            "These are the groups of the factory's procedural world: synthetic populations that differ in rendered "
            "appearance, not real demographic groups."
            if card["procedural"]
            else "These are the benchmark's own groups (as its labels define them)."
        ),
        "",
        "## Metrics",
        "",
        "- Verification accuracy per group (10-fold protocol, the threshold chosen on 9 folds and applied to the "
        "10th), its mean over groups, the sample STD of the group accuracies and SER = (100 - worst) / (100 - best).",
        "- FMR and FNMR per group at one global threshold set for FMR 1e-3 (the way a deployment runs), where the "
        "benchmark has the impostor pairs to support that target (rule of three).",
        "- Every interval is a bootstrap over the benchmark's subjects that re-runs the whole protocol "
        f"({_level(validation)}).",
        "",
        "## Training data",
        "",
        f"Distilled on {card['data']}; teacher: {card['teacher_lineage']}.",
        "",
        "## Evaluation data",
        "",
        f"{card['benchmark']}.",
        "",
        "## Quantitative analyses",
        "",
        f"Per-group accuracy (%) of each shipped artifact with its {_level(validation)} interval; gates: "
        f"{card['gates']}.",
        "",
        *_accuracy_rows(validation, shipped),
        "",
        *[f"![{alt}]({file})" for file, alt in _PLOTS if file in card["plots"]],
        "",
        "Operating thresholds (cosine similarity; a pair matches at or above it) for one global FMR target:",
        "",
        *_threshold_rows(card["thresholds"], shipped),
        "",
        *_target_rows(card["targets"]),
        "## Ethical considerations",
        "",
        "Face recognition can harm the people it misrecognises, and it errs more for some groups than for others. "
        "This release is gated on the spread of its per-group accuracy and reports FMR and FNMR per group at one "
        "threshold; a deployer still owes the people it is used on a check on their own population, a human review "
        "of consequential decisions and a way to contest them.",
        "",
        "## Caveats and recommendations",
        "",
        *_caveats(card),
        "",
        "## Licences of the inputs",
        "",
        *_licence_rows(card["licences"]),
        "",
    ]
    return "\n".join(lines)


_PLOTS = (
    ("fairness.png", "per-group accuracy of every artifact"),
    ("ledger.png", "accuracy by group and stage"),
    ("fmr_heatmap.png", "impostor FMR by group pair"),
)


def _level(validation: dict[str, Any]) -> str:
    for name in validation.get("order", []):
        level = (validation["artifacts"].get(name, {}).get("evaluation", {}).get("uncertainty") or {}).get("level")
        if level:
            return f"{level:.0%}"
    return "95%"


def _results(card: dict[str, Any], shipped: list[str]) -> list[dict[str, Any]]:
    metrics = []
    for name in shipped:
        fairness = card["validation"]["artifacts"][name]["evaluation"]["fairness"]
        metrics += [
            {"type": "accuracy", "value": round(100 * fairness["mean"], 2), "name": f"mean group accuracy ({name})"},
            {"type": "std", "value": round(100 * fairness["std"], 2), "name": f"group accuracy STD ({name})"},
        ]
    task = {"type": "face-verification", "name": "Face verification"}
    return [{"task": task, "dataset": {"name": card["benchmark"], "type": "pairs"}, "metrics": metrics}]


def _accuracy_rows(validation: dict[str, Any], shipped: list[str]) -> list[str]:
    groups = validation["groups"]
    head = ["artifact", *groups, "mean", "STD", "SER"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in shipped:
        ev = validation["artifacts"][name]["evaluation"]
        fair, ci = ev["fairness"], ev["fairness"].get("ci") or {}
        cells = [percent_interval(ev["groups"][g]["accuracy_mean"], ev["groups"][g].get("ci")) for g in groups]
        ser = fair["ser"]
        cells += [
            percent_interval(fair["mean"], ci.get("mean")),
            percent_interval(fair["std"], ci.get("std"), "brackets"),
            ser if isinstance(ser, str) else f"{ser:.2f}",
        ]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return rows


def _threshold_rows(thresholds: dict[str, Any], shipped: list[str]) -> list[str]:
    rows = ["| artifact | FMR 1e-3 | FMR 1e-4 |", "|---|---|---|"]
    for name in shipped:
        cells = []
        for key in ("1e-03", "1e-04"):
            entry = thresholds["artifacts"][name][key]
            value = entry["threshold"]
            shown = "—" if value is None else f"{value:.4f}"
            cells.append(shown if entry["supported"] else f"{shown} (unsupported: too few impostor pairs)")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return rows


def _target_rows(targets: dict[str, Any]) -> list[str]:
    if not targets:
        return []
    rows = [
        "On the deploy targets (each ran its bundle, shipped in `targets/`):",
        "",
        "| target | runtime | artifact | accuracy % | latency ms (b1) |",
        "|---|---|---|---|---|",
    ]
    for target, t in targets.items():
        for name, a in t["artifacts"].items():
            latency = "—" if a.get("latency_ms") is None else f"{a['latency_ms']:.2f}"
            accuracy = "—" if a.get("accuracy_mean") is None else f"{100 * a['accuracy_mean']:.2f}"
            rows.append(f"| {target} | {t['runtime']} | `{name}` | {accuracy} | {latency} |")
    return [*rows, ""]


def _caveats(card: dict[str, Any]) -> list[str]:
    lines = []
    if card["procedural"]:
        lines.append(
            "- **This model was trained and evaluated only on procedural faces** from the factory's built-in world. "
            "Its accuracy, fairness and thresholds say nothing about real faces: it is a pipeline check, not a model "
            "to deploy on people."
        )
    lines += [
        "- Intervals are part of every figure: a difference inside them is not shown by this benchmark.",
        "- An FMR target the benchmark cannot support is marked unsupported; its threshold is not a calibrated "
        "operating point.",
        "- Each INT8 artifact's drift from its FP32 parent (embedding cosine per group, paired accuracy change) is in "
        "`report.md`; the gates it passed are in `manifest.json`.",
    ]
    return lines


def _licence_rows(licences: dict[str, Any]) -> list[str]:
    use = "intended for commercial use" if licences["commercial_use"] else "not declared for commercial use"
    lines = [f"The release is {use}; its own licence: {licences['model_licence']}.", ""]
    if not licences["inputs"]:
        return [*lines, "No input was supplied by the user: every face was generated by the factory."]
    lines += ["| input | file | licence | commercial use |", "|---|---|---|---|"]
    for key, entry in licences["inputs"].items():
        spec = entry["licence"]
        if spec is None:
            lines.append(f"| `{key}` | {entry['path']} | not declared | unknown |")
        else:
            name = f"[{spec['licence']}]({spec['url']})" if spec.get("url") else spec["licence"]
            lines.append(f"| `{key}` | {entry['path']} | {name} | {'yes' if spec['commercial'] else 'no'} |")
    return lines
