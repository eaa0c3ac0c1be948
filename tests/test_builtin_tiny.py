"""builtin:tiny and its random siblings: the shipped tokenizer and config files, the script that makes
them, and model loading."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import runner.builtin as builtin
from runner.builtin import TINY, TINY_RANDOM, TINY_SCRATCH, load_model_and_tokenizer, load_tokenizer, tiny_path
from runner.tools import make_tokenizer
from runner.tools.make_tokenizer import SPECIAL_TOKENS
from runner.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]
TRAINED = {"model.safetensors", "manifest.json"}   # written by `make tiny-model`, not by make_tokenizer


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny():
    return load_model_and_tokenizer(TINY_RANDOM, seed=7)


def test_make_tokenizer_is_reproducible_and_matches_shipped_files(tmp_path):
    # The shipped files come from an earlier process, so comparing with them also covers
    # what differs between processes (Rust hash seeds, thread scheduling).
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        make_tokenizer.main(["--out", str(out), "--random-out", str(out / "random")])
    for out in outs:
        assert (out / "random" / "config.json").read_bytes() == (tiny_path().parent / "tiny_random" / "config.json").read_bytes()
        (out / "random" / "config.json").unlink()
        (out / "random").rmdir()
    names = sorted(f.name for f in outs[0].iterdir())
    assert names == sorted(f.name for f in tiny_path().iterdir() if f.name not in TRAINED)
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"} <= set(names)
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
        assert (outs[0] / name).read_bytes() == (tiny_path() / name).read_bytes(), (
            f"runner/builtin/tiny/{name} is stale: rerun python -m runner.tools.make_tokenizer")


def test_shipped_tokenizer():
    files = [f for f in tiny_path().iterdir() if f.name not in TRAINED]
    assert sum(f.stat().st_size for f in files) < 1.5 * 2**20
    tok = load_tokenizer(TINY)
    config = json.loads((tiny_path() / "config.json").read_text())
    assert 7500 <= len(tok) <= 8500 and config["vocab_size"] == len(tok)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert (config["eos_token_id"], config["pad_token_id"]) == (tok.eos_token_id, tok.pad_token_id)
    assert "<|im_start|>" in tok.chat_template
    for special in SPECIAL_TOKENS:  # each special token is one token, even inside text
        assert len(tok.encode(f"a{special}b", add_special_tokens=False)) == 3
    # Both languages round-trip, and BPE merged them well below one token per byte.
    texts = ["床前明月光，疑是地上霜。", "细胞理论是生物科学的一个理论", "Natalia sold 48 clips in April."]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert len(ids) < len(text.encode()) / 2


def test_the_builtin_tokenizer_is_the_one_autotokenizer_loads_without_torch():
    """load_tokenizer names the class of tokenizer_config.json instead of asking AutoTokenizer (which imports
    torch): the same tokenizer, and loading it imports torch only where the tokenizer's module does."""
    from transformers import AutoTokenizer
    auto, tok = AutoTokenizer.from_pretrained(tiny_path()), load_tokenizer(TINY)
    assert json.loads((tiny_path() / "tokenizer_config.json").read_text())["tokenizer_class"] == type(tok).__name__
    assert type(tok) is type(auto) and tok.init_kwargs == auto.init_kwargs
    assert tok.chat_template == auto.chat_template and tok.get_vocab() == auto.get_vocab()
    assert tok.all_special_tokens == auto.all_special_tokens
    text = "<|im_start|>user\n床前明月光 Natalia sold 48 clips<|im_end|>\n<|pad|>"
    assert tok.encode(text) == auto.encode(text) and tok(text) == auto(text)
    # torch comes only if the tokenizer's own module brings it: not with transformers 5.25 (make test), with
    # 5.17 (make test-min's floor) that module imports torch itself
    code = ("import sys, transformers.models.qwen2.tokenization_qwen2 as m; own = 'torch' in sys.modules; "
            "from runner.builtin import load_tokenizer; load_tokenizer('builtin:tiny'); "
            "print(own, 'torch' in sys.modules)")
    own, after = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                                text=True).stdout.split()
    assert after == own


def test_import_does_not_load_torch():
    code = ("import sys, runner.builtin; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("base", [TINY_RANDOM, TINY_SCRATCH])
def test_same_seed_same_weights_other_seed_other_weights(base):
    model, _ = load_model_and_tokenizer(base, seed=7)
    again, _ = load_model_and_tokenizer(base, seed=7)
    other, _ = load_model_and_tokenizer(base, seed=8)
    a, b, c = _weights(model), _weights(again), _weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("base, shape", [(TINY_RANDOM, (64, 2)), (TINY_SCRATCH, (192, 4)), (TINY, (192, 4))])
def test_builtin_shapes(base, shape):
    cfg = load_model_and_tokenizer(base, seed=0)[0].config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.tie_word_embeddings) == ("qwen2", *shape, 4, 2, True)


