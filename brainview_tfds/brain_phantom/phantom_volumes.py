"""A phantom specimen: a sampled anatomy and a sampled appearance, from one seed.

`anatomy.py` builds the brain (a density volume), `rendering.py` images its
sections (`rendering.render_section`); the builder, the dummy data of the
tests and the demo's sample scans all start from `make_specimen`.
"""

from __future__ import annotations

import numpy as np

from brainview_tfds.brain_phantom import anatomy, rendering


def make_specimen(
    seed: int, shape: tuple[int, int, int] = (80, 48, 68)
) -> tuple[np.ndarray, anatomy.Anatomy, rendering.Appearance]:
    """Deterministic: same seed -> bit-identical outputs. Uses np.random.default_rng(seed) only."""
    rng = np.random.default_rng(seed)
    brain = anatomy.sample_anatomy(rng)
    appearance = rendering.sample_appearance(rng)
    return anatomy.make_density_volume(brain, shape), brain, appearance
