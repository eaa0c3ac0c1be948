"""Build the files behind `builtin:tiny`: a byte-level BPE tokenizer trained on the
demo data in data/, and the config of a tiny Qwen2 model that uses it.

    python -m runner.tools.make_tokenizer [--out DIR] [--data DIR]

The output is committed (runner/builtin/tiny/), so nobody needs the hub or this script
to run a recipe; the script exists so the files can be rebuilt and audited. Every input
and setting is fixed, so two runs give byte-identical files (tests check this).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

from runner.builtin import TINY_RANDOM, builtin_config_dir, tiny_path

REPO = Path(__file__).resolve().parents[2]
DATA_FILES = [  # sorted: the order texts are fed in must not depend on the filesystem
    "alpaca_en_demo.json",
    "alpaca_zh_demo.json",
    "glaive_toolcall_en_demo.json",
    "gsm8k_train.jsonl",
    "identity.json",
    "tang_poems.jsonl",
]
VOCAB_SIZE = 8000

EOS = "<|endoftext|>"
PAD = "<|pad|>"  # distinct from EOS: a collator that masks pad positions must not mask EOS
SPECIAL_TOKENS = [
    EOS, PAD,
    "<|im_start|>", "<|im_end|>",                                   # chatml
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",  # llama3
]

# Qwen2's pre-tokenizer split: digits one by one (helps arithmetic data such as gsm8k),
# letters of any script grouped, so Chinese runs are merged by BPE like English words.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# chatml, with {% generation %} around what the assistant says (content and <|im_end|>)
# so tools that read assistant masks from the template (and `template.chat: tokenizer`)
# train exactly the tokens the built-in chatml template trains.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# builtin:tiny (pretrained by recipes/tiny_pretrain.yaml; ~3.2M parameters, sized so that pretraining
# takes about an hour on one CPU core) and builtin:tiny-random (never trained; fast plumbing tests).
MODEL_CONFIG = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)
RANDOM_CONFIG = dict(MODEL_CONFIG, hidden_size=64, intermediate_size=128, num_hidden_layers=2)


def _strings(value) -> Iterator[str]:
    """Every string inside a JSON value, in document order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


# Rows read per file: the tokenizer was trained on the first 3,000 poems; data/ now ships all 30,000,
# and reading them all would change the vocabulary (and every fingerprint that depends on it).
LIMITS = {"tang_poems.jsonl": 3000, "gsm8k_train.jsonl": 500}


def iter_texts(data_dir: Path) -> Iterator[str]:
    for name in DATA_FILES:
        path = data_dir / name
        with path.open(encoding="utf-8") as f:
            if name.endswith(".jsonl"):
                for i, line in enumerate(f):
                    if i >= LIMITS.get(name, 1 << 62):
                        break
                    if line.strip():
                        yield from _strings(json.loads(line))
            else:
                yield from _strings(json.load(f))


def train_tokenizer(data_dir: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # The same pipeline transformers' Qwen2Tokenizer rebuilds around vocab and merges, so
    # the tokenizer we train is the one AutoTokenizer loads for a `qwen2` config.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,             # ids 0..7, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no unknown text
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(data_dir), trainer=trainer)
    return tok


def build(out: Path, data_dir: Path, random_out: Path | None = None) -> None:
    from transformers import Qwen2Config, Qwen2Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    # AutoTokenizer picks Qwen2Tokenizer for a qwen2 config whatever tokenizer_config.json
    # says, so save through that class: what we ship is then exactly what loads.
    bpe = json.loads(train_tokenizer(data_dir).to_str())["model"]
    hf_tok = Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=[tuple(m) for m in bpe["merges"]],
        unk_token=None,  # byte-level BPE has no unknown text; Qwen2's default would be EOS
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[2:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out)
    # transformers 5 no longer writes this file; older readers still look for it.
    _write_json(out / "special_tokens_map.json", {
        "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": SPECIAL_TOKENS[2:],
    })

    for folder, shape in ((out, MODEL_CONFIG), (random_out, RANDOM_CONFIG)):
        if folder is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        config = Qwen2Config(
            vocab_size=len(hf_tok),
            eos_token_id=hf_tok.eos_token_id,
            pad_token_id=hf_tok.pad_token_id,
            **shape,
        )
        config_dict = config.to_diff_dict()  # only non-defaults, as save_pretrained writes
        # Keep the committed file independent of the installed transformers version.
        config_dict.pop("transformers_version", None)
        _write_json(folder / "config.json", config_dict)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=tiny_path())
    p.add_argument("--random-out", type=Path, default=builtin_config_dir(TINY_RANDOM),
                   help="where the config of builtin:tiny-random goes")
    p.add_argument("--data", type=Path, default=REPO / "data")
    args = p.parse_args(argv)
    build(args.out, args.data, args.random_out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