def test_tiny_model_shape_and_finite_loss(tiny):
    model, tok = tiny
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.dtype == torch.float32
    ids = torch.tensor([tok.encode("<|im_start|>user\n你好<|im_end|>\n", add_special_tokens=False)])
    loss = model(input_ids=ids, labels=ids).loss
    assert math.isfinite(loss.item()) and loss.item() > 0


def test_loading_leaves_the_callers_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_model_and_tokenizer(TINY_RANDOM, seed=123)
    assert torch.equal(torch.rand(3), expected)


def test_dtype():
    model, _ = load_model_and_tokenizer(TINY_RANDOM, seed=0, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(RecipeError, match="unknown dtype"):
        load_model_and_tokenizer(TINY_RANDOM, seed=0, dtype="float8")


def test_local_path_is_relative_to_the_recipe(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "models" / "mine")
    tok.save_pretrained(tmp_path / "models" / "mine")
    loaded, loaded_tok = load_model_and_tokenizer("models/mine", seed=99, recipe_dir=tmp_path)
    a, b = _weights(model), _weights(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded_tok.encode("你好 hello") == tok.encode("你好 hello")


def test_missing_local_path(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_tokenizer("./no/such/dir", recipe_dir=tmp_path)


@pytest.mark.parametrize("how", ["offline env", "hub unreachable"])
def test_unknown_hub_id_fails_fast_with_one_line(how, monkeypatch, tmp_path):
    if how == "offline env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(builtin, "_hub_reachable", lambda: False)
    with pytest.raises(RecipeError) as err:
        load_model_and_tokenizer("no-such-org/no-such-model", seed=0, recipe_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "no-such-org/no-such-model" in message and "hub cannot be reached" in message
    assert "--set model.base=builtin:tiny" in message


def test_shipped_weights_match_the_manifest_and_beat_the_random_init_widely():
    """builtin:tiny loads the pretrained weights; on held-out poems (never pretrained on) its loss is far
    below the same architecture's random init (ln 8000 = 8.99 is uniform guessing)."""
    import hashlib

    from runner.chat.templates import render

    manifest = json.loads((tiny_path() / "manifest.json").read_text())
    weights = (tiny_path() / "model.safetensors").read_bytes()
    assert manifest["weights_sha256"] == hashlib.sha256(weights).hexdigest() and len(weights) < 25 * 2**20
    assert builtin.weights_digest(TINY) == manifest["weights_sha256"] and builtin.weights_digest(TINY_SCRATCH) is None
    poems = _held_out_poems()

    def loss(base: str) -> float:
        model, tok = load_model_and_tokenizer(base, seed=0)
        total = n = 0.0
        with torch.no_grad():
            for msgs in poems:
                ids = torch.tensor([render(msgs, tok, chat="text", system=None, train_on="all", max_length=256).input_ids])
                total += model(input_ids=ids, labels=ids).loss.item() * (ids.size(1) - 1)
                n += ids.size(1) - 1
        return total / n

    trained, scratch = loss(TINY), loss(TINY_SCRATCH)
    assert scratch > 8.5 and trained < scratch - 2.0, (trained, scratch)


def _held_out_poems(n: int = 32) -> list[list[dict]]:
    """The first n poems that no pretraining phase saw (data/heldout_eval.jsonl), as user/assistant turns."""
    from runner.data.filters.exclude import digest

    held = {json.loads(x)["sha1"] for x in (REPO / "data" / "heldout_eval.jsonl").read_text().splitlines()}
    poems = []
    for line in (REPO / "data" / "tang_poems.jsonl").read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        if len(p["paragraphs"]) > 1 and digest("\n".join(p["paragraphs"][1:])) in held:
            poems.append([{"role": "user", "content": p["paragraphs"][0]},
                          {"role": "assistant", "content": "\n".join(p["paragraphs"][1:])}])
        if len(poems) == n:
            break
    return poems


def test_the_shipped_model_ends_an_answer_with_the_end_of_turn_marker():
    """Pretraining's chatml phase (recipes/tiny_chat.yaml) shows the model <|im_end|>: on held-out poems in
    chatml, it gives <|im_end|> most of the probability right after the poem, where the random init gives
    it ~1/8000. A base that never saw the marker cannot be taught by LoRA to write it (generation never stops)."""
    from runner.chat.templates import render

    def p_end(base: str) -> float:
        model, tok = load_model_and_tokenizer(base, seed=0)
        end = tok.convert_tokens_to_ids("<|im_end|>")
        ps = []
        with torch.no_grad():
            for msgs in _held_out_poems():
                ids = render(msgs, tok, chat="chatml", system=None, train_on="assistant", max_length=1024).input_ids
                cut = ids.index(end, len(ids) - 3)          # the answer's <|im_end|> (a newline may follow)
                probs = model(input_ids=torch.tensor([ids[:cut]])).logits[0, -1].softmax(-1)
                ps.append(probs[end].item())
        return sum(ps) / len(ps)

    trained, scratch = p_end(TINY), p_end(TINY_SCRATCH)
    assert trained > 0.5 and scratch < 0.01, (trained, scratch)
