"""HTTP category reward server for OpenRLHF's ``--reward.remote_url http://HOST:PORT/get_reward``.

Request (OpenRLHF's remote reward format): POST ``{"query": [...], "prompts": [...], "labels": [...]}``.
Response: ``{"rewards": [...], "scores": [...],
"extra_logs": {"drirl_reward_gap": [...], "drirl_similarity": [...]}}``, strict JSON (never NaN/Infinity).

Served with aiohttp (an OpenRLHF dependency). OpenRLHF sends one sample per request from many rollout workers at
once, so requests are micro-batched: their samples wait in line, and every ``--max_wait_ms`` one scoring call (in
layout (a), one forward pass for a mixed-category batch) runs in the scoring thread on up to ``--max_batch_size``
samples and ``--max_batch_tokens`` tokens. The batch is taken round-robin, what fits of each waiting request in turn,
so a large request cannot hold back the small ones behind it: they wait for about one batch, not for the request.
A request not answered within ``--request_timeout_s`` gets HTTP 503, and what is left of a request whose client
timed out or disconnected is not scored. Bad requests get a 4xx JSON error ``{"error": ..., "field": ...}`` naming
the field and the fix.
"""

import argparse
import asyncio
import json
import logging
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, List

from aiohttp import web
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.config_flags import add_config_arguments, config_from_args
from openrlhf_drirl.contract import LabelError
from openrlhf_drirl.hardness import add_hardness_arguments
from openrlhf_drirl.reward.scorer import RewardRequestError, ScoringConfig

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One request's prepared samples; ``taken`` of them have gone to the model so far, in order."""

    samples: list
    future: asyncio.Future
    connected: Callable[[], bool]
    taken: int = 0
    result: dict = field(default_factory=lambda: {"rewards": [], "scores": [], "extra_logs": {}})


class MicroBatcher:
    """Scores the samples of concurrent requests together, one batch at a time in its own thread (so requests being
    tokenized in the default executor never hold scoring up)."""

    def __init__(self, scorer, max_batch_size: int, max_wait_ms: float, max_batch_tokens: int):
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.jobs: "deque[Job]" = deque()
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drirl-scoring")
        self.batches_scored = 0
        self.largest_batch = 0
        self.samples_scored = 0
        self.requests_dropped = 0  # clients gone or timed out before all their samples were scored

    async def score(self, samples, connected: Callable[[], bool] = lambda: True) -> dict:
        job = Job(samples, asyncio.get_running_loop().create_future(), connected)
        self.jobs.append(job)
        self.arrived.set()
        try:
            return await job.future
        finally:
            job.future.cancel()  # timed out or cancelled: the batcher skips what is left of it

    def pending(self) -> int:
        return sum(len(job.samples) - job.taken for job in self.jobs)

    def next_batch(self) -> list:
        """Up to ``max_batch_size`` samples and ``max_batch_tokens`` tokens as (job, chunk) parts, round-robin: each
        waiting request in turn gives what fits, then goes to the back of the line if it has more."""
        parts, size, tokens = [], 0, 0
        for _ in range(len(self.jobs)):
            job = self.jobs.popleft()
            if job.future.done():  # timed out, cancelled, or failed
                self.requests_dropped += job.future.cancelled()
                continue
            if not job.connected():
                self.requests_dropped += 1
                unscored = len(job.samples) - job.taken
                job.future.set_exception(
                    ConnectionResetError(f"dropped its request with {unscored} of {len(job.samples)} samples unscored")
                )
                continue
            start = job.taken
            while job.taken < len(job.samples) and size < self.max_batch_size:
                sample = job.samples[job.taken]
                # The rows this sample may add to the forward: its text, and its demonstration unless given.
                cost = len(sample.input_ids) + (
                    len(sample.demonstration_ids) if sample.demonstration_reward is None else 0
                )
                if size and tokens + cost > self.max_batch_tokens:
                    break
                job.taken, size, tokens = job.taken + 1, size + 1, tokens + cost
            if job.taken == start:  # the batch is full: this request goes first next time
                self.jobs.appendleft(job)
                break
            parts.append((job, job.samples[start : job.taken]))
            if job.taken < len(job.samples):
                self.jobs.append(job)
        return parts

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self.jobs:
                self.arrived.clear()
                await self.arrived.wait()
            # A batch that is not full waits up to max_wait_ms for concurrent requests.
            deadline = loop.time() + self.max_wait_s
            while self.pending() < self.max_batch_size and loop.time() < deadline:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            parts = self.next_batch()
            if parts:
                await self.score_parts(parts)

    async def score_parts(self, parts):
        samples = [s for _, chunk in parts for s in chunk]
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.scorer.score_samples, samples
            )
        except Exception as e:
            # One bad sample (e.g. a demonstration the similarity cannot split) must not fail its batch neighbours:
            # score the parts one by one so only the offending request gets the error.
            if len(parts) > 1:
                for part in parts:
                    await self.score_parts([part])
                return
            if not parts[0][0].future.done():
                parts[0][0].future.set_exception(e)
            return
        self.batches_scored += 1
        self.largest_batch = max(self.largest_batch, len(samples))
        self.samples_scored += len(samples)
        start = 0
        for job, chunk in parts:
            end = start + len(chunk)
            job.result["rewards"] += result["rewards"][start:end].tolist()
            job.result["scores"] += result["scores"][start:end].tolist()
            for key, values in result["extra_logs"].items():
                job.result["extra_logs"].setdefault(key, []).extend(values[start:end].tolist())
            if len(job.result["rewards"]) == len(job.samples) and not job.future.done():
                job.future.set_result(job.result)
            start = end


