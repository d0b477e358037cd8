"""Errors the dataset builders raise for problems a user can fix.

`bin/build_datasets` prints these as one clear message and exits non-zero,
instead of a traceback.
"""

from __future__ import annotations


class SourceDataError(Exception):
    """Source files are missing or unusable; the message says what to do."""


class MissingSourceFileError(SourceDataError):
    """A manually downloaded file is not where the builder looks for it."""

    def __init__(self, *, dataset: str, missing: str, searched: str, instructions: str):
        self.dataset = dataset
        self.missing = missing
        self.searched = searched
        self.instructions = instructions
        super().__init__(
            f"{dataset}: missing {missing} (looked in {searched}).\n{instructions.strip()}"
        )
