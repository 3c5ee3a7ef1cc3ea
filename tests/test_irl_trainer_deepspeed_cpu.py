"""The IRL reward trainer under OpenRLHF's own DeepspeedStrategy on 2 CPU ranks (gloo), ZeRO-2: the heads
are identical on both ranks after init, the losses equal those of one rank on the same global batches, a run resumed
from its step-1 checkpoint continues from step 1 and ends on the same model, and the exported model scores as the
trained layout did. ZeRO-3 on several CPU ranks is refused (it loads corrupted weights there, see
``get_training_strategy``).

This file is also the rank program: ``python this_file.py RUNS_JSON OUT_DIR`` runs ``irl_trainer.train`` for each run
in RUNS_JSON, in order, in one process (the ranks get RANK/WORLD_SIZE/MASTER_* from the test, as torchrun sets them).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("deepspeed")

STEPS = 2  # 21 training pairs, 14 per step (2 per category)
PROBE_SEED = 1234  # the token ids the trained and the exported model score


def _probe(vocab_size):
    generator = torch.Generator().manual_seed(PROBE_SEED)
    input_ids = torch.randint(3, vocab_size, (7, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:3, :4] = 0  # left padding, as the trainer's collate
    return input_ids, attention_mask, torch.arange(7)


def _worker(runs_path, out_dir):
    import deepspeed
    from openrlhf.utils.config import hierarchize

    import openrlhf_drirl.reward.irl_trainer as irl_trainer
    from openrlhf_drirl.cli.train_category_rm import build_parser

    get_training_strategy = irl_trainer.get_training_strategy
    with open(runs_path) as f:
        runs = json.load(f)
    for run in runs:
        record = {"losses": []}

        def instrumented(args):
            strategy = get_training_strategy(args)
            prepare, all_reduce = strategy.prepare, strategy.all_reduce

            def prepare_and_record(*models):
                engine, optimizer, scheduler = prepare(*models)
                weight = engine.module.score_heads.weight
                with deepspeed.zero.GatheredParameters([weight], enabled=hasattr(weight, "ds_id")):
                    record["heads"] = weight.detach().clone()
                record["engine"] = engine
                return engine, optimizer, scheduler

            def all_reduce_and_record(data, op="mean"):
                reduced = all_reduce(data, op)
                if isinstance(data, dict) and "loss" in data:  # the trainer's per-step logs
                    record["losses"].append(reduced["loss"])
                return reduced

            strategy.prepare, strategy.all_reduce = prepare_and_record, all_reduce_and_record
            return strategy

        irl_trainer.get_training_strategy = instrumented
        irl_trainer.train(hierarchize(build_parser().parse_args(run["argv"])))
        engine = record.pop("engine")
        engine.eval()
        with torch.no_grad():  # every rank runs the forward: ZeRO-3 gathers the weights collectively
            record["scores"] = engine(*_probe(engine.module.config.vocab_size)).float()
        record["world_size"] = torch.distributed.get_world_size()
        torch.save(record, os.path.join(out_dir, f"{run['name']}_rank{torch.distributed.get_rank()}.pt"))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(world_size, runs, tmp_path, name):
    """``world_size`` rank processes of this file running ``runs``; returns the Popen objects."""
    runs_path = tmp_path / f"{name}_runs.json"
    runs_path.write_text(json.dumps(runs))
    port = _free_port()
    processes = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        log = open(tmp_path / f"{name}_rank{rank}.log", "w")
        command = [sys.executable, __file__, str(runs_path), str(tmp_path)]
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return processes


def _wait(processes, tmp_path, name, timeout=600):
    for rank, (process, log) in enumerate(processes):
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other, _ in processes:
                other.kill()
            code = "timeout"
        log.close()
        if code != 0:
            tail = (tmp_path / f"{name}_rank{rank}.log").read_text()[-4000:]
            pytest.fail(f"{name} rank {rank} exited with {code}:\n{tail}")


@pytest.fixture(scope="module")
def runs(category_rm_lm_dir, tmp_path_factory):
    """ZeRO-2 on 2 ranks and on 1 rank (the reference), and the 2-rank run resumed from its step-1 checkpoint; all
    processes run at once."""
    from conftest import category_rm_train_argv, write_irl_pairs

    tmp_path = tmp_path_factory.mktemp("irl_ds_cpu")
    pairs = write_irl_pairs(tmp_path / "pairs.jsonl", per_category=4)  # 21 training pairs, 7 held out

    def argv(name, *extra):
        return category_rm_train_argv(
            category_rm_lm_dir,
            pairs,
            tmp_path / name,
            "--train.micro_batch_size", "7",  # 2 ranks: one micro-batch each; 1 rank: 2 accumulated
            "--train.max_epochs", "1",
            "--ds.zero_stage", "2",
            *extra,
        )  # fmt: skip

    resumed = argv("resumed", "--ckpt.load_enable")
    resumed[resumed.index("--ckpt.path") + 1] = str(tmp_path / "full") + "_ckpt"  # the full run's checkpoints
    two = [{"name": "full", "argv": argv("full", "--ckpt.save_steps", "1")}, {"name": "resumed", "argv": resumed}]
    launched = [("full", _launch(2, two, tmp_path, "full"))]
    launched.append(("one_rank", _launch(1, [{"name": "one_rank", "argv": argv("one_rank")}], tmp_path, "one_rank")))
    for name, processes in launched:
        _wait(processes, tmp_path, name)
    return tmp_path


def _record(tmp_path, name, rank=0):
    return torch.load(tmp_path / f"{name}_rank{rank}.pt", weights_only=False)


def test_two_cpu_ranks_match_one_rank(runs):
    ranks = [_record(runs, "full", rank) for rank in (0, 1)]
    one = _record(runs, "one_rank")
    assert ranks[0]["world_size"] == 2 and one["world_size"] == 1
    # Heads identical on both ranks after init (ZeRO-3: gathered from the partitions), and equal to one rank's.
    assert ranks[0]["heads"].abs().sum() > 0
    torch.testing.assert_close(ranks[1]["heads"], ranks[0]["heads"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["heads"], one["heads"], rtol=0, atol=0)
    # The same global batches: the all-reduced loss of 2 ranks (one micro-batch each) is the loss of one rank
    # accumulating both; step 2 also checks that the averaged gradient was the accumulated one.
    assert len(ranks[0]["losses"]) == len(one["losses"]) == STEPS
    assert ranks[0]["losses"][1] != ranks[0]["losses"][0]  # the first step changed the model
    assert ranks[0]["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    assert ranks[1]["losses"] == ranks[0]["losses"]
    torch.testing.assert_close(ranks[0]["scores"], one["scores"], rtol=1e-4, atol=1e-5)


def test_resume_continues_from_the_checkpoint(runs):
    full, resumed = _record(runs, "full"), _record(runs, "resumed")
    assert (runs / "full_ckpt" / "global_step1").is_dir()
    assert len(resumed["losses"]) == STEPS - 1  # started at step 1, not 0
    assert resumed["losses"] == pytest.approx(full["losses"][1:], rel=1e-6, abs=1e-7)
    torch.testing.assert_close(resumed["scores"], full["scores"], rtol=1e-5, atol=1e-6)
    assert "full_ckpt/global_step1" in (runs / "full_rank0.log").read_text().split("Resumed from")[1]


def test_exported_model_scores_as_the_trained_layout(runs):
    from openrlhf_drirl.reward.model import get_category_reward_model

    trained = _record(runs, "full")
    exported = get_category_reward_model(str(runs / "full"), param_dtype="fp32").eval()
    with torch.no_grad():
        scores = exported(*_probe(exported.config.vocab_size)).float()
    torch.testing.assert_close(scores, trained["scores"], rtol=1e-5, atol=1e-6)


def test_zero3_on_several_cpu_ranks_is_refused_with_the_fix(category_rm_lm_dir, tmp_path, monkeypatch):
    from conftest import category_rm_train_argv
    from openrlhf.utils.config import hierarchize

    from openrlhf_drirl.cli.train_category_rm import build_parser
    from openrlhf_drirl.training import get_training_strategy

    argv = category_rm_train_argv(
        category_rm_lm_dir, tmp_path / "pairs.jsonl", tmp_path / "out", "--ds.zero_stage", "3"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 sets it
    with pytest.raises(ValueError, match=r"--ds.zero_stage 3 on 2 CPU ranks .* use --ds.zero_stage 2"):
        get_training_strategy(hierarchize(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _worker(sys.argv[1], sys.argv[2])
