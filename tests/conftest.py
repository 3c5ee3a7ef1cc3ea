import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A random tiny Qwen2 causal LM with an in-process BPE tokenizer and chat template, saved once per session."""
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("tiny_lm")))


# ---------------------------------------------------------------------------------------------------------------------
# Category reward model (issue 4): synthetic IRL pairs and a trained tiny multi-head model, shared by
# tests/test_category_rm*.py and tests/test_reward_*.py.


def irl_pair_rows(per_category=12, seed=0):
    """Learnable synthetic IRL pairs whose preference depends on the category: even categories prefer a refusal over
    a supportive answer, odd ones the reverse, so one shared head cannot fit them but K heads can."""
    import random

    from openrlhf_drirl.contract import DEFAULT_CATEGORIES

    rng = random.Random(seed)
    subjects = ["my coworker", "a neighbour", "the bank", "a stranger", "my friend", "a website", "my boss", "a shop"]
    rows = []
    for c_index, category in enumerate(DEFAULT_CATEGORIES):
        for i in range(per_category):
            subject = rng.choice(subjects)
            refusal = f"I can't help, it could hurt {subject}."
            support = f"That is hard; talk to {subject} about it."
            chosen, rejected = (refusal, support) if c_index % 2 == 0 else (support, refusal)
            prompt = f"{category.replace('_', ' ')}: what about {subject}, case {i}?"
            rows.append({"prompt": prompt, "category": category, "chosen": chosen, "rejected": rejected})
    return rows


def write_irl_pairs(path, per_category=12, seed=0):
    import json

    with open(path, "w") as f:
        for row in irl_pair_rows(per_category, seed):
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def category_rm_lm_dir(tmp_path_factory):
    """Tiny Qwen2 backbone (hidden 64) whose BPE is trained on the synthetic pairs, so sequences stay short."""
    from tiny_models import build_tiny_causal_lm

    texts = [r[k] for r in irl_pair_rows() for k in ("prompt", "chosen", "rejected")]
    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("category_rm_lm")), texts=texts * 4, hidden_size=64)


@pytest.fixture(scope="session")
def irl_pairs_path(tmp_path_factory):
    return write_irl_pairs(tmp_path_factory.mktemp("irl_pairs") / "irl_pairs.jsonl")


def category_rm_train_argv(model_dir, pairs_path, output_dir, *extra):
    return [
        "--model.model_name_or_path", str(model_dir),
        "--data.dataset", str(pairs_path),
        "--data.apply_chat_template",
        "--train.batch_size", "14",
        "--train.micro_batch_size", "14",
        "--train.max_epochs", "3",
        "--adam.lr", "1e-3",
        "--eval.split_ratio", "0.25",
        "--ckpt.output_dir", str(output_dir),
        "--ckpt.path", str(output_dir) + "_ckpt",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def category_rm_dir(category_rm_lm_dir, irl_pairs_path, tmp_path_factory):
    """A multi-head category reward model trained on ``irl_pairs_path`` with train_category_rm (plain-torch path);
    the training wall time (imports excluded) is saved beside it in ``train_seconds.txt``."""
    import time

    from openrlhf_drirl.cli.train_category_rm import main

    output_dir = tmp_path_factory.mktemp("category_rm") / "model"
    start = time.perf_counter()
    main(category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, output_dir))
    (output_dir / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.2f}")
    return str(output_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Dataset builder (issue 5, data_tools/): an OpenAI-compatible HTTP server on loopback that answers with canned text,
# shared by tests/test_data_generation.py and tests/test_data_resume.py.


@pytest.fixture
def canned_openai_server():
    """Start ``/v1/chat/completions`` on 127.0.0.1 (ephemeral port) answering ``reply(prompt, seed) -> text``.

    Returns a function ``start(reply, fail_first=0, delay=0.0)`` -> (base_url, server); ``server.requests`` counts
    requests, the first ``fail_first`` ones get HTTP 500, and ``server.model`` (default "canned") is the only model
    name accepted (others get 404, as a real server does)."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers = []

    def start(reply, fail_first=0, delay=0.0, model="canned"):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    failing = server.requests <= fail_first
                if self.path != "/v1/chat/completions" or failing:
                    return self._send(500 if failing else 404, {"error": {"message": "unavailable"}})
                if request["model"] != server.model:
                    return self._send(404, {"error": {"message": f"The model `{request['model']}` does not exist."}})
                time.sleep(delay)
                text = reply(request["messages"][-1]["content"], request["seed"])
                usage = {"completion_tokens": len(text.split())}
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.requests, server.lock, server.model = 0, threading.Lock(), model
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def write_category_prompts(path, per_category=6, seed=0, categories=None):
    """A JSONL source ``{"question", "kind"}`` whose prompts are random word strings (no two near-duplicates), with
    ``kind`` holding the category name, for data_tools tests that need no classifier."""
    import json
    import random

    from openrlhf_drirl.contract import DEFAULT_CATEGORIES

    words = (
        "apple river stone cloud ladder violin copper garden window rocket pencil marble forest candle engine "
        "harbor blanket mirror tunnel feather canyon lantern walnut saddle meadow puzzle anchor glacier"
    ).split()
    rng = random.Random(seed)
    with open(path, "w") as f:
        for category in categories or DEFAULT_CATEGORIES:
            for _ in range(per_category):
                question = "How do I " + " ".join(rng.sample(words, 7)) + "?"
                f.write(json.dumps({"question": question, "kind": category}) + "\n")
    return str(path)
