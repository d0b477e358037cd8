r"""Builds brainview's TFDS datasets into sharded TFRecords and prints what was built.

Examples:
  # The embedded default (no download):
  bin/build_datasets --datasets=brain_phantom
  # The real data shipped beside the project:
  bin/build_datasets --datasets=brain_phantom,allen_ccfv3/200um,brainmaps \
      --allen_ccfv3_dir=../shared/data/allen_ccfv3_200um \
      --brainmaps_dir=../shared/data/brainmaps
  # An Allen volume of any resolution from a local file:
  bin/build_datasets --datasets= --allen_ccfv3_file=/data/average_template_30.nrrd
"""

from __future__ import annotations

import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

# What to build.
flags.DEFINE_list(
    "datasets",
    ["brain_phantom"],
    "Datasets to build, as TFDS name[/config]: brain_phantom[/default|tiny], "
    "brain_phantom_outlines[/default|tiny], allen_ccfv3/{10,25,50,100,200}um, "
    "allen_ccfv3_outlines/{10,25,50,100,200}um, allen_nissl/{10,25,50,100}um, brainmaps.",
)
flags.DEFINE_string(
    "allen_ccfv3_file", None, "Also build allen_ccfv3 from this local NRRD (any resolution)."
)
flags.DEFINE_string(
    "allen_nissl_file", None, "Also build allen_nissl from this local NRRD (any resolution)."
)

# Where things are.
flags.DEFINE_string(
    "data_dir",
    None,
    "TFDS data directory to write to (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).",
)
flags.DEFINE_string(
    "manual_dir", None, "Folder holding manually downloaded files for every dataset (TFDS layout)."
)
flags.DEFINE_string("allen_ccfv3_dir", None, "Folder with average_template_<res>.nrrd.")
flags.DEFINE_string(
    "allen_ccfv3_outlines_dir",
    None,
    "Folder with the CCFv3 annotation_<res>.nrrd (default: --allen_ccfv3_dir, where the "
    "Allen files usually sit together).",
)
flags.DEFINE_string("allen_nissl_dir", None, "Folder with ara_nissl_<res>.nrrd.")
flags.DEFINE_string("brainmaps_dir", None, "Folder with coronal/ horizontal/ sagittal/ images.")

# How.
flags.DEFINE_bool("overwrite", False, "Rebuild datasets that are already built.")


@flags.multi_flags_validator(
    ["datasets", "allen_ccfv3_file", "allen_nissl_file"],
    "nothing to build: pass --datasets or --allen_*_file",
)
def _check_something_to_build(values: dict) -> bool:
    return any(values.values())


def _requests() -> list:
    from brainview_tfds import build

    manual_dirs = {
        "allen_ccfv3": FLAGS.allen_ccfv3_dir,
        "allen_ccfv3_outlines": FLAGS.allen_ccfv3_outlines_dir or FLAGS.allen_ccfv3_dir,
        "allen_nissl": FLAGS.allen_nissl_dir,
        "brainmaps": FLAGS.brainmaps_dir,
    }
    requests = []
    for spec in FLAGS.datasets:
        name, _, config = spec.partition("/")
        requests.append(
            build.BuildRequest(
                name=name,
                config=config or None,
                manual_dir=manual_dirs.get(name) or FLAGS.manual_dir,
            )
        )
    for name, path in (
        ("allen_ccfv3", FLAGS.allen_ccfv3_file),
        ("allen_nissl", FLAGS.allen_nissl_file),
    ):
        if path:
            requests.append(build.request_for_volume_file(name, path))
    return requests


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow_datasets as tfds

    import brainview_tfds  # noqa: F401 - registers the builders
    from brainview_tfds import build
    from brainview_tfds.core import errors, volumes

    known_errors = (errors.SourceDataError, volumes.VolumeReadError)
    try:
        requests = _requests()
    except known_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    registered = set(tfds.list_builders(with_community_datasets=False))
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()  # a log file gets no bars redrawn line by line
    summaries, failures = {}, []
    for request in requests:
        if request.name not in registered:
            failures.append(f"{request.full_name}: unknown dataset; see --help for the list")
            continue
        print(f"== building {request.full_name}", flush=True)
        try:
            with startup.library_prints_hidden():
                builder = build.build(request, data_dir=FLAGS.data_dir, overwrite=FLAGS.overwrite)
        except known_errors as error:
            failures.append(str(error))
            continue
        except tfds.core.registered.DatasetNotFoundError as error:
            failures.append(f"{request.full_name}: {error}")
            continue
        except ValueError as error:  # e.g. an unknown config name
            failures.append(f"{request.full_name}: {error}")
            continue
        print(f"   -> {builder.data_dir}", flush=True)
        summaries[request.full_name] = build.summarize(builder)

    if summaries:
        print()
        print(build.format_summary_table(summaries))
    for failure in failures:
        print(f"\nerror: {failure}", file=sys.stderr)
    return 1 if failures else 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
