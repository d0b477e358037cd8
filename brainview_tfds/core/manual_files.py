"""Where a builder's manually downloaded files are, through public TFDS API only.

TFDS passes the folder as `DownloadConfig.manual_dir` to
`download_and_prepare`, but shows it to `_split_generators` only as
`dl_manager.manual_dir`, which refuses (with an AssertionError) when the folder
is missing or empty. A builder that should say which file is missing and
where it looked, or download when the file is not there, needs the folder
itself: `ManualFilesMixin` records it when `download_and_prepare` is called.
"""

from __future__ import annotations

import tensorflow_datasets as tfds
from etils import epath


class ManualFilesMixin:
    """For tfds.core.GeneratorBasedBuilder subclasses (list it first among the bases)."""

    _given_manual_dir: epath.Path | None = None

    def download_and_prepare(
        self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs
    ) -> None:
        manual_dir = download_config.manual_dir if download_config else None
        self._given_manual_dir = epath.Path(manual_dir).expanduser() if manual_dir else None
        super().download_and_prepare(download_config=download_config, **kwargs)

    def manual_files_dir(
        self, dl_manager: tfds.download.DownloadManager, *, required: bool
    ) -> epath.Path | None:
        """The folder to look in for manually downloaded files.

        The `manual_dir` given to `download_and_prepare` (it may not exist: the
        caller says what is missing there). Without one: TFDS's default folder
        (`dl_manager.manual_dir`, whose own error explains a missing folder)
        when the files are `required`, else None (the builder downloads).
        """
        if self._given_manual_dir is not None:
            return self._given_manual_dir
        return dl_manager.manual_dir if required else None
