"""RunInference's model handler for brainview's classifier: probabilities and Grad-CAMs.

Beam's RunInference does the engine's part: it batches the scans
(BatchElements: `batch_size` images, fewer only at a bundle's end), loads the model
once per worker process and shares it across the process's threads, and
reports inference metrics. This handler does the model's part, with the same
functions classify_dir uses:

* `load_model`: the model file is copied from any Beam filesystem (gs://,
  s3://, hdfs://, or a local path every worker sees) with its model card
  (model.json beside it), then `model.load_model` rebuilds it under the
  precision policy for the worker's devices (`devices.set_precision("auto")`:
  mixed_float16 on a GPU worker with float32 outputs, float32 on a CPU);
* `run_inference`: `gradcam.make_predict_with_cams` (probabilities and the
  Grad-CAM of the predicted view in one pass) or `predict.make_predict`,
  with mirror test-time augmentation when the run uses it.

It subclasses Beam's generic `ModelHandler` rather than `TFModelHandlerNumpy`:
that handler's module imports tensorflow_hub (and through it tf-keras and
setuptools' pkg_resources) at import time, while its loading (a Keras
SavedModel or weights into a fresh model) and inference (`model(batch)`) would
both be replaced here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from brainview import devices, gradcam, predict
from brainview import model as model_lib


def local_model_copy(model_path: str, directory: str | None = None) -> str:
    """`model_path` itself if local, else a local copy of it and its model card.

    The copy goes to `directory` (default: a new temporary folder) under the
    model's own file name, with model.json beside it.
    """
    if FileSystems.get_scheme(model_path) is None:
        return model_path
    directory = directory or tempfile.mkdtemp(prefix="brainview_model_")
    local = os.path.join(directory, os.path.basename(model_path))
    for source, target in (
        (model_path, local),
        (model_lib.card_path(model_path), model_lib.card_path(local)),
    ):
        with FileSystems.open(source) as remote, open(target, "wb") as copy:
            shutil.copyfileobj(remote, copy, 1 << 20)
    return local


class Classifier:
    """A loaded model's prediction function: images (B,S,S,3) -> probabilities [, CAMs]."""

    def __init__(self, model_path: str, tta: bool, with_cams: bool):
        devices.set_precision("auto")
        model, _ = model_lib.load_model(local_model_copy(model_path))
        self.with_cams = with_cams
        if with_cams:
            self.function = gradcam.make_predict_with_cams(model, tta)
        else:
            self.function = predict.make_predict(model, tta)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.function(tf.constant(images))
        if self.with_cams:
            probabilities, cams = outputs
            return probabilities.numpy(), cams.numpy()
        return outputs.numpy(), None


class ClassifierHandler(ModelHandler[np.ndarray, PredictionResult, Classifier]):
    """Model inputs (S,S,3) float32 -> PredictionResult(inference=(probabilities, CAM or None)).

    The results leave out the input image (`example` is None): rows need the
    answer only, and the image is the bulk of an element.
    """

    def __init__(self, model_path: str, *, tta: bool, with_cams: bool, batch_size: int):
        # Full batches, as classify_dir runs them: Beam's adaptive sizing starts at one
        # image per call; full batches made whole runs 1.2-1.5x faster on our CPU.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model_path = model_path
        self.tta = tta
        self.with_cams = with_cams

    def load_model(self) -> Classifier:
        return Classifier(self.model_path, self.tta, self.with_cams)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: Classifier,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        probabilities, cams = model(np.stack(batch))
        return [
            PredictionResult(None, (probabilities[i], None if cams is None else cams[i]))
            for i in range(len(batch))
        ]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(image.nbytes for image in batch)

    def get_metrics_namespace(self) -> str:
        return "brainview_classifier"
