"""Example generation with Apache Beam, when the caller asks for it.

TFDS writes a split with Beam when `_generate_examples` returns a
`beam.PTransform` instead of a Python generator, and runs that pipeline with
the `DownloadConfig.beam_options` / `beam_runner` given to
`download_and_prepare` (`tfds build --beam_pipeline_options=...`,
`bin/build_datasets --beam_pipeline_options=...`). A builder that always
returned a PTransform would start a Beam pipeline for every local build too;
`BeamGenerationMixin` records whether Beam was asked for and lets the builder
hand the same work to either path:

    work items (specimens, images, slabs of slices: small, picklable)
      local: for item in work: yield from examples_of(item)
      Beam:  Create(work) -> Reshuffle -> FlatMap(examples_of)

Both paths call the same `examples_of` on the same items, so they yield the
same (key, example) pairs; TFDS orders examples by the hash of their key
either way, so the written splits are equal example by example. `examples_of`
runs on Beam workers: it must be picklable (a module-level function or a
`functools.partial` of one, never a bound method of the builder) and read its
sources from paths the workers can open.

apache_beam is imported only when Beam is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import tensorflow_datasets as tfds

Item = TypeVar("Item")
KeyExample = tuple[str, dict[str, Any]]


def beam_requested(download_config: tfds.download.DownloadConfig | None) -> bool:
    """Whether `download_and_prepare` was given Beam pipeline options or a runner."""
    return download_config is not None and (
        download_config.beam_options is not None or download_config.beam_runner is not None
    )


class BeamGenerationMixin:
    """For tfds.core.GeneratorBasedBuilder subclasses (list it before the TFDS base)."""

    _generate_with_beam: bool = False

    def download_and_prepare(
        self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs
    ) -> None:
        self._generate_with_beam = beam_requested(download_config)
        super().download_and_prepare(download_config=download_config, **kwargs)

    def examples_from(
        self, work: Sequence[Item], examples_of: Callable[[Item], Iterable[KeyExample]]
    ) -> Iterator[KeyExample] | Any:
        """A split's examples: a generator, or a `beam.PTransform` when Beam was asked for."""
        if not self._generate_with_beam:
            return (pair for item in work for pair in examples_of(item))
        import apache_beam as beam

        # Reshuffle: Create's items would otherwise stay in one bundle (fused with
        # the FlatMap), i.e. on one worker.
        return beam.Create(list(work)) | beam.Reshuffle() | beam.FlatMap(examples_of)
