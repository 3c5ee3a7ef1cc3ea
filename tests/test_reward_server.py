"""The HTTP reward server on real loopback sockets: concurrency with micro-batching, bad requests, the CLI, and the
hardness module's real similarity (tiny open_clip config)."""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from openrlhf.utils.agent import SingleTurnAgentExecutor
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.cli.serve_category_rm import BATCHER, ServerConfig, build_app
from openrlhf_drirl.hardness import add_hardness_arguments, build_similarity
from openrlhf_drirl.reward.scorer import CategoryRewardScorer

TINY_CLIP_CONFIG = os.path.join(os.path.dirname(__file__), "assets", "drirl-tiny-clip.json")


@pytest.fixture(scope="module")
def scorer(category_rm_dir):
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    argv = ["--hardness.model_name", "drirl-tiny-clip", "--hardness.pretrained", "none", "--hardness.device", "cpu"]
    hardness = hierarchize(add_hardness_arguments(argparse.ArgumentParser()).parse_args(argv)).hardness
    return CategoryRewardScorer.from_pretrained(category_rm_dir, similarity=build_similarity(hardness), device="cpu")


@pytest.fixture(scope="module")
def server(scorer):
    """The app on an ephemeral loopback port, in its own event loop thread."""
    config = ServerConfig(max_batch_size=64, max_wait_ms=5, max_request_bytes=20_000, max_samples_per_request=8)
    app = build_app(scorer, config)
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/get_reward", app
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def _payload(scorer, i, category=None, demonstration_reward=None):
    prompt = f"<|user|>\nRequest {i}: what should I do about it?<|end|>\n<|assistant|>\n"
    label = {"category": category or scorer.categories[i % 7], "demonstration": "I can't help, it could hurt them."}
    if demonstration_reward is not None:
        label["demonstration_reward"] = demonstration_reward
    query = prompt + f"Answer number {i}: talk to someone{'.' * (i % 4)}" + scorer.tokenizer.eos_token
    return {"query": [query], "prompts": [prompt], "labels": [label]}


def test_concurrent_clients_each_get_their_own_result(server, scorer):
    url, app = server
    clients, per_client = 8, 50
    batches_before = app[BATCHER].batches_scored

    async def client(c, session):
        results = []
        for r in range(per_client):
            i = c * per_client + r
            async with session.post(url, json=_payload(scorer, i, demonstration_reward=float(i))) as response:
                results.append((i, response.status, await response.json()))
        return results

    async def run_all():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(client(c, session) for c in range(clients)))

    results = [r for client_results in asyncio.run(run_all()) for r in client_results]
    assert len(results) == clients * per_client
    assert [status for _, status, _ in results].count(200) == clients * per_client
    ids = [i for i, _, _ in results]
    payloads = [_payload(scorer, i, demonstration_reward=float(i)) for i in ids]
    expected = scorer(
        [p["query"][0] for p in payloads], [p["prompts"][0] for p in payloads], [p["labels"][0] for p in payloads]
    )
    for row, (i, _, body) in enumerate(results):
        assert set(body) == {"rewards", "scores", "extra_logs"}
        assert set(body["extra_logs"]) == {"drirl_reward_gap", "drirl_similarity"}
        reward = body["rewards"][0]
        assert reward == pytest.approx(float(expected["rewards"][row]), abs=1e-4)
        # the gap uses this request's own demonstration_reward (= its id), so a swapped answer would show here
        assert body["extra_logs"]["drirl_reward_gap"][0] == pytest.approx(reward - i, abs=1e-4)
        assert body["extra_logs"]["drirl_similarity"][0] == pytest.approx(
            float(expected["extra_logs"]["drirl_similarity"][row]), abs=1e-4
        )
        assert -1 <= body["extra_logs"]["drirl_similarity"][0] <= 1
    scored = app[BATCHER].batches_scored - batches_before
    assert scored < clients * per_client and app[BATCHER].largest_batch > 1  # requests were micro-batched


def _post(url, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "make_body, status, field, fix",
    [
        (lambda s: b'{"query": ["x"', 400, "body", "send {"),
        (lambda s: json.dumps({"query": ["x"], "labels": [{}]}).encode(), 400, "prompts", "send 'query'"),
        (lambda s: json.dumps(_payload(s, 1, category="sensitive_topics")).encode(), 422, "labels[0]", "use one of"),
        (lambda s: json.dumps({**_payload(s, 1), "query": [""]}).encode(), 422, "query[0]", "send prompt + response"),
        (lambda s: json.dumps({"query": ["x" * 30_000], "prompts": [""], "labels": [{}]}).encode(), 413, "body",
         "send fewer"),
        (lambda s: json.dumps({k: v * 9 for k, v in _payload(s, 1).items()}).encode(), 413, "query", "split it"),
    ],
)  # fmt: skip
def test_bad_requests_get_4xx_and_server_keeps_serving(server, scorer, make_body, status, field, fix):
    url, _ = server
    code, body = _post(url, make_body(scorer))
    assert code == status and body["field"] == field and fix in body["error"], body
    code, body = _post(url, json.dumps(_payload(scorer, 3)).encode())
    assert code == 200 and len(body["rewards"]) == 1


def test_openrlhf_http_client_gets_rewards(server, scorer):
    """OpenRLHF's own remote-reward client (the one vLLM rollout workers use) against the server."""
    url, _ = server
    executor = SingleTurnAgentExecutor(remote_rm_url=[url])
    payload = _payload(scorer, 5, demonstration_reward=0.0)
    result = asyncio.run(executor._fetch_rewards_via_http(payload["query"], payload["prompts"], payload["labels"]))
    assert result[0]["extra_logs"]["drirl_reward_gap"] == pytest.approx(result[0]["rewards"], abs=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_on_loopback(category_rm_dir, scorer):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "openrlhf_drirl.cli.serve_category_rm",
         "--reward.model_name_or_path", category_rm_dir, "--hardness.backend", "none", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    status = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert status and status["categories"] == list(scorer.categories), process.stdout.read().decode()[-2000:]
        code, body = _post(f"http://127.0.0.1:{port}/get_reward", json.dumps(_payload(scorer, 2)).encode())
        assert code == 200 and set(body["extra_logs"]) == {"drirl_reward_gap"}  # no similarity with backend none
        assert body["rewards"][0] == pytest.approx(
            float(scorer(*_payload(scorer, 2).values())["rewards"][0]), abs=1e-4
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cli_without_usable_similarity_backend_says_how_to_fix(category_rm_dir, capsys):
    """The server needs drirl_similarity unless told --hardness.backend none; offline CLIP weights cannot load."""
    from openrlhf_drirl.cli.serve_category_rm import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--reward.model_name_or_path", category_rm_dir, "--hardness.model_name", "ViT-B-32"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--hardness.checkpoint" in error and "--hardness.backend none" in error and "Traceback" not in error


def test_one_bad_demonstration_fails_only_its_own_request(server, scorer):
    """The similarity rejects a demonstration with no words; its batch neighbours are re-scored and still succeed."""
    url, _ = server
    bad = _payload(scorer, 0)
    bad["labels"][0]["demonstration"] = "..."

    async def run_all():
        async with aiohttp.ClientSession() as session:

            async def post(payload):
                async with session.post(url, json=payload) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(post(_payload(scorer, i) if i else bad) for i in range(6)))

    results = asyncio.run(run_all())
    assert results[0][0] == 422 and "demonstration" in results[0][1]["error"], results[0]
    assert [status for status, _ in results[1:]] == [200] * 5
