"""Integer inputs are watched through the features the compiler derives from them:
category frequencies (chi-square), token sequence length, padding and unknown-id shares,
attention-mask lengths (KS), counted by the device's own binner on the reference bins."""

from __future__ import annotations

import numpy as np

from control_plane.core.drift import evaluate
from control_plane.core.sketches import reference_features
from control_plane.core.stats import reference_statistics
from edge_agent.core.telemetry import TensorBinner

PAD, UNKNOWN, WIDTH = 0, 1, 32


def _tokens(rng: np.random.Generator, rows: int, lengths: tuple[int, int], unknown: float):
    ids = np.full((rows, WIDTH), PAD, dtype=np.int64)
    for i, n in enumerate(rng.integers(*lengths, size=rows)):
        row = rng.integers(2, 5000, size=n)
        row[rng.random(n) < unknown] = UNKNOWN
        ids[i, :n] = row
    return ids


def _data(rng: np.random.Generator, rows: int, shifted: bool):
    codes = rng.choice(6, size=(rows, 2), p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    if shifted:  # the first categorical input's mix changes (a new dominant category)
        codes[:, 0] = rng.choice(6, size=rows, p=[0.05, 0.1, 0.1, 0.1, 0.15, 0.5])
    tokens = _tokens(rng, rows, (5, 14) if shifted else (10, 30), 0.15 if shifted else 0.02)
    mask = (tokens != PAD).astype(np.int64)
    return {"codes": codes, "input_ids": tokens, "attention_mask": mask}


def _histograms(stats, inputs):
    out = {}
    for tensor in stats.inputs:
        binner = TensorBinner(tensor)
        for feature in binner.split(binner.counts(inputs[tensor.tensor])):
            out[(tensor.tensor, feature["name"])] = np.asarray(feature["counts"])
    return out


def test_integer_inputs_drift_through_their_derived_features():
    rng = np.random.default_rng(0)
    reference = _data(rng, 5000, shifted=False)
    scores = rng.random((5000, 3))
    stats = reference_statistics(
        reference, {"probs": scores}, "classification", "test", unknown_id=UNKNOWN
    )
    axes = {t.tensor: t.feature_axis for t in stats.inputs}
    assert axes == {"codes": "element", "input_ids": "tokens", "attention_mask": "mask"}
    features = reference_features(stats)
    assert features[("codes", "codes[0]")].kind == "categorical"
    assert {n for t, n in features if t == "input_ids"} == {
        "length", "padding_share", "unknown_share",
    }  # fmt: skip

    quiet = evaluate(features, _histograms(stats, _data(rng, 2000, shifted=False)))
    assert quiet.status == "no_drift"
    report = evaluate(features, _histograms(stats, _data(rng, 2000, shifted=True)))
    by_label = {f.label: f for f in report.features}
    assert (
        by_label["codes/codes[0]"].test == "chi2" and by_label["codes/codes[0]"].status == "drift"
    )
    assert by_label["codes/codes[1]"].status == "no_drift"  # its mix did not change
    for label in ("input_ids/length", "input_ids/padding_share", "input_ids/unknown_share",
                  "attention_mask/length"):  # fmt: skip
        assert by_label[label].test == "ks" and by_label[label].status == "drift", label


def test_chi_square_with_an_empty_current_sample_is_finite_and_quiet() -> None:
    """No current rows for a categorical feature (a window that scored none of it): the
    statistic is 0 and p is 1, with no 0/0 (warnings are errors in the suite)."""
    import numpy as np

    from control_plane.core.drift import chi_square_two_sample

    statistic, p = chi_square_two_sample(np.array([30.0, 50.0, 20.0]), np.zeros(3))
    assert np.isfinite(statistic).all() and float(statistic[0]) == 0.0
    assert float(p[0]) == 1.0
