"""The markdown tables for the README, from the benchmarks' result dictionaries.

Kept apart from the measuring code so the tables can be regenerated from
saved JSON (`python -m bench.report bench/results/summary.json`).
"""

from __future__ import annotations

import json
import sys

APPROACH_LABELS = {
    "original": "original study (PIL loop -> one array -> predict)",
    "image_dataset_from_directory": "keras image_dataset_from_directory + predict",
    "model_only": "ceiling: classifier alone, in-memory batches",
    "model_only_cams": "ceiling: classifier + CAMs, in-memory batches",
    "decode_only": "ceiling: classify_dir's input pipeline alone",
    "classify_dir": "**classify_dir**",
    "classify_dir_cams": "**classify_dir with CAMs**",
}


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _met(met) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def classify_throughput(result: dict) -> list[str]:
    s = result["settings"]
    rates = result["images_per_second"]
    reference = rates["classify_dir"]["per_second"]
    rows = []
    for name, label in APPROACH_LABELS.items():
        value = rates[name]["per_second"]
        rows.append([label, _number(value, 1), _number(reference / value if value else None)])
    rows.append(
        ["serial bound 1 / (1/model + 1/decode)", _number(result["serial_bound_per_second"], 1), ""]
    )
    title = (
        f"### classify_dir throughput: {s['images']} scans {s['scan_side']}² "
        f"(PNG + JPEG), model {s['image_size']} px, batch {s['batch_size']}, "
        f"median of {s['repeats']}"
    )
    ratios = result["ratios"]
    notes = [
        "",
        f"classify_dir / min(model-only, decode-only) = "
        f"{_number(ratios['classify_dir / min(model_only, decode_only)'])}; "
        f"/ serial bound = {_number(ratios['classify_dir / serial_bound'])}"
        + _cpu_note(result)
        + ". "
        f"In its steady loop the model is busy "
        f"{_percent(rates['classify_dir'].get('share_of_loop_in_predictor'))} of the time "
        f"({_percent(rates['classify_dir_cams'].get('share_of_loop_in_predictor'))} with CAMs); "
        "the rest is waiting for input and writing rows. Whole call, model loading and "
        f"tracing included: {_number(rates['classify_dir']['whole_call_per_second'], 1)} img/s "
        f"({_number(rates['classify_dir_cams']['whole_call_per_second'], 1)} with CAMs).",
    ]
    return [title, "", *_table(["approach", "img/s", "classify_dir is x faster"], rows), *notes]


def memory_scaling(result: dict) -> list[str]:
    s = result["settings"]
    rows = []
    for count in (str(c) for c in s["counts"]):
        original = result["original"][count]
        suffix = " (extrapolated)" if original.get("extrapolated") else ""
        rows.append(
            [
                f"{int(count):,}",
                _number(result["classify_dir"][count]["peak_rss_mb"], 0),
                _number(original["peak_rss_mb"], 0) + suffix,
            ]
        )
    at_512 = result["original_at_512px_extrapolated"]
    last = s["counts"][-1]
    title = (
        f"### Peak memory (RSS, MB): {s['scan_side']}² PNG scans, model {s['image_size']} px, "
        f"batch {s['batch_size']}"
    )
    notes = [
        "",
        f"Growth {s['counts'][0]:,} -> {last:,} images: "
        + ", ".join(f"{k}: x{_number(v)}" for k, v in result["growth"].items())
        + f". The original holds {_number(result['original_mb_per_image'], 3)} MB per image "
        f"at {s['image_size']} px; at its own 512 px input that would be "
        f"{_number(at_512['mb_per_image'])} MB per image, "
        f"{_number(at_512[f'gb_for_{last}_images'], 1)} GB for {last:,} images (extrapolated).",
    ]
    return [title, "", *_table(["images", "classify_dir", "original"], rows), *notes]


def _cpu_note(result: dict) -> str:
    """CPU time per image, in results that have it (older ones do not)."""
    cpu_ms = result.get("cpu_ms_per_image")
    if not cpu_ms:
        return ""
    return (
        f"; CPU time per image: input pipeline {_number(cpu_ms['decode_only'], 1)} ms + model "
        f"{_number(cpu_ms['model_only'], 1)} ms, classify_dir {_number(cpu_ms['classify_dir'], 1)}"
        f" ms (x{_number(result['ratios']['classify_dir CPU / (decode_only + model_only CPU)'])}"
        " of the sum)"
    )


