"""Layout (b) over several devices: the placement plan, the --device checks, and scoring with placed models."""

import pytest
import torch
from test_category_rm_model import _mixed_batch, bf16_exact_model_dir  # noqa: F401 (a fixture)

from openrlhf_drirl.cli import serve_category_rm
from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.reward.model import (
    PerCategoryRewardModels,
    export_category,
    load_category_reward_model,
    placement_plan,
    resolve_devices,
)


def test_placement_plan_is_round_robin_over_the_devices():
    two = placement_plan(DEFAULT_CATEGORIES, ["cuda:0", "cuda:1"])
    assert list(two) == list(DEFAULT_CATEGORIES)
    assert [two[c] for c in DEFAULT_CATEGORIES] == ["cuda:0", "cuda:1"] * 3 + ["cuda:0"]
    assert sorted(list(two.values()).count(d) for d in ("cuda:0", "cuda:1")) == [3, 4]  # 4 x 14 GB on one 80 GB card
    eight = placement_plan(DEFAULT_CATEGORIES, [f"cuda:{i}" for i in range(8)])
    assert len(set(eight.values())) == 7
    assert set(placement_plan(DEFAULT_CATEGORIES, ["cpu"]).values()) == {"cpu"}
    with pytest.raises(ValueError, match="at least one device"):
        placement_plan(DEFAULT_CATEGORIES, [])


def test_device_flag_is_checked():
    gpus = torch.cuda.device_count()
    assert resolve_devices(None) == resolve_devices("auto") == ([f"cuda:{i}" for i in range(gpus)] or ["cpu"])
    assert resolve_devices(" cpu ") == ["cpu"]
    for spec, message in [
        (f"cuda:{gpus}", "is not visible"),
        ("cpu,cpu", "names a device twice"),
        ("gpu0", "is not a device"),
        (",", "names no device"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            resolve_devices(spec)
        assert "--device" in str(error.value)


def test_placed_models_score_as_layout_a(bf16_exact_model_dir, tmp_path):  # noqa: F811
    """Every device list this machine has (CPU only here; CPU + GPU where there is one) gives layout (a)'s scores."""
    multi_head = load_category_reward_model(bf16_exact_model_dir, param_dtype="fp32").eval()
    tokenizer, input_ids, attention_mask, category_ids = _mixed_batch(bf16_exact_model_dir, n=14)
    paths = {c: export_category(multi_head, c, str(tmp_path / c), tokenizer) for c in multi_head.categories}
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    placed = PerCategoryRewardModels.from_pretrained(paths, param_dtype="fp32", devices=devices)
    plan = placement_plan(DEFAULT_CATEGORIES, devices)
    for category, model in placed.models.items():
        assert str(next(model.parameters()).device) == str(torch.device(plan[category]))
    with torch.no_grad():
        expected = multi_head(input_ids, attention_mask, category_ids)
        torch.testing.assert_close(placed(input_ids, attention_mask, category_ids), expected, rtol=1e-5, atol=1e-5)


def test_server_refuses_a_device_it_cannot_use(category_rm_dir, capsys):
    argv = ["--reward.model_name_or_path", category_rm_dir, "--hardness.backend", "none"]
    with pytest.raises(SystemExit) as exit_code:
        serve_category_rm.main(argv + ["--device", f"cuda:{torch.cuda.device_count()}"])
    assert exit_code.value.code == 2
    assert "--device" in capsys.readouterr().err
