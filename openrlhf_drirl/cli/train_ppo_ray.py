"""``python -m openrlhf_drirl.cli.train_ppo_ray``: OpenRLHF's ``train_ppo_ray`` with openrlhf_drirl installed.

Takes every flag of ``python -m openrlhf.cli.train_ppo_ray``, plus the registered estimators as values of
``--algo.advantage.estimator`` and their own flags (``--drirl.*`` for GRPO-S), then runs OpenRLHF's own ``__main__``:
its argument checks and ``train()``. Around it:
- ``--drirl.estimator_modules MOD[,MOD...]`` and the entry-point group ``openrlhf_drirl.advantage_estimators`` are
  imported before OpenRLHF's parser is built, so the estimators they register are valid choices with their flags;
- the plugin is registered in this process, and in every Ray worker through Ray's ``worker_process_setup_hook``
  (patching only the driver does nothing: the experience maker runs inside the PPO trainer's Ray actor); the workers
  import the same estimator modules, and a setup hook of the user's own (in ``ray.init``'s runtime_env or the Ray
  job's) is chained after ours, not replaced;
- a registered group estimator is checked as OpenRLHF checks group_norm (n_samples_per_prompt > 1); OpenRLHF already
  drops the critic for every estimator but gae. A registered name that OpenRLHF already offers is refused.
``--help`` and argument errors work without vLLM (on a CPU machine set up by tools/setup_cpu_env.sh); training says
clearly that it needs vLLM, except with ``--drirl.cpu``: a Ray cluster without GPUs (a laptop, CI), where OpenRLHF's
model groups run under DeepSpeed on CPU ranks (gloo) and vLLM's engine is replaced by the HF rollout engine behind
the engine's interface (``openrlhf_drirl.local.hf_rollout_engine``); the weight sync is OpenRLHF's gloo branch
(``--vllm.sync_backend gloo --vllm.sync_with_ray``, the defaults there). When ``train()`` starts Ray itself, the local
cluster gets one logical GPU per model rank and engine (Ray only counts them: OpenRLHF's placement groups ask for
GPUs).
"""

import argparse
import contextlib
import json
import os
import runpy
import sys
from typing import Callable, Dict, List, Optional, Sequence

import ray

from openrlhf_drirl.advantage import ADVANTAGE_ESTIMATORS, import_estimator_modules
from openrlhf_drirl.plugin import (
    CHAINED_SETUP_HOOK_ENV,
    CPU_WORKER_ENV,
    ESTIMATOR_MODULES_ENV,
    openrlhf_estimator_registry,
    register,
    setup_ray_worker,
)

OPENRLHF_MODULE = "openrlhf.cli.train_ppo_ray"
ESTIMATOR_FLAG = "--algo.advantage.estimator"
MODULES_FLAG = "--drirl.estimator_modules"
CPU_FLAG = "--drirl.cpu"
RAY_WORKER_SETUP_HOOK = "openrlhf_drirl.plugin.setup_ray_worker"
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # Ray's: the runtime_env of a `ray job submit` job


def parse_estimator_modules(argv: Sequence[str]) -> List[str]:
    """The ``--drirl.estimator_modules`` value, read before OpenRLHF's parser exists."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(MODULES_FLAG, dest="modules", default="")
    return [m.strip() for m in parser.parse_known_args(argv)[0].modules.split(",") if m.strip()]


def parse_cpu(argv: Sequence[str]) -> bool:
    """Whether ``--drirl.cpu`` is given, read before OpenRLHF's parser exists (it changes that parser's defaults)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(CPU_FLAG, dest="cpu", action="store_true")
    return parser.parse_known_args(argv)[0].cpu


