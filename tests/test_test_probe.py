"""The test probe (``callbacks=with_test_probe``): test metrics at every validation check, reported apart, with the
selection and the reported figures of the run unchanged."""

from __future__ import annotations

import json

import pytest

from mmea_lightning.run_identity import IDENTITY_FILE
from mmea_lightning.train import run

from .conftest import make_config

TINY = ["model=eva", "model.max_epochs=12", "model.check_val_every_n_epoch=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    plain_dir, probe_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("probe")
    plain = run(make_config(plain_dir, cache_dir, TINY))
    probed = run(make_config(probe_dir, cache_dir, [*TINY, "callbacks=with_test_probe"]))
    return plain_dir, plain, probe_dir, probed


def test_the_probe_changes_no_reported_figure_and_no_identity(runs):
    plain_dir, plain, probe_dir, probed = runs
    for key, value in plain.items():
        if key != "run":
            assert probed[key] == value, key
    assert "test_probe" not in plain["run"]
    plain_identity = json.loads((plain_dir / IDENTITY_FILE).read_text())
    probe_identity = json.loads((probe_dir / IDENTITY_FILE).read_text())
    assert plain_identity["settings"] == probe_identity["settings"]


def test_every_check_is_probed_and_the_selected_one_matches_the_test(runs):
    _, _, probe_dir, probed = runs
    record = json.loads((probe_dir / "metrics.json").read_text())["run"]["test_probe"]
    assert record == probed["run"]["test_probe"]
    assert [c["epoch"] for c in record["checks"]] == [2, 5, 8, 11]
    assert "never used for selection" in record["note"]
    # the validation-selected check is the tested checkpoint: its probe figures are the reported test figures
    chosen = record["validation_selected"]
    assert chosen["val_mrr"] == pytest.approx(probed["val/best_mrr"], abs=1e-6)
    assert probed["run"]["best_checkpoint"].endswith(f"epoch{chosen['epoch']:03d}.ckpt")
    assert chosen["mrr"] == pytest.approx(probed["test/mrr"], abs=1e-6)
    assert chosen["hits@1"] == pytest.approx(probed["test/hits@1"], abs=1e-6)
    best = record["test_selected"]
    assert best["mrr"] == max(c["mrr"] for c in record["checks"])
    assert record["test_selection_gain"]["mrr"] == pytest.approx(best["mrr"] - chosen["mrr"])
    assert record["test_selection_gain"]["mrr"] >= 0
