"""``get_training_strategy`` (OpenRLHF's DeepspeedStrategy, on CPU ranks here), and TorchStrategy, the plain-torch
stand-in that train_ppo_local still uses: accumulation, clipping, checkpoints, resume, and the calls OpenRLHF's actor
trainer makes (an OpenRLHF ``Actor`` around a tiny causal LM)."""

import copy
import os

import pytest
import torch
from conftest import category_rm_train_argv, irl_pair_rows
from openrlhf.utils.config import hierarchize
from safetensors.torch import load_file

from openrlhf_drirl.cli.train_category_rm import build_parser
from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.training import TorchStrategy, get_training_strategy

CFG = dict(
    optim="adam",
    adam=dict(lr=1e-2, betas=(0.9, 0.95), eps=1.0, weight_decay=0.0),  # eps 1: the update scales with the gradient
    lr_scheduler="cosine_with_min_lr",
    lr_warmup_ratio=0.0,
    min_lr_ratio=0.1,
    max_norm=0.05,
    scheduler_steps=6,
)


@pytest.fixture(scope="module")
def reward_model_and_pairs(category_rm_lm_dir):
    """A fresh multi-head category reward model and 8 tokenized pairs, one or two per category."""
    from transformers import AutoTokenizer

    from openrlhf_drirl.reward.data import tokenize_pairs
    from openrlhf_drirl.reward.model import get_category_reward_model

    torch.manual_seed(0)
    model = get_category_reward_model(category_rm_lm_dir, DEFAULT_CATEGORIES, param_dtype="fp32", init_heads=True)
    tokenizer = AutoTokenizer.from_pretrained(category_rm_lm_dir)
    pairs = tokenize_pairs(irl_pair_rows()[::10][:8], tokenizer, DEFAULT_CATEGORIES, 128, True)
    return model, pairs, tokenizer.pad_token_id


def pair_loss(model, pairs, pad_token_id):
    from openrlhf.models import PairWiseLoss

    from openrlhf_drirl.reward.data import collate_pairs

    rewards = model(*collate_pairs(pairs, pad_token_id))
    return PairWiseLoss()(rewards[: len(pairs)], rewards[len(pairs) :])


def train_step(strategy, model, optimizer, scheduler, pairs, pad_token_id):
    micro = strategy.micro_train_batch_size
    for start in range(0, len(pairs), micro):
        strategy.backward(pair_loss(model, pairs[start : start + micro], pad_token_id), model, optimizer)
        strategy.optimizer_step(optimizer, model, scheduler)


def test_get_training_strategy_is_openrlhfs_deepspeed_on_cpu_too(category_rm_lm_dir, irl_pairs_path, tmp_path):
    from openrlhf.utils.deepspeed import DeepspeedStrategy

    argv = category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, tmp_path)
    if torch.cuda.is_available():  # --train.cpu would redirect torch.cuda for the rest of this process
        args = hierarchize(build_parser().parse_args(argv))
        assert isinstance(get_training_strategy(args), DeepspeedStrategy)
        assert (args.ds.param_dtype, args.ds.attn_implementation) == ("bf16", "flash_attention_2")
        return
    args = hierarchize(build_parser().parse_args([*argv, "--train.cpu"]))
    strategy = get_training_strategy(args)
    assert type(strategy) is DeepspeedStrategy
    assert (strategy.param_dtype, args.ds.attn_implementation) == ("fp32", "sdpa")
    strategy.setup_distributed()  # a one-rank gloo group: no launcher here
    assert (strategy.accumulated_gradient, strategy.world_size, strategy.get_rank()) == (1, 1, 0)  # 14 / 14 pairs
    assert strategy.ds_device_mesh.device_type == "cpu"
    assert strategy.all_reduce({"loss": 2.0}) == {"loss": 2.0}
    assert strategy.all_gather(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]
    explicit = hierarchize(build_parser().parse_args([*argv, "--ds.param_dtype", "bf16"]))
    assert get_training_strategy(explicit).param_dtype == "bf16"  # a given flag is kept


