"""The plugin's own tests: the lightning-tasks conformance kit over each preset."""

import pytest

from tasks.testing import check_preset


@pytest.mark.parametrize("preset", ["quantile_synthetic", "quantile_diabetes"])
def test_preset_passes_the_conformance_kit(preset, tmp_path):
    report = check_preset(preset, tmp_path)
    assert report["predictions"]["keys"] == ["q0.1", "q0.5", "q0.9"]
    assert {"test/pinball", "test/coverage", "test/width"} <= set(report["test"])
