"""Loopback load test of the category reward server: latency of small requests while a large one is scored, and
the server's resident memory (RSS) before and after a bounded load.

The server is ``serve_category_rm`` (its CLI, default flags unless given below) in a subprocess, on a tiny random
category reward model (Qwen2, hidden 128 x 2 layers, 1,024 positions; the default --data.max_len 2048 is capped with
a warning) and the tests' tiny open_clip similarity config, so both caches fill. Phases:
  1. idle: --small one-sample requests from --clients clients, back to back (latency without load);
  2. large: one request of --large_samples samples (each a 6.5 KB prompt, sent twice, and a 1.5 KB response: a
     3.8 MB body at the defaults) while the --clients clients keep sending one-sample requests until it is answered
     (at most --small_during of them);
  3. memory: --requests one-sample requests, --clients at a time, each with a new prompt and demonstration (more
     than both cache sizes), RSS sampled every --requests / 8.
Each loop is bounded in count and by --time_limit_s; every request has a 180 s timeout (OpenRLHF's). The server
inherits this environment: e.g. MALLOC_MMAP_THRESHOLD_=1048576 shows how much of its RSS is glibc keeping freed memory.

    python bench/bench_reward_server_load.py [--clients 8 --large_samples 256 --requests 4000 --cache_size 1000]
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp
import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # tiny_models
TINY_CLIP_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "assets", "drirl-tiny-clip.json"
)
WORDS = (
    "help hurt boss neighbour friend bank shop money rumour account password lock door house car phone message "
    "calm talk mediator lawful safe sorry cannot refuse harm illegal advice support feel think plan today"
).split()
CATEGORIES = ("insult", "unfairness_and_discrimination", "crimes_and_illegal_activities", "physical_harm")


def text(rng: random.Random, chars: int) -> str:
    words = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS) + ("." if rng.random() < 0.1 else ""))
    return " ".join(words)


def sample(rng: random.Random, i: int, prompt_chars=120, response_chars=200):
    """(query, prompt, label) with random words: a new prompt and demonstration every time."""
    prompt = f"<|user|>\nCase {i}: {text(rng, prompt_chars)}?<|end|>\n<|assistant|>\n"
    demonstration = f"Harmful request {i}. #### {text(rng, 150)}"
    label = {"category": CATEGORIES[i % len(CATEGORIES)], "demonstration": demonstration}
    return prompt + text(rng, response_chars) + "<|end|>", prompt, label


def request(samples) -> dict:
    return {"query": [s[0] for s in samples], "prompts": [s[1] for s in samples], "labels": [s[2] for s in samples]}


def build_model(root: str) -> str:
    from tiny_models import build_tiny_causal_lm
    from transformers import AutoTokenizer

    from openrlhf_drirl.reward.model import get_category_reward_model

    rng = random.Random(0)
    lm = build_tiny_causal_lm(os.path.join(root, "lm"), texts=[" ".join(sample(rng, i)[:2]) for i in range(200)])
    model = get_category_reward_model(lm, param_dtype="fp32", init_heads=True)
    model.save_pretrained(os.path.join(root, "rm"))
    AutoTokenizer.from_pretrained(lm).save_pretrained(os.path.join(root, "rm"))
    return os.path.join(root, "rm")


def serve(argv):
    import open_clip

    from openrlhf_drirl.cli.serve_category_rm import main

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    main(argv)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def latency_line(name, values):
    return (
        f"{name:<34}{len(values):>6}{percentile(values, 50) * 1000:>10.0f}{percentile(values, 99) * 1000:>10.0f}"
        f"{max(values) * 1000:>10.0f}"
    )


async def post(session, url, payload):
    start = time.perf_counter()
    async with session.post(url, json=payload) as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body}")
    return time.perf_counter() - start


async def small_clients(session, url, clients, count, deadline, rng, stop=None):
    """``clients`` loops sending one-sample requests until ``count`` are sent, ``deadline`` passes or ``stop`` is
    set."""
    latencies, sent = [], [0]

    async def client():
        while sent[0] < count and time.perf_counter() < deadline and not (stop and stop.is_set()):
            sent[0] += 1
            latencies.append(await post(session, url, request([sample(rng, sent[0])])))

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def load(args, url, server: psutil.Process):
    rng = random.Random(1)

    def mib():
        return server.memory_info().rss / 2**20

    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(10):  # warm-up
            await post(session, url, request([sample(rng, 0)]))
        rss = {"after warm-up": mib()}
        deadline = time.perf_counter() + args.time_limit_s
        idle = await small_clients(session, url, args.clients, args.small, deadline, rng)

        large = request(
            [sample(rng, 10_000 + i, prompt_chars=6_500, response_chars=1_500) for i in range(args.large_samples)]
        )
        body_mb = len(json.dumps(large)) / 1e6
        stop = asyncio.Event()

        async def large_request():
            try:
                return await post(session, url, large)
            finally:
                stop.set()

        deadline = time.perf_counter() + args.time_limit_s
        large_s, during = await asyncio.gather(
            large_request(), small_clients(session, url, args.clients, args.small_during, deadline, rng, stop)
        )
        rss["after the large request"] = mib()

        counter = [0]
        samples_rss = []

        async def client():
            while counter[0] < args.requests and time.perf_counter() < deadline:
                counter[0] += 1
                n = counter[0]
                await post(session, url, request([sample(rng, 100_000 + n)]))
                if n % max(1, args.requests // 8) == 0:
                    samples_rss.append((n, mib()))

        deadline = time.perf_counter() + args.time_limit_s
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.clients)))
        memory_s = time.perf_counter() - start
        rss["after the memory phase"] = mib()
    return idle, during, large_s, body_mb, rss, samples_rss, counter[0], memory_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent small-request clients")
    parser.add_argument("--small", type=int, default=200, help="one-sample requests in the idle phase")
    parser.add_argument("--large_samples", type=int, default=256)
    parser.add_argument("--small_during", type=int, default=2000, help="at most this many during the large one")
    parser.add_argument("--requests", type=int, default=4000, help="one-sample requests in the memory phase")
    parser.add_argument("--cache_size", type=int, default=1000, help="the server's --cache_size")
    parser.add_argument("--hardness_cache_size", type=int, default=256, help="the server's --hardness.cache_size")
    parser.add_argument("--time_limit_s", type=float, default=300, help="per phase")
    parser.add_argument("--server_args", type=str, default="", help="more serve_category_rm flags")
    parser.add_argument("--_serve", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args._serve:
        return serve(rest)

    root = tempfile.mkdtemp(prefix="bench_reward_server_")
    model = build_model(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = os.path.join(root, "server.log")
    argv = [
        "--reward.model_name_or_path", model, "--port", str(port), "--cache_size", str(args.cache_size),
        "--hardness.model_name", "drirl-tiny-clip", "--hardness.pretrained", "none", "--hardness.device", "cpu",
        "--hardness.cache_size", str(args.hardness_cache_size), *args.server_args.split(),
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, __file__, "--_serve", *argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode}):\n" + open(log_path).read()[-3000:])
        server = psutil.Process(process.pid)
        idle, during, large_s, body_mb, rss, samples_rss, requests, memory_s = asyncio.run(
            load(args, f"http://127.0.0.1:{port}/get_reward", server)
        )
    finally:
        process.terminate()
        process.wait(timeout=30)

    print(f"server: tiny Qwen2 category RM + tiny open_clip similarity, CPU, {psutil.cpu_count()} cores")
    print(f"{'one-sample requests':<34}{'count':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    print(latency_line(f"idle, {args.clients} clients", idle))
    print(latency_line("during the large request", during))
    print(f"large request: {args.large_samples} samples, {body_mb:.1f} MB body, answered in {large_s:.1f} s")
    print("server RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    print(
        f"memory phase: {requests} requests with new prompts/demonstrations in {memory_s:.1f} s "
        f"(--cache_size {args.cache_size}, --hardness.cache_size {args.hardness_cache_size}); RSS MiB by request: "
        + ", ".join(f"{n}: {v:.0f}" for n, v in samples_rss)
    )
    with open(log_path) as log:
        warnings = [line.rstrip() for line in log if "WARNING" in line or "Traceback" in line]
    print("server log warnings:", *(warnings or ["none"]), sep="\n  ")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