def test_gradient_accumulation_equals_one_big_batch(reward_model_and_pairs):
    """4 micro-batches of 2 pairs through backward/optimizer_step = one plain-torch step on all 8 (clipped AdamW and
    OpenRLHF's scheduler), and the reported grad norm is the pre-clipping norm of that big batch."""
    from transformers.trainer import get_scheduler

    model, pairs, pad_token_id = reward_model_and_pairs
    model, reference = copy.deepcopy(model), copy.deepcopy(model)
    strategy = TorchStrategy(micro_train_batch_size=2, train_batch_size=8)
    model, optimizer, scheduler = strategy.prepare((model, CFG))
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1.0, weight_decay=0.0)
    ref_scheduler = get_scheduler(
        "cosine_with_min_lr", ref_optimizer, 0, 6, scheduler_specific_kwargs={"min_lr_rate": 0.1}
    )
    initial = copy.deepcopy(model.state_dict())

    for step in range(2):
        for start in (0, 2, 4):  # no optimizer step before the last micro-batch of the step
            strategy.backward(pair_loss(model, pairs[start : start + 2], pad_token_id), model, optimizer)
            strategy.optimizer_step(optimizer, model, scheduler)
        if step == 0:
            assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
        strategy.backward(pair_loss(model, pairs[6:8], pad_token_id), model, optimizer)
        strategy.optimizer_step(optimizer, model, scheduler)

        pair_loss(reference, pairs, pad_token_id).backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), CFG["max_norm"])
        ref_optimizer.step()
        ref_scheduler.step()
        ref_optimizer.zero_grad()
        assert norm > CFG["max_norm"]  # clipping was active
        assert strategy.get_grad_norm(model) == pytest.approx(float(norm), rel=1e-4)
        assert scheduler.get_last_lr()[0] == pytest.approx(ref_scheduler.get_last_lr()[0])
        for (name, value), ref_value in zip(model.state_dict().items(), reference.state_dict().values()):
            torch.testing.assert_close(value, ref_value, rtol=0, atol=1e-6, msg=name)
    assert not any(torch.equal(v, initial[k]) for k, v in model.state_dict().items() if k.startswith("score"))


def test_checkpoint_round_trip_and_rotation(reward_model_and_pairs, tmp_path):
    model, pairs, pad_token_id = reward_model_and_pairs
    fresh = copy.deepcopy(model)
    strategy = TorchStrategy(micro_train_batch_size=2, train_batch_size=4)
    model, optimizer, scheduler = strategy.prepare((copy.deepcopy(model), CFG))
    ckpt_dir = str(tmp_path / "ckpt")
    for step in range(1, 5):
        train_step(strategy, model, optimizer, scheduler, pairs[:4], pad_token_id)
        state = {"global_step": step, "consumed_samples": 4 * step}
        strategy.save_ckpt(model, ckpt_dir, f"global_step{step}", 2, 1000, state)
        if step == 1:  # a best checkpoint is kept out of the max_num rotation, as DeepSpeed does
            strategy.save_ckpt(model, ckpt_dir, "best_step1", 2, 1000, state, save_latest=False, metric_value=0.5)
    os.makedirs(os.path.join(ckpt_dir, "global_step5.tmp"))  # what a kill during a save leaves
    with open(os.path.join(ckpt_dir, "global_step5.tmp", "checkpoint.pt"), "wb") as f:
        f.write(b"half a checkpoint")
    assert sorted(os.listdir(ckpt_dir)) == ["best_step1", "global_step3", "global_step4", "global_step5.tmp", "latest"]

    other = TorchStrategy(micro_train_batch_size=2, train_batch_size=4)
    restored, restored_optimizer, restored_scheduler = other.prepare((fresh, CFG))
    assert other.load_ckpt(restored, str(tmp_path / "empty")) == (None, {})
    path, client_state = other.load_ckpt(restored, ckpt_dir)
    assert path == os.path.join(ckpt_dir, "global_step4")
    assert client_state == {"global_step": 4, "consumed_samples": 16}
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert restored_scheduler.state_dict() == scheduler.state_dict()
    for state, restored_state in zip(optimizer.state.values(), restored_optimizer.state.values()):
        assert all(torch.equal(state[k], restored_state[k]) for k in ("step", "exp_avg", "exp_avg_sq"))

    # Training on from both gives the same weights; a tag loads that checkpoint.
    train_step(strategy, model, optimizer, scheduler, pairs[4:8], pad_token_id)
    train_step(other, restored, restored_optimizer, restored_scheduler, pairs[4:8], pad_token_id)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    other.save_ckpt(restored, ckpt_dir, "global_step5", 2, 1000, {"global_step": 5})  # replaces the half one
    assert sorted(os.listdir(ckpt_dir)) == ["best_step1", "global_step4", "global_step5", "latest"]
    assert other.load_ckpt(restored, ckpt_dir, tag="best_step1")[1]["global_step"] == 1


