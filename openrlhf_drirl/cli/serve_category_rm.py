"""HTTP category reward server for OpenRLHF's ``--reward.remote_url http://HOST:PORT/get_reward``.

Request (OpenRLHF's remote reward format): POST ``{"query": [...], "prompts": [...], "labels": [...]}``.
Response: ``{"rewards": [...], "scores": [...],
"extra_logs": {"drirl_reward_gap": [...], "drirl_similarity": [...]}}``.

Served with aiohttp (an OpenRLHF dependency). OpenRLHF sends one sample per request from many rollout workers at
once, so requests are micro-batched: a queue
collects them for up to ``--max_wait_ms`` or ``--max_batch_size`` samples and scores them in one model call (in
layout (a), one forward pass for a mixed-category batch). Bad requests get a 4xx naming the field and the fix.
"""

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import List

from aiohttp import web
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.config_flags import add_config_arguments, config_from_args
from openrlhf_drirl.hardness import add_hardness_arguments
from openrlhf_drirl.reward.scorer import ScoringConfig


class MicroBatcher:
    """Collects prepared samples from concurrent requests and scores them together in a worker thread."""

    def __init__(self, scorer, max_batch_size: int, max_wait_ms: float):
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches_scored = 0
        self.largest_batch = 0

    async def score(self, samples) -> dict:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((samples, future))
        return await future

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            await self.score_pending(pending)

    async def score_pending(self, pending):
        samples = [s for request_samples, _ in pending for s in request_samples]
        try:
            result = await asyncio.to_thread(self.scorer.score_samples, samples)
        except Exception as e:
            # One bad sample (e.g. a demonstration the similarity cannot split) must not fail its batch neighbours:
            # score the requests one by one so only the offending request gets the error.
            if len(pending) > 1:
                for item in pending:
                    await self.score_pending([item])
                return
            if not pending[0][1].done():
                pending[0][1].set_exception(e)
            return
        self.batches_scored += 1
        self.largest_batch = max(self.largest_batch, len(samples))
        start = 0
        for request_samples, future in pending:
            end = start + len(request_samples)
            if not future.done():  # the client may have gone away
                future.set_result(
                    {
                        "rewards": result["rewards"][start:end].tolist(),
                        "scores": result["scores"][start:end].tolist(),
                        "extra_logs": {k: v[start:end].tolist() for k, v in result["extra_logs"].items()},
                    }
                )
            start = end


BATCHER = web.AppKey("batcher", MicroBatcher)


@dataclass(frozen=True)
class ServerConfig:
    """The server's batching and request limits: the single source of their flags and defaults."""

    max_batch_size: int = field(default=64, metadata={"help": "samples collected into one scoring call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "how long to collect concurrent requests"})
    max_request_bytes: int = field(default=4 << 20, metadata={"help": "larger request bodies get HTTP 413"})
    max_samples_per_request: int = field(default=256, metadata={"help": "more queries in one request get HTTP 413"})


def build_app(scorer, config: ServerConfig = ServerConfig()) -> web.Application:
    """The aiohttp app: ``POST /get_reward`` and ``GET /health``; ``app[BATCHER]`` exposes the batching counters."""
    from openrlhf_drirl.reward.scorer import RewardRequestError

    max_request_bytes, max_samples_per_request = config.max_request_bytes, config.max_samples_per_request
    app = web.Application(client_max_size=max_request_bytes)
    app[BATCHER] = batcher = MicroBatcher(scorer, config.max_batch_size, config.max_wait_ms)

    async def run_batcher(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app.cleanup_ctx.append(run_batcher)

    def reject(status: int, field: str, message: str):
        return web.json_response({"error": f"{field}: {message}", "field": field}, status=status)

    async def health(request):
        return web.json_response({"status": "ok", "categories": list(scorer.categories)})

    async def get_reward(request):
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return reject(
                413, "body", f"is over --max_request_bytes {max_request_bytes}: send fewer queries per request"
            )
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return reject(
                400, "body", f'is not valid JSON ({e}): send {{"query": [...], "prompts": [...], "labels": [...]}}'
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
        try:
            samples = scorer.prepare(data["query"], data["prompts"], data["labels"])
        except RewardRequestError as e:
            return reject(e.status, e.field, str(e).split(": ", 1)[1])
        try:
            return web.json_response(await batcher.score(samples))
        except ValueError as e:  # LabelError from the similarity (e.g. a demonstration with no words)
            return reject(422, "labels", str(e))
        except Exception as e:
            return web.json_response({"error": f"scoring failed: {type(e).__name__}: {e}"}, status=500)

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
    parser.add_argument("--device", type=str, default=None, help="default: cuda when present, else cpu")
    add_config_arguments(parser, ScoringConfig, "", "reward scoring")
    add_config_arguments(parser, ServerConfig, "", "serving")
    parser.add_argument("--host", type=str, default="127.0.0.1", help="Use 0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=5000)
    add_hardness_arguments(parser)
    return parser


def main(argv: List[str] = None):
    args = hierarchize(build_parser().parse_args(argv))

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
    app = build_app(scorer, config_from_args(ServerConfig, args, ""))
    web.run_app(app, host=args.host, port=args.port, print=lambda message: print(message, flush=True))


if __name__ == "__main__":
    main()