def training_input(result: dict) -> list[str]:
    s = result["settings"]
    rows = [
        ["model.fit from TFDS (training_input.training_dataset)", "tfds"],
        ["model.fit from in-memory arrays (same batches)", "in_memory"],
        ["input pipeline alone (no model)", "pipeline_alone"],
    ]
    body = [
        [
            label,
            _number(result["steps_per_second"][key]["per_second"], 3),
            _number(result["images_per_second"][key], 1),
        ]
        for label, key in rows
    ]
    title = (
        f"### Training input: {s['dataset']} {s['split']}, model {s['image_size']} px, "
        f"batch {s['batch_size']}, augment {s['augment']}, {s['steps']} steps, "
        f"median of {s['repeats']}"
    )
    ratios = result["ratios"]
    notes = []
    predicted = ratios.get("predicted tfds / in_memory from CPU sharing alone")
    if predicted is not None:
        headroom = ratios["pipeline_alone / tfds (headroom of the input pipeline)"]
        notes = [
            "",
            f"The pipeline alone runs x{_number(headroom)} faster than fit consumes it, using "
            f"{_number(result['pipeline_cpu_seconds_per_batch'], 3)} CPU-s per batch; that CPU "
            f"taken from the training step predicts TFDS / in-memory = {_number(predicted)} "
            f"(measured {_number(ratios['tfds / in_memory'])}).",
        ]
    return [title, "", *_table(["feed", "steps/s", "img/s"], body), *notes]


def builder(result: dict) -> list[str]:
    s = result["settings"]
    rates = result["slices_per_second"]
    rows = [
        [
            f"allen_ccfv3 builder ({s['builder_config']})",
            _number(rates["builder"]["per_second"], 1),
        ],
        ["bare loop: scale, RGB, encode PNG", _number(rates["png_encode_only"]["per_second"], 1)],
    ]
    shards = ", ".join(
        f"{split} {v['shards']} x {_number(v['total_mb'], 1)} MB"
        for split, v in result["shards"].items()
    )
    shape = "x".join(str(d) for d in s["shape"])
    title = (
        f"### Builder: {shape} uint16 volume ({result['slices']} slices), median of {s['repeats']}"
    )
    return [title, "", *_table(["", "slices/s"], rows), "", f"Shards written: {shards}."]


def image_size(result: dict) -> list[str]:
    s = result["settings"]
    rows = [
        [
            size,
            _number(r["held_out_accuracy"], 3),
            _number(r["inference"]["per_second"], 1),
            _number(r["train_images_per_second"], 1),
        ]
        for size, r in result["by_size"].items()
    ]
    title = (
        f"### Image size: demo recipe, {s['dataset']}, {s['epochs']} epoch(s), "
        f"batch {s['batch_size']}; inference median of {s['repeats']}"
    )
    return [
        title,
        "",
        *_table(["input px", "held-out accuracy", "inference img/s", "training img/s"], rows),
    ]


BEAM_LABELS = {
    "classify_dir": "**classify_dir** (tf.data, one process)",
    "beam_local": "classify_beam, Beam in-process runner (FnApiRunner, 1 worker)",
    "beam_two_threads": "classify_beam, 2 worker threads (multi_threading)",
}


def classify_beam(result: dict) -> list[str]:
    s = result["settings"]
    rates = result["images_per_second"]
    reference = rates["classify_dir"]["per_second"]
    rows = [
        [
            label,
            _number(rates[name]["per_second"], 1),
            _number(rates[name]["per_second"] / reference if reference else None),
        ]
        for name, label in BEAM_LABELS.items()
        if name in rates
    ]
    title = (
        f"### Apache Beam on one machine: {s['images']} scans {s['scan_side']}² (PNG + JPEG), "
        f"model {s['image_size']} px, batch {s['batch_size']}, CAMs, whole calls, "
        f"median of {s['repeats']}"
    )
    return [title, "", *_table(["engine", "img/s", "x classify_dir"], rows)]


def released_model(result: dict) -> list[str]:
    s = result["settings"]
    rates = result["images_per_second"]
    shipped = s["shipped_model"]
    reference = rates["old_default_b0_128"]["per_second"]
    labels = {
        "old_default_b0_128": "old default recipe (configs/robust.flags: B0, 128 px)",
        shipped: f"**{shipped}** (shipped: Lite0, 224 px)",
    }
    cpu_ms = result.get("cpu_ms_per_image", {})
    cpu_reference = cpu_ms.get("old_default_b0_128")
    rows = [
        [
            label,
            _number(rates[name]["per_second"], 1),
            _number(rates[name]["per_second"] / reference if reference else None),
            _number(cpu_ms.get(name), 1),
            _number(cpu_ms[name] / cpu_reference if cpu_reference else None),
        ]
        for name, label in labels.items()
    ]
    title = (
        f"### The shipped model's cost: {s['images']} scans {s['scan_side']}² (PNG + JPEG), "
        f"classify_dir with CAMs and mirror TTA, batch {s['batch_size']}, whole calls, "
        f"median of {s['repeats']}"
    )
    header = ["model", "img/s", "x old default", "CPU ms per image", "x old default"]
    return [title, "", *_table(header, rows)]


def _before_after(before, after) -> str:
    if before is None:
        return _number(after, 1)
    return f"{_number(before, 1)} -> {_number(after, 1)}"