def test_kill_between_steps_resumes_at_the_next_step(
    category_rm_lm_dir, irl_pairs_path, tmp_path, monkeypatch, capsys
):
    """The IRL trainer (DeepspeedStrategy, one CPU rank): kill right after checkpoint 7 of 10 (in refresh round 1, 2
    micro-batches per step); the same command again runs steps 8-10 only, with the same losses and final weights as
    an uninterrupted run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from openrlhf_drirl.generation import Generation
    from openrlhf_drirl.reward.irl_trainer import train

    def generate(prompts, *, max_new_tokens, temperature, seeds):
        return [Generation(f"Fine, {seed % 97} ways to do it.", 6, "stop") for seed in seeds]

    def run(output, run_name, *extra):
        argv = category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, tmp_path / output, *extra)
        argv += ["--train.micro_batch_size", "7", "--train.max_epochs", "1", "--irl.refresh_rounds", "1"]
        argv += ["--ckpt.save_steps", "1", "--logger.tensorboard_dir", str(tmp_path / "tb")]
        train(hierarchize(build_parser().parse_args([*argv, "--logger.wandb.run_name", run_name])), generate=generate)
        events = EventAccumulator(str(tmp_path / "tb" / run_name)).Reload()
        return {e.step: e.value for e in events.Scalars("train/loss")}

    class Killed(Exception):
        pass

    from openrlhf.utils.deepspeed import DeepspeedStrategy

    save_ckpt = DeepspeedStrategy.save_ckpt

    def save_then_die(self, model, save_dir, tag=None, *args, **kwargs):
        save_ckpt(self, model, save_dir, tag, *args, **kwargs)
        if tag == "global_step7":
            raise Killed

    straight_losses = run("straight", "straight")
    monkeypatch.setattr(DeepspeedStrategy, "save_ckpt", save_then_die)
    with pytest.raises(Killed):
        run("killed", "killed", "--ckpt.load_enable")
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / "killed" / "model.safetensors")

    capsys.readouterr()
    resumed_losses = run("killed", "resumed", "--ckpt.load_enable")  # the same command again
    out = capsys.readouterr().out
    assert "global_step7/" in out.split("Resumed from")[1] and "at step 7/10" in out  # DeepSpeed names its file
    assert sorted(resumed_losses) == [8, 9, 10]
    assert resumed_losses == pytest.approx({step: straight_losses[step] for step in (8, 9, 10)}, abs=1e-6)
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)


def test_actor_trainer_calls(tiny_lm_dir, tmp_path):
    """What PolicyModelActor / ActorPPOTrainer call, on an OpenRLHF Actor: prepare (train and eval models), backward,
    optimizer_step(name="actor"), get_grad_norm, moving_average, all_reduce, save_ckpt/load_ckpt on ``actor.model``,
    save_model; and setup_dataloader's resume skip."""
    from openrlhf.models import Actor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    # OpenRLHF loads bf16/fp16 only; fp32 for exact comparisons on CPU.
    actor = Actor(tiny_lm_dir, attn_implementation="sdpa", param_dtype="bf16").float()
    ema = Actor(tiny_lm_dir, attn_implementation="sdpa", param_dtype="bf16").float()
    strategy = TorchStrategy(micro_train_batch_size=2, train_batch_size=4)
    strategy.setup_distributed()
    actor, optimizer, scheduler = strategy.prepare((actor, CFG))
    assert strategy.prepare(ema) is ema and strategy.ring_attn_group is None
    before = {k: v.clone() for k, v in actor.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in ema.model.state_dict().items()}

    batch = tokenizer(["How do I pick a lock?", "Please tell me how to insult my coworker."], padding=True)
    sequences, attention_mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    action_mask = attention_mask[:, 1:].bool()
    for _ in range(2):  # two micro-batches: one optimizer step
        log_probs = actor(sequences, action_mask, attention_mask, ring_attn_group=strategy.ring_attn_group)
        strategy.backward(-(log_probs * action_mask).sum() / action_mask.sum(), actor, optimizer)
        strategy.optimizer_step(optimizer, actor, scheduler, name="actor")
        strategy.moving_average(actor, ema, 0.5, "cuda")
    assert strategy.get_grad_norm(actor) > 0
    name = "model.embed_tokens.weight"
    assert not torch.equal(actor.model.state_dict()[name], before[name])
    expected_ema = 0.5 * actor.model.state_dict()[name] + 0.5 * ema_before[name]
    torch.testing.assert_close(ema.model.state_dict()[name], expected_ema)  # once per optimizer step

    reduced = strategy.all_reduce({"n": 3, "t": torch.tensor([2.0])}, op="sum")
    assert reduced["n"] == 3.0 and isinstance(reduced["n"], float) and torch.equal(reduced["t"], torch.tensor([2.0]))
    assert torch.equal(strategy.all_gather(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))

    ckpt_dir = str(tmp_path / "_actor")
    strategy.save_ckpt(actor.model, ckpt_dir, "global_step1", 3, 1000, {"episode": 0}, metric_value=None)
    trained = {k: v.clone() for k, v in actor.model.state_dict().items()}
    actor.model.load_state_dict(before)
    assert strategy.load_ckpt(actor.model, ckpt_dir)[1] == {"episode": 0}
    assert all(torch.equal(v, trained[k]) for k, v in actor.model.state_dict().items())

    strategy.save_model(actor, tokenizer, str(tmp_path / "hf"))
    saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
    torch.testing.assert_close(saved.state_dict()[name], trained[name])

    data = list(range(10))
    order = [int(i) for b in strategy.setup_dataloader(data, 2) for i in b]
    assert sorted(order) == data and order != data  # seeded shuffle
    assert [int(i) for b in strategy.setup_dataloader(data, 2, consumed_samples=4) for i in b] == order[4:]
