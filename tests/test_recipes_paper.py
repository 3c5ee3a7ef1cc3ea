"""The GPU recipes for the paper's experiments (recipes/paper/*.sh): each is run with python3, $PYTHON and $DEEPSPEED
replaced by a recorder of its command lines, and every command line is parsed by the real parser of its module
(OpenRLHF's train_ppo_ray parser and checks through openrlhf_checked_args, build_dataset, train_category_rm,
assemble_category_rms, serve_category_rm, evaluate, evaluation_report). Nothing runs on a GPU here."""

import glob
import importlib
import json
import os
import subprocess

import pytest
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.contract import DEFAULT_CATEGORIES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(REPO, "recipes", "paper")
RECORDER = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exit 0; fi   # inline helpers (the health check of external servers)
f="$ARGV_DIR/$(date +%s%N)-$$"
{ echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}"; printf "%s\\n" "$@"; } > "$f"
"""
# The flags that differ between ablation runs; everything else must be identical (same budget, same seed).
PER_RUN_FLAGS = {
    "--drirl.hardness_terms",
    "--reward.remote_url",
    "--ckpt.output_dir",
    "--ckpt.path",
    "--logger.tensorboard_dir",
    "--logger.wandb.run_name",
}


def run_recipe(tmp_path, recipe, **env):
    """Run a recipe with the recorder; returns [(cuda_visible_devices, argv)] in call order."""
    bin_dir, argv_dir = tmp_path / "bin", tmp_path / "argv"
    bin_dir.mkdir(exist_ok=True)
    argv_dir.mkdir(exist_ok=True)
    for name in ("python3", "deepspeed"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    full_env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        ARGV_DIR=str(argv_dir),
        PYTHON=str(bin_dir / "python3"),
        DEEPSPEED=str(bin_dir / "deepspeed"),
        OUT=str(tmp_path / "out"),
        **env,
    )
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    # What the earlier stages would have written (run_experiment.sh checks that they exist).
    out = tmp_path / "out"
    for folder in ("data", "category_rm/per_category", "category_rm/multi_head"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "data" / "prompts.train.jsonl").touch()
    (out / "category_rm" / "per_category" / "router.json").touch()
    result = subprocess.run(["bash", recipe], env=full_env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = []
    for path in sorted(argv_dir.iterdir(), key=lambda p: int(p.name.split("-")[0])):
        lines = path.read_text().splitlines()
        calls.append((lines[0].split("=", 1)[1], lines[1:]))
        path.unlink()
    return calls


def modules(calls):
    """[(module, args, cuda)] of python -m / deepspeed --module calls."""
    found = []
    for cuda, argv in calls:
        if argv[:1] in (["-m"], ["--module"]):
            found.append((argv[1], argv[2:], cuda))
    return found


def only(found, module):
    matches = [(args, cuda) for m, args, cuda in found if m == module]
    assert len(matches) == 1, [m for m, _, _ in found]
    return matches[0]


def checked_ppo_args(argv):
    from openrlhf_drirl.cli.train_ppo_ray import openrlhf_checked_args

    return openrlhf_checked_args(argv)


def parse_evaluate(argv):
    evaluate = importlib.import_module("openrlhf_drirl.cli.evaluate")
    args = hierarchize(evaluate.build_parser().parse_args(argv))
    # evaluate checks these names only when it runs: check them here against its tables.
    assert set(args.benchmarks.split(",")) <= set(evaluate.BENCHMARKS), args.benchmarks
    assert set(args.judge.split(",")) <= set(evaluate.JUDGES), args.judge
    return args


@pytest.mark.parametrize(
    "recipe",
    sorted(glob.glob(os.path.join(PAPER, "*.sh")))
    + [
        os.path.join(REPO, "recipes", name)
        for name in ("train_grpo_s.sh", "build_dataset.sh", "train_category_rm.sh", "serve_category_rm.sh")
    ],
)
def test_recipes_are_valid_bash_with_strict_mode_and_a_header(recipe):
    subprocess.run(["bash", "-n", recipe], check=True)
    with open(recipe) as f:
        text = f.read()
    assert text.startswith("#!/usr/bin/env bash\n# ") and "\nset -euo pipefail\n" in text


def test_paper_recipes_are_all_covered():
    assert sorted(os.listdir(PAPER)) == [
        "ablations.sh",
        "build_dataset.sh",
        "evaluate.sh",
        "run_experiment.sh",
        "train_category_rms.sh",
    ]


def test_build_dataset_reaches_paper_size_with_user_datasets(tmp_path):
    from data_tools.build_dataset import parse_args
    from data_tools.prompt_sources import load_source

    beavertails = tmp_path / "BeaverTails.jsonl"
    beavertails.write_text(json.dumps({"prompt": "Where does she live?", "category": {"privacy_violation": True}}))
    calls = run_recipe(
        tmp_path,
        os.path.join(PAPER, "build_dataset.sh"),
        BEAVERTAILS=str(beavertails),
        PKU_SAFERLHF="/data/pku/train.jsonl",
        EXTRA_SOURCES="/data/sp.jsonl:category=type,taxonomy=safety_prompts",
    )
    args = parse_args(only(modules(calls), "data_tools.build_dataset")[0])
    assert args.n_per_category == 1000 and args.paraphrase_fill and args.gen_backend == "vllm"
    assert args.sources == [
        "donotanswer",
        f"{beavertails}:preset=beavertails,split=330k_train",
        "/data/pku/train.jsonl:preset=pku_saferlhf,split=train",
        "/data/sp.jsonl:category=type,taxonomy=safety_prompts",
    ]
    assert load_source(args.sources[1])[0]["labels"] == ["privacy_violation"]  # the spec the recipe writes loads
    assert args.eval_sets == ["strongreject", "harmbench", "xstest"] and args.heldout_ratio == 0.1
    # Without user datasets: Do-Not-Answer alone; recipes/build_dataset.sh is this recipe writing to ./runs/data.
    calls = run_recipe(tmp_path, os.path.join(REPO, "recipes", "build_dataset.sh"), OUTPUT_DIR="")
    args = parse_args(only(modules(calls), "data_tools.build_dataset")[0])
    assert args.sources == ["donotanswer"] and args.output_dir == "./runs/data" and args.n_per_category == 1000


def test_train_category_rms_trains_both_layouts_with_the_same_per_category_budget(tmp_path):
    from openrlhf_drirl.cli import assemble_category_rms, train_category_rm

    rm_dir = tmp_path / "rm"
    found = modules(run_recipe(tmp_path, os.path.join(PAPER, "train_category_rms.sh"), RM_DIR=str(rm_dir)))
    trainings = [hierarchize(train_category_rm.build_parser().parse_args(a)) for m, a, _ in found if m.endswith("rm")]
    assert len(trainings) == 1 + 7
    multi, separate = trainings[0], trainings[1:]
    assert multi.irl.categories == ",".join(DEFAULT_CATEGORIES) and multi.train.batch_size == 7 * 16
    assert multi.ckpt.output_dir == str(rm_dir / "multi_head")
    assert [a.irl.categories for a in separate] == list(DEFAULT_CATEGORIES)
    for category, a in zip(DEFAULT_CATEGORIES, separate):
        assert a.train.batch_size == 16 and a.ckpt.output_dir == str(rm_dir / "models" / category)
        assert a.data.dataset == str(rm_dir / "pairs" / category / "irl_pairs.train.jsonl")
        assert a.eval.dataset == str(rm_dir / "pairs" / category / "irl_pairs.heldout.jsonl")
        for key in ("train.max_epochs", "adam.lr", "train.micro_batch_size", "train.seed", "data.max_len"):
            group, name = key.split(".")
            assert getattr(getattr(a, group), name) == getattr(getattr(multi, group), name), key
    assert all(a.ds.zero_stage == 3 and a.ckpt.load_enable for a in trainings)

    parser = assemble_category_rms.build_parser()
    split, assemble = [parser.parse_args(a) for m, a, _ in found if m.endswith("assemble_category_rms")]
    assert split.command == "split_pairs" and split.output_dir == str(rm_dir / "pairs")
    assert assemble.command == "assemble" and assemble.output_dir == str(rm_dir / "per_category")
    assert assemble.category == [f"{c}={rm_dir / 'models' / c}" for c in DEFAULT_CATEGORIES]
    assemble_category_rms.parse_category_sources(assemble.category, DEFAULT_CATEGORIES)  # all seven, once each

    only_one = modules(run_recipe(tmp_path, os.path.join(PAPER, "train_category_rms.sh"), LAYOUT="multi_head"))
    assert [m for m, _, _ in only_one] == ["openrlhf_drirl.cli.train_category_rm"]


@pytest.mark.parametrize("layout", ["per_category", "multi_head"])
def test_run_experiment_starts_servers_trains_evaluates(tmp_path, layout):
    from openrlhf_drirl.cli import serve_category_rm

    rm_path = tmp_path / layout
    rm_path.mkdir()
    if layout == "per_category":
        (rm_path / "router.json").write_text("{}")
    calls = run_recipe(
        tmp_path, os.path.join(PAPER, "run_experiment.sh"), RM_PATH=str(rm_path), RUN_NAME="exp", HARDNESS_TERMS="data"
    )
    found = modules(calls)
    servers = [(serve_category_rm.build_parser().parse_args(a), cuda) for m, a, cuda in found if m.endswith("rm")]
    servers.sort(key=lambda server: server[0].port)  # started in the background: recorded in any order
    expected_gpus = ["4,5", "6,7"] if layout == "per_category" else ["4", "5", "6", "7"]
    assert [cuda for _, cuda in servers] == expected_gpus  # one server per GPU group, each on its own GPUs
    ports = [s.port for s, _ in servers]
    assert ports == list(range(5000, 5000 + len(expected_gpus)))
    assert all(getattr(s, "reward.model_name_or_path") == str(rm_path) for s, _ in servers)
    waits = [argv for _, argv in calls if argv[0] == os.path.join(REPO, "tools", "wait_for_server.py")]
    assert sorted(int(w[1]) for w in waits) == ports  # /health of every server is awaited before training

    (train, train_cuda), (evaluate, eval_cuda) = (
        only(found, "openrlhf_drirl.cli.train_ppo_ray"),
        only(found, "openrlhf_drirl.cli.evaluate"),
    )
    order = [m for m, _, _ in found]
    assert order.index("openrlhf_drirl.cli.train_ppo_ray") < order.index("openrlhf_drirl.cli.evaluate")
    args = checked_ppo_args(train)
    assert args.reward.remote_url == [f"http://127.0.0.1:{p}/get_reward" for p in ports]  # OpenRLHF spreads over them
    assert args.drirl.hardness_terms == "data" and args.algo.advantage.estimator == "grpo_s"
    run_dir = tmp_path / "out" / "runs" / "exp"
    assert args.ckpt.output_dir == str(run_dir / "model") and args.ckpt.path == str(run_dir / "ckpt")
    assert train_cuda == "0,1,2,3" and args.actor.num_gpus_per_node == 4 and args.vllm.num_engines == 4
    assert args.eval.dataset.endswith("data/prompts.heldout.jsonl") and args.train.seed == 42

    eval_args = parse_evaluate(evaluate)
    assert eval_args.policy == ["base=meta-llama/Llama-3.1-8B-Instruct", f"exp={run_dir / 'model'}"]
    assert eval_args.reward_model.url == "http://127.0.0.1:5000/get_reward" and eval_args.backend == "vllm"
    assert eval_args.output_dir == str(run_dir / "eval") and eval_cuda == "0"
    assert eval_args.heldout.endswith("data/prompts.heldout.jsonl")


def test_run_experiment_with_servers_started_elsewhere(tmp_path):
    urls = "http://10.0.0.5:5000/get_reward,http://10.0.0.6:5000/get_reward"
    found = modules(
        run_recipe(tmp_path, os.path.join(PAPER, "run_experiment.sh"), REWARD_URLS=urls, NUM_NODES="2", EVALUATE="0")
    )
    assert [m for m, _, _ in found] == ["openrlhf_drirl.cli.train_ppo_ray"]  # no server started here, no evaluation
    args = checked_ppo_args(found[0][1])
    assert args.reward.remote_url == urls.split(",") and args.actor.num_nodes == 2 and args.vllm.num_engines == 8


def test_ablations_change_only_the_named_setting(tmp_path):
    calls = run_recipe(tmp_path, os.path.join(PAPER, "ablations.sh"))
    found = modules(calls)
    trainings = [a for m, a, _ in found if m == "openrlhf_drirl.cli.train_ppo_ray"]
    parsed = [checked_ppo_args(a) for a in trainings]
    assert [a.logger.wandb.run_name for a in parsed] == ["grpo_s", "grpo", "alpha_d", "alpha_m", "grpo_s_rm1"]
    assert [a.drirl.hardness_terms for a in parsed] == ["both", "none", "data", "model", "both"]

    def budget(argv):  # the command line without the per-run flags and their values
        kept, skip = [], False
        for token in argv:
            if skip:
                skip = False
            elif token in PER_RUN_FLAGS:
                skip = True
            else:
                kept.append(token)
        return kept

    assert all(budget(a) == budget(trainings[0]) for a in trainings[1:])
    assert len({a.train.seed for a in parsed}) == 1

    from openrlhf_drirl.cli import serve_category_rm

    parser = serve_category_rm.build_parser()
    served = [getattr(parser.parse_args(a), "reward.model_name_or_path") for m, a, _ in found if m.endswith("rm")]
    rm7, rm1 = (str(tmp_path / "out" / "category_rm" / d) for d in ("per_category", "multi_head"))
    assert sorted(set(served)) == sorted({rm7, rm1}) and served[-1] == rm1  # grpo_s_rm1 (last) uses the one model
    evaluations = [parse_evaluate(a) for m, a, _ in found if m == "openrlhf_drirl.cli.evaluate"]
    assert len(evaluations) == 5 and len({tuple(e.policy[:1]) for e in evaluations}) == 1  # the same base

    report = only(found, "openrlhf_drirl.cli.evaluation_report")[0]
    runs = [report[i + 1] for i, token in enumerate(report) if token == "--run"]
    names = ("grpo_s", "grpo", "alpha_d", "alpha_m", "grpo_s_rm1")
    assert runs == [f"{n}={tmp_path / 'out' / 'runs' / n / 'eval'}" for n in names]
    try:
        evaluation_report = importlib.import_module("openrlhf_drirl.cli.evaluation_report")
    except ImportError as e:
        pytest.skip(f"openrlhf_drirl.cli.evaluation_report is not importable yet ({e}): its command is not parsed")
    evaluation_report.build_parser().parse_args(report)


def test_ablations_with_several_seeds_and_a_bad_run_name(tmp_path):
    found = modules(run_recipe(tmp_path, os.path.join(PAPER, "ablations.sh"), RUNS="grpo grpo_s", SEEDS="1 2"))
    parsed = [checked_ppo_args(a) for m, a, _ in found if m == "openrlhf_drirl.cli.train_ppo_ray"]
    assert [(a.logger.wandb.run_name, a.train.seed) for a in parsed] == [
        ("grpo_seed1", 1),
        ("grpo_s_seed1", 1),
        ("grpo_seed2", 2),
        ("grpo_s_seed2", 2),
    ]
    result = subprocess.run(
        ["bash", os.path.join(PAPER, "ablations.sh")],
        env=dict(os.environ, RUNS="grpo_x"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "unknown run 'grpo_x' in RUNS" in result.stderr


def test_evaluate_recipe_adds_the_strongreject_judge_when_configured(tmp_path):
    found = modules(
        run_recipe(
            tmp_path,
            os.path.join(PAPER, "evaluate.sh"),
            POLICIES="base=/m/base trained=/m/trained",
            STRONGREJECT_URL="http://judge:8000/v1",
            STRONGREJECT_MODEL="gpt-4o-mini",
        )
    )
    args = parse_evaluate(only(found, "openrlhf_drirl.cli.evaluate")[0])
    assert args.policy == ["base=/m/base", "trained=/m/trained"]
    assert args.judge == "refusal,reward_model,strongreject" and args.strongreject.url == "http://judge:8000/v1"
    assert args.benchmarks == "heldout,strongreject,harmbench,xstest" and args.temperature == 0


@pytest.mark.parametrize(
    "env, message",
    [
        ({"POLICY_GPUS": "0,1,2"}, "POLICY_GPUS=0,1,2, NUM_NODES=1: 4 x nodes x GPUs per node must divide"),
        ({"DATA_DIR": "/nonexistent/data"}, "DATA_DIR=/nonexistent/data has no prompts.train.jsonl"),
        ({"RM_PATH": "/nonexistent/rm"}, "RM_PATH=/nonexistent/rm does not exist"),
    ],
)
def test_run_experiment_refuses_a_bad_setup_before_starting_anything(tmp_path, env, message):
    with pytest.raises(AssertionError) as failed:
        run_recipe(tmp_path, os.path.join(PAPER, "run_experiment.sh"), **env)
    assert "run_experiment.sh: error: " + message in str(failed.value)
    assert not list((tmp_path / "argv").iterdir())  # no server, no training


def test_one_model_recipes_parse(tmp_path):
    """recipes/train_category_rm.sh (layout (a) on one node) and recipes/serve_category_rm.sh (one server)."""
    from openrlhf_drirl.cli import serve_category_rm, train_category_rm

    train = only(
        modules(run_recipe(tmp_path, os.path.join(REPO, "recipes", "train_category_rm.sh"))),
        "openrlhf_drirl.cli.train_category_rm",
    )
    assert hierarchize(train_category_rm.build_parser().parse_args(train[0])).ds.zero_stage == 3
    serve = only(
        modules(run_recipe(tmp_path, os.path.join(REPO, "recipes", "serve_category_rm.sh"))),
        "openrlhf_drirl.cli.serve_category_rm",
    )
    assert serve_category_rm.build_parser().parse_args(serve[0]).port == 5000 and serve[1] == "4,5,6,7"
