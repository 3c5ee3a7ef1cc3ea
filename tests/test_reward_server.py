"""The HTTP reward server on real loopback sockets: concurrency with micro-batching, bad requests, the CLI, and the
hardness module's real similarity (tiny open_clip config); fairness, time budget and disconnects with a slowed
scorer."""

import argparse
import asyncio
import contextlib
import json
import logging
import math
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


@contextlib.contextmanager
def serving(app):
    """``app`` on an ephemeral loopback port, in its own event loop thread; yields the /get_reward URL."""
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/get_reward"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(scorer):
    config = ServerConfig(max_batch_size=64, max_wait_ms=5, max_request_bytes=20_000, max_samples_per_request=8)
    app = build_app(scorer, config)
    with serving(app) as url:
        yield url, app


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
                results.append((i, response.status, await response.json(loads=_strict_json)))
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


def _strict_json(text):
    """json.loads that refuses NaN/Infinity, as strict JSON parsers do."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _post(url, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _strict_json(response.read())
    except urllib.error.HTTPError as e:
        return e.code, _strict_json(e.read())


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
                    return response.status, await response.json(loads=_strict_json)

            return await asyncio.gather(*(post(_payload(scorer, i) if i else bad) for i in range(6)))

    results = asyncio.run(run_all())
    assert results[0][0] == 422 and "demonstration" in results[0][1]["error"], results[0]
    assert [status for status, _ in results[1:]] == [200] * 5


def _body(s, query=None, prompt=None, **label):
    """A one-sample request body with the query, the prompt or label keys replaced (None values drop the key)."""
    payload = _payload(s, 1)
    payload["labels"][0] = {k: v for k, v in {**payload["labels"][0], **label}.items() if v is not None}
    if prompt is not None:
        payload["query"], payload["prompts"] = [prompt + payload["query"][0][len(payload["prompts"][0]) :]], [prompt]
    if query is not None:
        payload["query"] = [payload["prompts"][0] + query]
    return json.dumps(payload).encode()  # NaN/Infinity floats come out as those literals


def _raw(s, field, text):
    """A body whose ``field`` holds raw JSON ``text`` (for literals json.dumps cannot write)."""
    payload = {k: json.dumps(v) for k, v in _payload(s, 1).items()}
    payload[field] = text
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in payload.items()) + "}").encode()


DEEP = "[" * 5000 + "]" * 5000
BAD_BODIES = {
    "not JSON object: list": (lambda s: b"[1, 2]", 400, "body"),
    "not JSON object: null": (lambda s: b"null", 400, "body"),
    "invalid UTF-8": (lambda s: b'{"query": ["\xff\xfe"], "prompts": [""], "labels": [{}]}', 400, "body"),
    "deeply nested body": (lambda s: DEEP.encode(), 400, "body"),
    "deeply nested query": (lambda s: _raw(s, "query", DEEP), 400, "body"),
    "integer of 5000 digits": (lambda s: _raw(s, "query", "[" + "1" * 5000 + "]"), 400, "body"),
    "query NaN": (lambda s: _raw(s, "query", "NaN"), 400, "query"),
    "query a string": (lambda s: _raw(s, "query", '"x"'), 400, "query"),
    "query empty": (lambda s: _raw(s, "query", "[]"), 400, "query"),
    "labels an object": (lambda s: _raw(s, "labels", "{}"), 400, "labels"),
    "query[0] a number": (lambda s: _raw(s, "query", "[1]"), 422, "query[0]"),
    "prompts[0] null": (lambda s: _raw(s, "prompts", "[null]"), 422, "prompts[0]"),
    "label a number": (lambda s: _raw(s, "labels", "[7]"), 422, "labels[0]"),
    "label a JSON string of a list": (lambda s: _raw(s, "labels", '["[1]"]'), 422, "labels[0]"),
    "label a non-JSON string": (lambda s: _raw(s, "labels", '["insult"]'), 422, "labels[0]"),
    "label string nested deeply": (lambda s: _raw(s, "labels", json.dumps([DEEP])), 422, "labels[0]"),
    "category a list": (lambda s: _body(s, category=["insult"]), 422, "labels[0]"),
    "demonstration a number": (lambda s: _body(s, demonstration=3), 422, "labels[0].demonstration"),
    "demonstration_reward a string": (lambda s: _body(s, demonstration_reward="high"), 422,
                                      "labels[0].demonstration_reward"),
    "demonstration_reward true": (lambda s: _body(s, demonstration_reward=True), 422, "labels[0].demonstration_reward"),
    "demonstration_reward 10**400": (lambda s: _body(s, demonstration_reward=10**400), 422,
                                     "labels[0].demonstration_reward"),
    "demonstration_reward 1e39 (inf in float32)": (lambda s: _body(s, demonstration_reward=1e39), 422,
                                                   "labels[0].demonstration_reward"),
    "demonstration_reward -1e39": (lambda s: _body(s, demonstration_reward=-1e39), 422,
                                   "labels[0].demonstration_reward"),
    "demonstration_reward NaN": (lambda s: _body(s, demonstration_reward=math.nan), 422,
                                 "labels[0].demonstration_reward"),
    "demonstration_reward -Infinity": (lambda s: _body(s, demonstration_reward=-math.inf), 422,
                                       "labels[0].demonstration_reward"),
    "demonstration_reward 1e400 literal": (lambda s: _body(s, demonstration_reward=1.0).replace(b"1.0}", b"1e400}"),
                                           422, "labels[0].demonstration_reward"),
    "demonstration_embeddings a string": (lambda s: _body(s, demonstration_embeddings="abc"), 422,
                                          "labels[0].demonstration_embeddings"),
    "demonstration_embeddings an object": (lambda s: _body(s, demonstration_embeddings={"a": 1}), 422,
                                           "labels[0].demonstration_embeddings"),
    "demonstration_embeddings 1-D": (lambda s: _body(s, demonstration_embeddings=[1.0, 2.0]), 422,
                                     "labels[0].demonstration_embeddings"),
    "demonstration_embeddings ragged": (lambda s: _body(s, demonstration_embeddings=[[1.0, 2.0], [3.0]]), 422,
                                        "labels[0].demonstration_embeddings"),
    "demonstration_embeddings strings": (lambda s: _body(s, demonstration_embeddings=[["a"]]), 422,
                                         "labels[0].demonstration_embeddings"),
    "demonstration_embeddings empty": (lambda s: _body(s, demonstration_embeddings=[]), 422,
                                       "labels[0].demonstration_embeddings"),
    "demonstration_embeddings NaN": (lambda s: _body(s, demonstration_embeddings=[[math.nan]]), 422,
                                     "labels[0].demonstration_embeddings"),
    "demonstration_embeddings 1e39": (lambda s: _body(s, demonstration_embeddings=[[1e39]]), 422,
                                      "labels[0].demonstration_embeddings"),
    "demonstration_embeddings 10**400": (lambda s: _body(s, demonstration_embeddings=[[10**400]]), 422,
                                         "labels[0].demonstration_embeddings"),
    "demonstration_embeddings wrong width": (lambda s: _body(s, demonstration_embeddings=[[1.0, 0.0]],
                                                             demonstration_encoder=s.similarity.encoder_id), 422,
                                             "labels"),
    "surrogate in the response": (lambda s: _body(s, query="ok \ud800 then"), 422, "query[0]"),
    "surrogate in the prompt": (lambda s: _body(s, prompt="<|user|>\n\ud800?<|end|>\n<|assistant|>\n"), 422,
                                "query[0]"),
    "surrogate in the demonstration": (lambda s: _body(s, demonstration="no \ud800"), 422, "labels[0].demonstration"),
    "surrogate in the category": (lambda s: _body(s, category="\ud800"), 422, "labels[0]"),
    "response alone over max_len": (lambda s: _body(s, query="talk to someone " * 400), 422, "query[0]"),
    "demonstration alone over max_len": (lambda s: _body(s, demonstration="I can't help. " * 500), 422,
                                         "labels[0].demonstration"),
}  # fmt: skip


@pytest.mark.parametrize("make_body, status, field", BAD_BODIES.values(), ids=BAD_BODIES)
def test_malformed_bodies_get_4xx_naming_the_field(server, scorer, make_body, status, field):
    url, _ = server
    code, body = _post(url, make_body(scorer))  # _post parses strictly: no NaN/Infinity in any answer
    assert (code, body["field"]) == (status, field) and body["error"].startswith(f"{field}: "), body
    code, body = _post(url, json.dumps(_payload(scorer, 3)).encode())
    assert code == 200 and len(body["rewards"]) == 1


@pytest.mark.parametrize("given_first", [False, True])
def test_same_new_demonstration_with_and_without_its_reward_in_one_request(server, scorer, given_first):
    """The cache path once dropped the sample without demonstration_reward when a later one had it (HTTP 500)."""
    url, _ = server
    payload = _payload(scorer, 11)
    payload["prompts"][0] = payload["prompts"][0].replace("Request", f"Fresh request {given_first}")
    payload["query"][0] = payload["prompts"][0] + "Answer: talk to someone." + scorer.tokenizer.eos_token
    with_reward = {**payload["labels"][0], "demonstration_reward": 2.5}
    labels = [with_reward, payload["labels"][0]] if given_first else [payload["labels"][0], with_reward]
    code, body = _post(url, json.dumps({**payload, "query": payload["query"] * 2, "prompts": payload["prompts"] * 2,
                                        "labels": labels}).encode())  # fmt: skip
    assert code == 200, body
    ids = scorer.token_ids(payload["prompts"][0], payload["labels"][0]["demonstration"], "demonstration")
    demonstration_reward = float(scorer.rewards_of([ids], [scorer.categories.index(labels[0]["category"])])[0])
    gaps = body["extra_logs"]["drirl_reward_gap"]
    expected = [body["rewards"][i] - (2.5 if "demonstration_reward" in labels[i] else demonstration_reward)
                for i in range(2)]  # fmt: skip
    assert gaps == pytest.approx(expected, abs=1e-4)


def test_non_finite_scores_are_a_json_error_not_invalid_json(scorer):
    nan_scorer = SlowScorer(scorer, delay=0.0, nan=True)
    with serving(build_app(nan_scorer)) as url:
        code, body = _post(url, json.dumps(_payload(scorer, 1)).encode())
    assert code == 500 and "NaN" in body["error"], body


class SlowScorer:
    """The real scorer with each scoring call ``delay`` seconds slower (rewards NaN with ``nan``)."""

    def __init__(self, scorer, delay, nan=False):
        self.scorer, self.delay, self.nan = scorer, delay, nan
        self.categories, self.prepare = scorer.categories, scorer.prepare

    def score_samples(self, samples):
        time.sleep(self.delay)
        result = self.scorer.score_samples(samples)
        if self.nan:
            result["rewards"][:] = math.nan
        return result


@pytest.fixture(scope="module")
def slow_server(scorer):
    """A scorer that takes >= 50 ms per batch of at most 4 samples: a 48-sample request spans 12 batches."""
    config = ServerConfig(max_batch_size=4, max_wait_ms=1, max_request_bytes=1 << 20, max_samples_per_request=64)
    app = build_app(SlowScorer(scorer, delay=0.05), config)
    with serving(app) as url:
        yield url, app


def _large(scorer, n=48):
    payloads = [_payload(scorer, 100 + i, demonstration_reward=0.0) for i in range(n)]
    return {k: [p[k][0] for p in payloads] for k in ("query", "prompts", "labels")}


def test_large_request_does_not_starve_small_ones(slow_server, scorer):
    url, app = slow_server
    batches_before = app[BATCHER].batches_scored

    async def timed_post(session, payload, delay=0.0):
        await asyncio.sleep(delay)
        start = time.perf_counter()
        async with session.post(url, json=payload) as response:
            assert response.status == 200, await response.text()
            body = await response.json(loads=_strict_json)
        return start, time.perf_counter(), body

    async def small_client(session, c):
        return [await timed_post(session, _payload(scorer, 10 * c + r), delay=0.15 if r == 0 else 0) for r in range(2)]

    async def run_all():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(
                timed_post(session, _large(scorer)), *(small_client(session, c) for c in range(3))
            )

    (large_start, large_end, large_body), *small = asyncio.run(run_all())
    small = [r for client in small for r in client]
    assert len(large_body["rewards"]) == 48 and all(len(body["rewards"]) == 1 for _, _, body in small)
    small_latencies = [end - start for start, end, _ in small]
    # 12 batches for the large request; each small one waits for about one batch, never for the large request
    assert max(end for _, end, _ in small) < large_end
    assert max(small_latencies) < (large_end - large_start) / 3, (small_latencies, large_end - large_start)
    assert app[BATCHER].batches_scored - batches_before >= 12


def _send_raw(url, body: bytes, send_bytes=None):
    """A raw loopback connection that sends the request (or its first ``send_bytes`` bytes); caller closes it."""
    port = int(url.split(":")[2].split("/")[0])
    connection = socket.create_connection(("127.0.0.1", port))
    head = f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    connection.sendall(head.encode() + body[:send_bytes])
    return connection


def _wait_until(condition, timeout=10.0):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.02)
    return condition()


def test_disconnected_client_is_dropped_and_logged_in_one_line(slow_server, scorer, caplog):
    url, app = slow_server
    batcher = app[BATCHER]
    caplog.set_level(logging.WARNING)
    scored_before, dropped_before = batcher.samples_scored, batcher.requests_dropped
    connection = _send_raw(url, json.dumps(_large(scorer)).encode())
    assert _wait_until(lambda: batcher.samples_scored > scored_before)
    connection.close()
    assert _wait_until(lambda: batcher.requests_dropped > dropped_before)
    time.sleep(0.2)  # a batch in flight when the client left may still finish
    assert batcher.samples_scored - scored_before < 48  # the rest of the request was not scored

    body = json.dumps(_payload(scorer, 1)).encode()
    _send_raw(url, body, send_bytes=len(body) // 2).close()  # gone while sending the body
    assert _wait_until(lambda: "while sending" in caplog.text)
    lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 2 and "samples unscored" in lines[0], lines
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    code, answer = _post(url, json.dumps(_payload(scorer, 2)).encode())
    assert code == 200


def test_request_over_its_time_budget_gets_503_and_is_dropped(scorer):
    config = ServerConfig(max_batch_size=4, max_wait_ms=1, max_request_bytes=1 << 20, max_samples_per_request=64,
                          request_timeout_s=0.3)  # fmt: skip
    app = build_app(SlowScorer(scorer, delay=0.1), config)
    with serving(app) as url:
        start = time.perf_counter()
        code, body = _post(url, json.dumps(_large(scorer, 40)).encode())
        assert time.perf_counter() - start < 2.0
        assert code == 503 and body["field"] == "request_timeout_s" and "--request_timeout_s 0.3" in body["error"]
        batcher = app[BATCHER]
        assert _wait_until(lambda: batcher.requests_dropped == 1)
        assert batcher.samples_scored < 40
        code, body = _post(url, json.dumps(_payload(scorer, 1)).encode())
        assert code == 200
