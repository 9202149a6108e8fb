import numpy as np

from fitnets_tf import logit_scale


def test_the_gap_is_the_median_over_images_of_the_top_two_logits_difference():
    logits = np.array([[0.0, 1.0, 3.0], [5.0, 4.0, 0.0], [2.0, 2.0, 1.0]])
    assert logit_scale.top_gap(logits) == 1.0  # gaps 2, 1, 0
    # Softmax of [0, 0] and [0, 2 ln 3] at τ=2: tops 0.5 and 0.75.
    two = np.array([[0.0, 0.0], [0.0, 2 * np.log(3.0)]])
    assert np.isclose(logit_scale.top_probability(two, 2.0), 0.625)


def test_logits_tied_both_ways_are_not_called_255_times_off():
    # A gap of 0 as fed and 0 on the images times 255: no ratio to blame the scaling for.
    images = np.full((4, 2, 2, 1), 0.5, "float32")
    tied = lambda batch: np.zeros((len(batch), 4), "float32")  # noqa: E731
    assert logit_scale.warning(tied, images, np.arange(4), tied(images), "scale", 3.0,
                               name="t", given="g", fix={"scale": "f"}) is None  # fmt: skip
    # Modes other than raw pixels and pixels / 255 are not checked.
    assert logit_scale.warning(tied, images, np.arange(4), tied(images), "standardize", 3.0,
                               name="t", given="g", fix={}) is None  # fmt: skip
