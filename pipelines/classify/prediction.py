"""Probabilities and Grad-CAMs for the scan batches, on every GPU of the node.

The strategy distributes the dataset (`experimental_distribute_dataset`): each
replica gets an equal slice of every batch (the scan input pads batches to one
size), runs the prediction function on it, and the slices are joined back in
batch order. Elements stay on the host until the function runs
(`experimental_fetch_to_device=False`): the batches also carry paths and error
strings, which have no place on a GPU. On a CPU the default strategy passes
batches through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from brainview import gradcam, predict


class Predictor:
    """Scan batches -> (batch as NumPy, probabilities (B,3), CAMs (B,h,w) or None)."""

    def __init__(
        self,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
        with_cams: bool,
        tta: bool = False,
    ):
        self.strategy = strategy
        self.with_cams = with_cams
        if with_cams:
            self.function = gradcam.make_predict_with_cams(model, tta)
        else:
            self.function = predict.make_predict(model, tta)

    def predict(
        self, dataset: tf.data.Dataset
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]]:
        """Every batch of `dataset` (dicts with an "image" key) with its predictions."""
        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        for batch in self.strategy.experimental_distribute_dataset(dataset, options):
            yield self(batch)

    def __call__(self, batch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """One distributed batch (an element of the distributed dataset)."""
        outputs = self.strategy.run(self.function, args=(batch["image"],))
        batch = {key: values for key, values in batch.items() if key != "image"}
        if self.with_cams:
            probabilities, cams = outputs
            return self._joined(batch), self._joined(probabilities), self._joined(cams)
        return self._joined(batch), self._joined(outputs), None

    def _joined(self, values):
        """Per-replica values (or a dict of them) -> one NumPy array each, in batch order."""
        return tf.nest.map_structure(
            lambda value: np.concatenate(
                [local.numpy() for local in self.strategy.experimental_local_results(value)]
            ),
            values,
        )