def _model_ranks(flat_args: argparse.Namespace) -> int:
    """The GPUs ``train()`` asks for: the model groups it creates and the engines (colocation only needs fewer)."""

    def ranks(group):
        return getattr(flat_args, f"{group}.num_nodes") * getattr(flat_args, f"{group}.num_gpus_per_node")

    total = ranks("actor") + (getattr(flat_args, "vllm.num_engines") or 0) * getattr(
        flat_args, "vllm.tensor_parallel_size"
    )
    if getattr(flat_args, "algo.kl.init_coef") > 0:
        total += ranks("ref")
    if getattr(flat_args, "algo.advantage.estimator") == "gae":
        total += ranks("critic")
    if not getattr(flat_args, "reward.remote_url"):
        total += ranks("reward")
    return total


def add_fp32_param_dtype(parser: argparse.ArgumentParser) -> argparse.Action:
    """Add "fp32" to ``--ds.param_dtype``'s choices (OpenRLHF offers bf16/fp16; a CPU trains in fp32); returns the
    flag's action, for a default to be set on it."""
    dtype = parser._option_string_actions["--ds.param_dtype"]
    dtype.choices = list(dtype.choices) + ["fp32"]
    return dtype


def configure_cpu_parser(parser: argparse.ArgumentParser, cpu: bool) -> None:
    """Add ``--drirl.cpu``; with it, the defaults of a cluster without GPUs: fp32 (a CPU has no bf16 speed-up; an
    added choice, which ``use_cpu_for_deepspeed`` makes OpenRLHF load), sdpa attention (no flash-attn), one HF
    rollout engine, the gloo weight sync over Ray collective."""
    parser.add_argument(
        CPU_FLAG,
        action="store_true",
        default=False,
        help="run on a Ray cluster without GPUs: DeepSpeed on CPU ranks (gloo), the HF rollout engine in place of "
        "vLLM's; defaults --ds.param_dtype fp32 --ds.attn_implementation sdpa --vllm.num_engines 1 "
        "--vllm.sync_backend gloo --vllm.sync_with_ray",
    )
    if not cpu:
        return
    add_fp32_param_dtype(parser)
    parser.set_defaults(
        **{
            "ds.param_dtype": "fp32",
            "ds.attn_implementation": "sdpa",
            "vllm.num_engines": 1,
            "vllm.sync_backend": "gloo",
            "vllm.sync_with_ray": True,
        }
    )


def check_cpu_args(parser: argparse.ArgumentParser, flat_args: argparse.Namespace) -> None:
    """``--drirl.cpu``: refuse what cannot run on CPU ranks, naming the flag to change."""

    def arg(name):
        return getattr(flat_args, name)

    if arg("vllm.sync_backend") != "gloo" or not arg("vllm.sync_with_ray"):
        parser.error(
            f"{CPU_FLAG}: the weight sync to the HF rollout engine runs over gloo through Ray collective: drop "
            f"--vllm.sync_backend {arg('vllm.sync_backend')} (its default there is gloo with --vllm.sync_with_ray)"
        )
    if not arg("vllm.num_engines"):
        parser.error(f"{CPU_FLAG} generates with the HF rollout engine: set --vllm.num_engines 1 or more")
    if arg("vllm.tensor_parallel_size") != 1:
        parser.error(f"{CPU_FLAG}: the HF rollout engine is one process: set --vllm.tensor_parallel_size 1")
    if arg("ds.packing_samples") or arg("train.dynamic_batch_enable") or arg("ds.ring_attn_size") > 1:
        parser.error(
            f"{CPU_FLAG}: --ds.packing_samples, --train.dynamic_batch_enable and --ds.ring_attn_size > 1 need "
            "flash-attention (a GPU): drop them"
        )
    if arg("ds.zero_stage") == 3:
        for group in ("actor", "ref"):
            ranks = arg(f"{group}.num_nodes") * arg(f"{group}.num_gpus_per_node")
            if ranks > 1:
                from openrlhf_drirl.training.strategy import zero3_on_cpu_ranks_error  # transformers: not at start-up

                parser.error(f"{CPU_FLAG} {zero3_on_cpu_ranks_error(ranks)} (--{group}.num_gpus_per_node)")