def input_path(result: dict) -> list[str]:
    s = result["settings"]
    rates = result["images_per_second"]
    before = rates.get("before", {})
    commit = (s.get("baseline_commit") or "")[:7]
    lines = [
        f"### Input path: img/s per piece, model {s['image_size']} px (working side "
        f"{s['working_side']}), mode {s['mode']}; before = {commit or 'n/a'}, after = this "
        f"checkout; median of {s['repeats']}",
        "",
        "Decode: file -> pixels; preprocess: pixels in memory -> model input; whole: "
        "scan_input.scan_dataset (walk, decode, preprocess, batches). Wall-clock img/s, the "
        "process pinned with taskset; per core = 1000 / the process's CPU ms per image "
        "(what a core sustains, whatever else ran on the machine).",
    ]
    per_core = result.get("per_core_images_per_second", {})
    for cores in rates["after"]:
        rows = []
        for file_format, by_side in rates["after"][cores].items():
            for side, pieces in by_side.items():
                old = before.get(cores, {}).get(file_format, {}).get(side, {})
                core_rates = [
                    per_core.get(c, {}).get(file_format, {}).get(side) for c in ("before", "after")
                ]
                rows.append(
                    [
                        f"{s['formats'][file_format]} {side} px",
                        *(_before_after(old.get(p), pieces[p]) for p in ("decode", "preprocess")),
                        _before_after(old.get("whole"), pieces["whole"]),
                        _before_after(*core_rates),
                    ]
                )
        header = ["scans", "decode", "preprocess", "whole input path", "whole, per core"]
        lines += ["", f"{cores} core(s):", "", *_table(header, rows)]
    classify = result["classify"]
    if classify:
        rows = [
            [
                code,
                _number(values["model_only"], 1),
                _number(values["classify_dir"], 1),
                _number(values["classify_dir / model_only"]),
            ]
            for code, values in classify.items()
        ]
        lines += [
            "",
            f"classify_dir vs the classifier alone ({s['cores'][-1]} cores, "
            f"{s['classify_images']} scans, PNG + JPEG, batch {s['classify_batch']}):",
            "",
            *_table(
                ["code", "model only img/s", "classify_dir img/s", "classify_dir / model"], rows
            ),
        ]
    rows = []
    for code, by_side in result["pyramids"].items():
        for side, values in by_side.items():
            rows.append(
                [
                    f"{code}: {int(side):,} px ({_number(values['file_mb'], 1)} MB)",
                    _number(values["seconds_per_read"], 3),
                    "x".join(str(d) for d in values["decoded_shape"][:2]),
                    _number(values["peak_rss_mb"], 0),
                ]
            )
    lines += [
        "",
        "Pyramidal TIFF (RGB, JPEG tiles 512 px, levels halving), read as classify_dir reads it:",
        "",
        *_table(["file", "s per read", "decoded", "peak RSS MB"], rows),
        "",
        "Ratios: " + "; ".join(f"{k} = {_number(v)}" for k, v in result["ratios"].items()) + ".",
    ]
    return lines


SECTIONS = {
    "classify_throughput": classify_throughput,
    "memory_scaling": memory_scaling,
    "training_input": training_input,
    "builder": builder,
    "input_path": input_path,
    "image_size": image_size,
    "classify_beam": classify_beam,
    "released_model": released_model,
}


def targets(summary: dict) -> list[str]:
    rows = []
    for name, result in summary["results"].items():
        for goal in result.get("targets", []):
            rows.append(
                [
                    name,
                    goal["name"],
                    _number(goal["value"], 3),
                    f"{goal['comparison']} {goal['threshold']}",
                    _met(goal["met"]),
                ]
            )
    return ["### Targets", "", *_table(["benchmark", "target", "value", "goal", "met"], rows, 2)]


def markdown(summary: dict) -> str:
    m = summary["machine"]
    load = "/".join(str(v) for v in m["load_average_at_start"])
    lines = [
        f"Benchmarks ({summary['mode']} mode, `{summary['command']}`), {m['date']}, git {m['git']}: "
        f"{m['cpu']}, {m['cpu_count']} cores, {m['memory_gib']} GiB, {m['gpus']} GPU; "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}. Load average at start {load} "
        f"(a shared machine: compare ratios, not absolute rates). "
        "Medians of repeats (counts in each heading), approaches measured side by side.",
        "",
    ]
    for name, result in summary["results"].items():
        if "error" in result:
            last_line = [line for line in result["error"].splitlines() if line.strip()][-1]
            lines += [f"### {name}: failed", "", "    " + last_line.strip(), ""]
        else:
            lines += [*SECTIONS[name](result), ""]
    for name, reason in summary.get("skipped", {}).items():
        lines += [f"### {name}: skipped ({reason})", ""]
    lines += targets(summary)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as file:
        print(markdown(json.load(file)), end="")
