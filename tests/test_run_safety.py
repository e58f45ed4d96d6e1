"""Issue 27 at the run level: the user's data root is never written, finished results are never reused for a
different experiment, and bad settings end in one clear error."""

from __future__ import annotations

from pathlib import Path

from mmea_lightning.train import run

from .conftest import make_config


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_default_run_with_mmea_data_dir_leaves_the_data_root_alone(tmp_path, cache_dir, monkeypatch):
    """Defect 1: with the README's ``export MMEA_DATA_DIR=...`` the toy run used to move that root aside and delete
    it. Now the toy pair lives in the cache and the data root is only ever read."""
    user_root = tmp_path / "mmkg"
    for folder in ("DBP15K/zh_en", "FBDB15K/norm"):
        (user_root / folder).mkdir(parents=True)
        (user_root / folder / "ent_ids_1").write_text("0\thttp://example.org/a\n")
    before = _tree(user_root)
    monkeypatch.setenv("MMEA_DATA_DIR", str(user_root))
    cfg = make_config(tmp_path / "run", cache_dir, ["model.max_epochs=1", "logger=none"])
    assert cfg.data_dir == str(user_root)
    summary = run(cfg)
    assert summary["run"]["dataset"] == "toy"
    assert _tree(user_root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmkg", "run"]
    assert (cache_dir / "toy" / "TOY" / "pair" / "ill_ent_ids").is_file()