def exit_with_error(message: str) -> None:
    print(f"train_ppo_ray: error: {message}", file=sys.stderr)
    sys.exit(2)


def _extend_parser(parser: argparse.ArgumentParser) -> Dict[str, List[str]]:
    """Add the registered estimators and their flags; returns, per added flag, the estimators that own it."""
    # With OpenRLHF's own registry, register() put the estimators there: its parser lists them and adds their flags.
    in_openrlhf = openrlhf_estimator_registry() is not None
    estimator_action = parser._option_string_actions[ESTIMATOR_FLAG]
    clashes = sorted(set(ADVANTAGE_ESTIMATORS) & set(estimator_action.choices))
    if clashes and not in_openrlhf:
        modules = [ADVANTAGE_ESTIMATORS[name].fn.__module__ for name in clashes]
        parser.error(f"estimators {clashes} (registered by {modules}) are OpenRLHF's own: register under other names")
    if not in_openrlhf:
        estimator_action.choices = list(estimator_action.choices) + sorted(ADVANTAGE_ESTIMATORS)
        estimator_action.help += f"; openrlhf_drirl adds: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}"
    parser.add_argument(
        MODULES_FLAG,
        type=str,
        default="",
        help="comma-separated modules that register advantage estimators (imported here and in every Ray worker; "
        "installed packages can use the entry-point group openrlhf_drirl.advantage_estimators instead)",
    )
    flags_of, owners = {}, {}
    for estimator in ADVANTAGE_ESTIMATORS.values():
        if estimator.add_arguments is None:
            continue
        if estimator.add_arguments not in flags_of:
            probe = argparse.ArgumentParser(add_help=False)
            estimator.add_arguments(probe)
            flags_of[estimator.add_arguments] = set(probe._option_string_actions)
            if not in_openrlhf:
                estimator.add_arguments(parser)
        for flag in flags_of[estimator.add_arguments]:
            owners.setdefault(flag, []).append(estimator.name)
    return owners


def _check_estimator_args(
    parser: argparse.ArgumentParser, flat_args: argparse.Namespace, owners: Dict[str, List[str]], argv: List[str]
) -> None:
    from openrlhf.utils.config import hierarchize

    name = getattr(flat_args, "algo.advantage.estimator")
    # A flag of an estimator that is not selected would be ignored without a word: a typo'd experiment.
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in owners and name not in owners[flag]:
            parser.error(
                f"{flag} is a flag of --algo.advantage.estimator {' / '.join(owners[flag])}, but the estimator is "
                f"{name}: drop the flag or select that estimator"
            )
    estimator = ADVANTAGE_ESTIMATORS.get(name)
    if estimator is None:
        return
    n = getattr(flat_args, "rollout.n_samples_per_prompt")
    if estimator.needs_group and n <= 1:
        parser.error(
            f"{ESTIMATOR_FLAG} {estimator.name} normalises rewards within each prompt's group: set "
            f"--rollout.n_samples_per_prompt > 1 (got {n}; 8 is usual)"
        )
    if estimator.check_args is not None:
        try:
            estimator.check_args(hierarchize(argparse.Namespace(**vars(flat_args))))
        except ValueError as e:
            parser.error(str(e))


def require_vllm() -> None:
    """Training starts vLLM engines: say so plainly where only the CPU stand-in (tools/_cpu_shims.py) is present."""
    import vllm

    if getattr(vllm, "__drirl_stub__", False):
        exit_with_error(
            "training needs vLLM and GPUs, and this environment has only the CPU stand-in that lets --help and "
            "argument checks run: install openrlhf-drirl[vllm] on a GPU machine"
        )


