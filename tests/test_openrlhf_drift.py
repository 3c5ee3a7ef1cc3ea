"""Drift guard: the plugin mirrors or wraps a few pieces of OpenRLHF 0.11.2. When OpenRLHF changes one of them (an
upgrade, a patched install), this test fails and names what to re-check, instead of training silently going wrong.

The sources are read from OpenRLHF's files (not from the imported, possibly patched, classes) and hashed. After
re-checking the plugin against the new code, update the hash here.
"""

import ast
import hashlib
import importlib.util

import pytest

from openrlhf_drirl.cli.train_ppo_ray import ESTIMATOR_FLAG, openrlhf_parser

# (module, "Class.method" or "function") -> (sha256 of its source, what in openrlhf_drirl depends on it)
MIRRORED = {
    ("openrlhf.trainer.ppo_utils.experience_maker", "RemoteExperienceMaker.compute_advantages_and_returns"): (
        "edee114b74af1e792960f911d528043b286ff660ba28df78073a7300d1385c25",
        "DRIRLExperienceMaker.compute_advantages_and_returns (openrlhf_drirl/advantage/experience_maker.py) repeats "
        "its steps around the baseline: fp32 rewards, apply_length_penalties, the rollout-order scatter by "
        "experience.index, info['group_reward_std'], compute_reward (clip + KL), cumulative returns with gamma 1, "
        "no whitening for group estimators",
    ),
    ("openrlhf.trainer.ppo_trainer", "BasePPOTrainer.save_logs_and_checkpoints"): (
        "669909c3e1b7a218a8e71d601f319cb252215fbaba55b8c69d2316a14d097518",
        "openrlhf_drirl/plugin.py wraps it to add the estimator state to client_states (argument order, and that "
        "client_states still reach the actor's save_checkpoint)",
    ),
    ("openrlhf.trainer.ppo_trainer", "BasePPOTrainer.init_checkpoint_states"): (
        "dd80591d9650c2fae35f7be0f52d334c3d5c34d7b27c084e640267c7c4fe1be4",
        "openrlhf_drirl/plugin.py wraps it to restore the estimator state from the states it returns on resume",
    ),
    ("openrlhf.trainer.ppo_trainer", "BasePPOTrainer.__init__"): (
        "52108ae9a9ec0d8f5a926cfa378ad815f0829604905000aec8b66b83dc5d8cfe",
        "openrlhf_drirl/plugin.py replaces the module global RemoteExperienceMaker that this constructor builds; "
        "check it still builds the experience maker from that global with the same arguments",
    ),
    ("openrlhf.models.utils", "compute_reward"): (
        "548aa03413856116bc61638d7bdf42ba7bb5518b5ac8e418b8a3236bfcea4abc",
        "DRIRLExperienceMaker calls compute_reward(reward, kl_coef, kl, action_mask=, reward_clip_range=)",
    ),
}

# What the launcher edits or reads in OpenRLHF's train_ppo_ray parser.
ESTIMATOR_CHOICES = ["gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce"]
FLAGS_READ = ["--rollout.n_samples_per_prompt", "--reward.remote_url", "--train.agent_func_path", ESTIMATOR_FLAG]


def source_of(module: str, qualified_name: str) -> str:
    path = importlib.util.find_spec(module).origin
    with open(path) as f:
        text = f.read()
    scope = ast.parse(text)
    for part in qualified_name.split("."):
        scope = next(
            node
            for node in scope.body
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == part
        )
    return ast.get_source_segment(text, scope)


@pytest.mark.parametrize("module,name", list(MIRRORED))
def test_mirrored_openrlhf_code_is_unchanged(module, name):
    expected, depends = MIRRORED[(module, name)]
    digest = hashlib.sha256(source_of(module, name).encode()).hexdigest()
    assert digest == expected, (
        f"OpenRLHF's {module}.{name} changed (sha256 {digest[:16]}..., expected {expected[:16]}...). Re-check: "
        f"{depends}. Then update its hash in tests/test_openrlhf_drift.py."
    )


def test_launcher_flags_are_as_expected():
    parser = openrlhf_parser()
    missing = [flag for flag in FLAGS_READ if flag not in parser._option_string_actions]
    assert not missing, (
        f"OpenRLHF's train_ppo_ray parser no longer has {missing}: re-check openrlhf_drirl/cli/train_ppo_ray.py "
        "(_extend_parser, _check_estimator_args) and GRPO-S's check_grpo_s_args, which read them"
    )
    choices = list(parser._option_string_actions[ESTIMATOR_FLAG].choices)
    assert choices == ESTIMATOR_CHOICES, (
        f"OpenRLHF's {ESTIMATOR_FLAG} choices changed to {choices} (expected {ESTIMATOR_CHOICES}): the launcher "
        "appends the registered estimators to them and refuses clashes; re-check that a new OpenRLHF estimator does "
        "not share a name with a registered one and that DRIRLExperienceMaker still hands unregistered names to "
        "OpenRLHF, then update ESTIMATOR_CHOICES in tests/test_openrlhf_drift.py"
    )
