"""Beam pipeline options from the command line, as `tfds build` spells them.

`--beam_pipeline_options=runner=DataflowRunner,project=my-project,region=...`
is a comma-separated list of Beam flags without their leading dashes; the
binaries of this project accept the same spelling so that one string works for
`tfds build`, `bin/build_datasets` and `bin/classify_beam`. A value cannot hold a comma;
list options are repeated instead (`experiments=a,experiments=b`).

apache_beam is imported only when options are actually built.
"""

from __future__ import annotations

from typing import Any


def option_flags(spec: str | None) -> list[str]:
    """'runner=X,project=Y' -> ['--runner=X', '--project=Y'] (empty items dropped)."""
    if not spec:
        return []
    return [f"--{item.strip().removeprefix('--')}" for item in spec.split(",") if item.strip()]


def pipeline_options(spec: str | None, **overrides: Any):
    """A `PipelineOptions` from a `--beam_pipeline_options` string, plus keyword overrides.

    Unknown flags are an error here (ValueError naming them) rather than being
    ignored by the runner: a misspelled `--num_workers` would otherwise run the
    job on the default cluster size. ImportError (saying what to install) when
    apache_beam is missing.
    """
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ModuleNotFoundError as error:
        raise ImportError(f"Apache Beam is not installed ({error}): pip install .[beam]") from None
    flags = option_flags(spec)
    options = PipelineOptions(flags, **overrides)
    known = options.get_all_options(retain_unknown_options=False)
    unknown = [flag for flag in flags if flag[2:].split("=", 1)[0].replace("-", "_") not in known]
    if unknown:
        raise ValueError(f"unknown Beam pipeline option(s): {', '.join(unknown)}")
    return options