def _job_setup_hook():
    """The setup hook of the Ray job this driver runs in (``ray job submit --runtime-env-json``), taken out of the
    job's runtime_env so that Ray does not refuse ours as a conflict: ours runs it."""
    if RAY_JOB_CONFIG_ENV not in os.environ:
        return None
    job_config = json.loads(os.environ[RAY_JOB_CONFIG_ENV])
    hook = (job_config.get("runtime_env") or {}).pop("worker_process_setup_hook", None)
    os.environ[RAY_JOB_CONFIG_ENV] = json.dumps(job_config)
    return hook


def _python_path_of(modules: Sequence[str]) -> List[str]:
    """Folders outside site-packages that the modules were imported from (a user's module beside the command), which
    Ray workers started by this driver lack on their sys.path."""
    folders = []
    for name in modules:
        file = getattr(sys.modules.get(name.split(".")[0]), "__file__", None)
        if file is None or "-packages" in file:
            continue
        depth = 2 if os.path.basename(file) == "__init__.py" else 1
        folder = os.path.abspath(file)
        for _ in range(depth):
            folder = os.path.dirname(folder)
        folders.append(folder)
    return list(dict.fromkeys(folders))


@contextlib.contextmanager
def openrlhf_with_plugin(
    estimator_modules: Sequence[str] = (),
    configure_parser: Optional[Callable] = None,
    check_args: Optional[Callable] = None,
    cpu: bool = False,
):
    """Within: OpenRLHF's train_ppo_ray parser knows the registered estimators (and is adjusted by
    ``configure_parser(parser)`` and checked by ``check_args(parser, flat_args)``, if given), and ``ray.init``
    installs the plugin in every worker process (merged into the runtime_env OpenRLHF passes, so its env vars are
    kept). ``cpu``: the workers set up CPU ranks, and a local cluster started here gets logical GPUs."""
    original_parse_args = argparse.ArgumentParser.parse_args
    original_ray_init = ray.init
    parsed = {}

    def parse_args(parser, args=None, namespace=None):
        if ESTIMATOR_FLAG not in parser._option_string_actions:
            return original_parse_args(parser, args, namespace)
        owners = _extend_parser(parser)
        if configure_parser is not None:
            configure_parser(parser)
        flat_args = original_parse_args(parser, args, namespace)
        _check_estimator_args(parser, flat_args, owners, list(sys.argv[1:] if args is None else args))
        if check_args is not None:
            check_args(parser, flat_args)
        parsed["args"] = flat_args
        return flat_args

    def ray_init(*args, runtime_env=None, **kwargs):
        runtime_env = dict(runtime_env or {})
        env_vars = dict(runtime_env.get("env_vars") or {})
        if cpu:
            env_vars.update({CPU_WORKER_ENV: "1", "DS_ACCELERATOR": "cpu"})
            if "args" in parsed and not (args or kwargs.get("address") or os.environ.get("RAY_ADDRESS")):
                # A local cluster: Ray detects no GPU, and OpenRLHF's placement groups would wait for them forever.
                ranks = _model_ranks(parsed["args"])
                kwargs.setdefault("num_gpus", ranks)
                kwargs.setdefault("num_cpus", max(os.cpu_count() or 1, ranks + 1))  # + the PPO trainer's actor
        else:
            require_vllm()
        user_hook = runtime_env.pop("worker_process_setup_hook", None) or _job_setup_hook()
        if callable(user_hook):
            # A named function, not functools.partial: Ray exports a callable hook under its __name__.
            def setup_ray_worker_then_user_hook():
                setup_ray_worker(user_hook)

            runtime_env["worker_process_setup_hook"] = setup_ray_worker_then_user_hook
        else:
            runtime_env["worker_process_setup_hook"] = RAY_WORKER_SETUP_HOOK
            if user_hook and user_hook != RAY_WORKER_SETUP_HOOK:
                env_vars[CHAINED_SETUP_HOOK_ENV] = user_hook
        if estimator_modules:
            env_vars[ESTIMATOR_MODULES_ENV] = ",".join(estimator_modules)
            # Ray's env_vars replace a worker's variable; ${PYTHONPATH} (expanded by Ray in the worker) keeps the
            # worker's own PYTHONPATH after ours, unless the runtime_env set one.
            folders = _python_path_of(estimator_modules)
            if folders:
                env_vars["PYTHONPATH"] = os.pathsep.join(folders + [env_vars.get("PYTHONPATH") or "${PYTHONPATH}"])
        runtime_env["env_vars"] = env_vars
        return original_ray_init(*args, runtime_env=runtime_env, **kwargs)

    argparse.ArgumentParser.parse_args = parse_args
    ray.init = ray_init
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original_parse_args
        ray.init = original_ray_init