BATCHER = web.AppKey("batcher", MicroBatcher)


@dataclass(frozen=True)
class ServerConfig:
    """The server's batching and request limits: the single source of their flags and defaults."""

    max_batch_size: int = field(default=64, metadata={"help": "samples collected into one scoring call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "how long to collect concurrent requests"})
    max_batch_tokens: int = field(
        default=16384,
        metadata={
            "help": "tokens (responses + demonstrations to score) in one scoring call: it bounds how long a small "
            "request waits behind the batch in progress"
        },
    )
    max_request_bytes: int = field(default=4 << 20, metadata={"help": "larger request bodies get HTTP 413"})
    max_samples_per_request: int = field(default=256, metadata={"help": "more queries in one request get HTTP 413"})
    request_timeout_s: float = field(
        default=120.0,
        metadata={
            "help": "a request not answered within this time (queue + scoring) gets HTTP 503 and is dropped; keep it "
            "below OpenRLHF's 180 s client timeout"
        },
    )


def build_app(scorer, config: ServerConfig = ServerConfig()) -> web.Application:
    """The aiohttp app: ``POST /get_reward`` and ``GET /health``; ``app[BATCHER]`` exposes the batching counters."""
    max_request_bytes, max_samples_per_request = config.max_request_bytes, config.max_samples_per_request
    app = web.Application(client_max_size=max_request_bytes)
    app[BATCHER] = batcher = MicroBatcher(scorer, config.max_batch_size, config.max_wait_ms, config.max_batch_tokens)

    async def run_batcher(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=False)

    app.cleanup_ctx.append(run_batcher)

    def respond(body: dict, status: int = 200):
        # allow_nan=False: NaN/Infinity are not JSON, and OpenRLHF's client would choke on them.
        return web.json_response(body, status=status, dumps=partial(json.dumps, allow_nan=False))

    def reject(status: int, field: str, message: str):
        return respond({"error": f"{field}: {message}", "field": field}, status)

    async def health(request):
        return respond({"status": "ok", "categories": list(scorer.categories)})

    async def get_reward(request):
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return reject(
                413, "body", f"is over --max_request_bytes {max_request_bytes}: send fewer queries per request"
            )
        except ConnectionError:
            logger.warning(f"client {request.remote} disconnected while sending its request")
            return reject(400, "body", "was cut off: the client disconnected")
        try:
            data = json.loads(body)
        except RecursionError:
            return reject(
                400, "body", 'is nested too deeply: send {"query": [...], "prompts": [...], "labels": [...]}'
            )
        except ValueError as e:  # bad JSON, invalid UTF-8, an integer over 4300 digits
            return reject(
                400,
                "body",
                f'is not valid JSON ({str(e)[:200]}): send {{"query": [...], "prompts": [...], "labels": [...]}}',
            )
        if not isinstance(data, dict):
            return reject(
                400, "body", f"must be a JSON object with 'query', 'prompts', 'labels', not {type(data).__name__}"
            )
        for field in ("query", "prompts", "labels"):
            if field not in data:
                return reject(400, field, "is missing: send 'query', 'prompts' and 'labels' lists of equal length")
        if isinstance(data["query"], list) and len(data["query"]) > max_samples_per_request:
            return reject(
                413,
                "query",
                f"has {len(data['query'])} entries, over --max_samples_per_request {max_samples_per_request}: "
                "split it",
            )
        transport = request.transport
        try:
            async with asyncio.timeout(config.request_timeout_s):
                # Tokenizing a multi-megabyte request takes seconds: off the event loop, like scoring.
                samples = await asyncio.to_thread(scorer.prepare, data["query"], data["prompts"], data["labels"])
                result = await batcher.score(samples, lambda: transport is not None and not transport.is_closing())
        except RewardRequestError as e:
            return respond({"error": str(e), "field": e.field}, e.status)
        except LabelError as e:  # from the similarity, e.g. a demonstration with no words
            return reject(422, "labels", str(e))
        except TimeoutError:
            return reject(
                503,
                "request_timeout_s",
                f"the request was not scored within --request_timeout_s {config.request_timeout_s} s "
                f"({batcher.pending()} samples are waiting): retry, send fewer queries per request, or raise it",
            )
        except ConnectionError as e:
            logger.warning(f"client {request.remote} disconnected: {e}")
            return reject(400, "body", "the client disconnected")
        except Exception as e:
            logger.exception("scoring failed")
            return respond({"error": f"scoring failed: {type(e).__name__}: {e}", "field": None}, 500)
        try:
            return respond(result)
        except ValueError:  # allow_nan=False refused a NaN/inf from the model
            message = "scoring produced NaN/inf: check the reward model and --ds.param_dtype"
            return respond({"error": message, "field": None}, 500)

    app.router.add_get("/health", health)
    app.router.add_post("/get_reward", get_reward)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward.model_name_or_path", type=str, required=True, help="train_category_rm output folder")
    parser.add_argument(
        "--ds.param_dtype",
        type=str,
        default=None,
        choices=["bf16", "fp16", "fp32"],
        help="default: bf16 on GPU, fp32 on CPU",
    )
    parser.add_argument(
        "--device",
        type=str,
        default="auto",
        help="auto: every visible GPU, else cpu; or a comma list (cuda:0,cuda:1). Layout (b) places its category "
        "models round-robin over them (seven 8B models need 98 GB in bf16: two 80 GB cards); layout (a) uses one",
    )
    add_config_arguments(parser, ScoringConfig, "", "reward scoring")
    add_config_arguments(parser, ServerConfig, "", "serving")
    parser.add_argument("--host", type=str, default="127.0.0.1", help="Use 0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=5000)
    add_hardness_arguments(parser)
    return parser


def main(argv: List[str] = None):
    args = hierarchize(build_parser().parse_args(argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # warnings: max_len, disconnects

    from openrlhf_drirl.hardness import build_similarity
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer

    scoring = config_from_args(ScoringConfig, args, "")

    try:
        similarity = build_similarity(args.hardness)
    except Exception as e:  # weights missing offline, unknown model name, ...: say how to get going
        print(
            f"serve_category_rm: error: cannot build the --hardness.backend {args.hardness.backend} similarity "
            f"({type(e).__name__}: {str(e)[:300]}). Pass local weights with --hardness.checkpoint PATH, or "
            "--hardness.backend none to serve without drirl_similarity (GRPO-S then needs alpha_D disabled)",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        scorer = CategoryRewardScorer.from_pretrained(
            args.reward.model_name_or_path,
            similarity=similarity,
            param_dtype=args.ds.param_dtype,
            device=args.device,
            max_len=scoring.max_len,
            batch_size=scoring.batch_size,
            cache_size=scoring.cache_size,
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"serve_category_rm: error: {e}", file=sys.stderr)
        sys.exit(2)
    for category, model in getattr(scorer.model, "models", {}).items():  # layout (b): where each model sits
        print(f"serve_category_rm: {category} on {next(model.parameters()).device}", flush=True)
    app = build_app(scorer, config_from_args(ServerConfig, args, ""))
    web.run_app(app, host=args.host, port=args.port, print=lambda message: print(message, flush=True))


if __name__ == "__main__":
    main()