class _ParserCaptured(Exception):
    def __init__(self, parser):
        self.parser = parser


def openrlhf_parser() -> argparse.ArgumentParser:
    """OpenRLHF's own train_ppo_ray parser as its ``__main__`` builds it (captured at ``parse_args``; nothing runs)."""
    original_parse_args = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        if ESTIMATOR_FLAG in parser._option_string_actions:
            raise _ParserCaptured(parser)
        return original_parse_args(parser, args, namespace)

    argparse.ArgumentParser.parse_args = capture
    try:
        runpy.run_module(OPENRLHF_MODULE, run_name="__main__")
    except _ParserCaptured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original_parse_args
    raise RuntimeError(f"{OPENRLHF_MODULE} did not build a parser with {ESTIMATOR_FLAG}")


class _ArgsChecked(Exception):
    def __init__(self, args):
        self.checked = args


def openrlhf_checked_args(argv: Sequence[str], estimator_modules: Sequence[str] = (), configure_parser=None):
    """The hierarchized args as OpenRLHF's own train_ppo_ray ``__main__`` parses and checks them (plus the plugin's
    checks), stopped where its ``train()`` would start Ray: for launchers that run the training themselves.
    OpenRLHF's checks are assertions: an ``AssertionError`` carries their message."""
    import openrlhf.utils

    def stop(args):
        raise _ArgsChecked(args)

    original = sys.argv, openrlhf.utils.get_strategy, ray.is_initialized
    sys.argv = [OPENRLHF_MODULE] + list(argv)
    openrlhf.utils.get_strategy, ray.is_initialized = stop, lambda: True  # train(): no ray.init, then get_strategy
    try:
        with openrlhf_with_plugin(estimator_modules, configure_parser):
            runpy.run_module(OPENRLHF_MODULE, run_name="__main__", alter_sys=True)
    except _ArgsChecked as stopped:
        return stopped.checked
    finally:
        sys.argv, openrlhf.utils.get_strategy, ray.is_initialized = original
    raise RuntimeError(f"{OPENRLHF_MODULE} did not reach train()")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        modules = import_estimator_modules(parse_estimator_modules(argv))
    except ImportError as e:
        exit_with_error(str(e))
    register()
    cpu = parse_cpu(argv)
    if cpu:
        from openrlhf_drirl.local.hf_rollout_engine import use_hf_rollout_engine

        use_hf_rollout_engine()  # in this process: OpenRLHF's train() creates the engines from the driver
    sys.argv = [sys.argv[0]] + argv

    def configure_parser(parser):
        configure_cpu_parser(parser, cpu)

    with openrlhf_with_plugin(modules, configure_parser, check_cpu_args if cpu else None, cpu):
        try:
            runpy.run_module(OPENRLHF_MODULE, run_name="__main__", alter_sys=True)
        except ModuleNotFoundError as e:
            if e.name != "vllm":
                raise
            exit_with_error(
                f"OpenRLHF's Ray launcher imports vLLM ({e}): install openrlhf-drirl[vllm] on a GPU machine; on a "
                "machine without a GPU, tools/setup_cpu_env.sh installs the stand-in that lets --help and argument "
                "checks run"
            )


if __name__ == "__main__":
    main()
