#!/usr/bin/env python3
"""Generate tests/fixtures/tokenizer_reference.json for tests/test_tokenizer.cpp.

Two references are built from the default model's GGUF
(SmolLM2-135M-Instruct.Q4_1.gguf):

  * "hf_gguf": transformers' AutoTokenizer.from_pretrained(dir, gguf_file=...), i.e. the
    tokenizer transformers converts from GGUF metadata. Its conversion uses a plain
    ByteLevel pre-tokenizer (GPT-2 regex) and drops SmolLM2's Digits step.
  * "original": the original SmolLM2 tokenizer rebuilt with the `tokenizers` library from
    the same vocab + merges: Sequence[Digits(individual_digits=True),
    ByteLevel(add_prefix_space=False, use_regex=True)], with the 17 control tokens as
    special added tokens. This is what the model was trained with, and what llama.cpp's
    "smollm" pre-tokenizer (tokenizer.ggml.pre) does: split every \\p{N} on its own, then
    apply the GPT-2 regex to the rest.

The C++ test compares against "original" ("ids"). Every case also records the hf_gguf ids
and whether they agree, so a difference between the two conversions stays visible.

It also writes tests/fixtures/tokenizer_spm_reference.json when the `sentencepiece` package is
installed: a small SentencePiece BPE model trained here (byte fallback, dummy prefix) and
its encodings, for the SentencePiece tokenizer (there is no Llama 2 GGUF to compare with).

Needs: transformers, tokenizers, gguf (and optionally sentencepiece); no network.
Usage: make_tokenizer_fixtures.py [--model PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

# Never reach a model hub: everything comes from the local GGUF.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tokenizer_reference.json"

# (name, text). Chosen to hit every branch of the pre-tokenizer regex and of byte-level BPE.
CASES = [
    ("empty", ""),
    ("single_space", " "),
    ("english_prose",
     "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; "
     "they'd said we'll see, I'm sure you've heard."),
    ("english_caps_contractions", "DON'T SHOUT! It'S fine, isn'T it? O'Neill's"),
    ("chinese", "我爱自然语言处理。今天天气很好，我们去公园散步吧！"),
    ("japanese", "日本語のテキストです。カタカナとひらがな、そして漢字を混ぜます。"),
    ("korean", "안녕하세요, 세계! 한국어 문장입니다."),
    ("mixed_scripts", "Hello世界123abc😀! Привет мир, γειά σου κόσμε, مرحبا بالعالم, नमस्ते दुनिया"),
    ("emoji_zwj_flags", "Family: 👩‍👩‍👧‍👦 flags: 🇯🇵🇺🇸🏳️‍🌈 thumbs: 👍🏽 heart: ❤️ keycap: 1️⃣"),
    ("python_code",
     "def fibonacci(n: int) -> int:\n"
     "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
     "    a, b = 0, 1\n"
     "    for _ in range(n):\n"
     "        a, b = b, a + b\n"
     "    return a\n\n"
     "print([fibonacci(i) for i in range(10)])  # [0, 1, 1, 2, ...]\n"),
    ("c_code",
     "#include <stdio.h>\n\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) {\n"
     "\t\tprintf(\"%d\\n\", i * i);\n\t}\n\treturn 0;\n}\n"),
    ("tabs", "\tindented\t\ttwo tabs\t \tmixed\t"),
    ("space_runs", "a  b   c    d     e      f       end   "),
    ("newlines", "line1\nline2\r\n\r\nline3\n\n\nline4\n \n  \n"),
    ("digits_date_pi", "2024-11-24 3.14159"),
    ("digits_spaces", "x  42 and   7, 1000000 items, v2.0.1, 0x1F, 1e-9"),
    ("digits_unicode", "x² + y³ = z⁴; ½ ¾; Ⅻ; ١٢٣ ٤٥٦; １２３; ①②"),
    ("accented_latin", "Crème brûlée, naïve façade, Ångström, São Paulo, Dvořák, Łódź, Øresund"),
    ("combining_marks", "e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ"),
    ("unicode_spaces", "nbsp:\u00a0x ideographic:\u3000y vt:\u000bz nel:\u0085w thin:\u2009v"),
    ("url_and_punct", "See https://huggingface.co/HuggingFaceTB/SmolLM2-135M?x=1&y=2 -- \"quoted\" (parens) [brackets] {braces} ...!!! ???"),
    ("math_symbols", "∑∫√π ≈ 3.14, ∀x∈ℝ: x²≥0 → ∞"),
    ("special_inline", "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n"),
    ("special_adjacent", "abc<|endoftext|>def<|im_end|><|im_end|>ghi"),
    ("special_lookalike", "<|im_start <|im_end |> <|endoftext| <file_sep><filename>x.py"),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
]

CHATS = [
    ("single_user_default_system", [
        {"role": "user", "content": "What is the capital of France?"},
    ]),
    ("system_and_turns", [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Count to 3.\nThen stop."},
    ]),
]

# Chat template families other than the model's own, rendered by transformers' Jinja
# renderer so the C++ native rendering can be checked byte for byte. Sources as published
# in the models' tokenizer_config.json (raw strings: "\n" is the two characters the JSON
# holds inside Jinja string literals).
TEMPLATE_FAMILIES = [
    ("chatml_plain", "<|im_start|>", "<|im_end|>",
     r"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
     r"'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    ("qwen2_default_system", "<|endoftext|>", "<|im_end|>",
     r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
     r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
     r"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
     r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    ("llama2", "<s>", "</s>",
     r"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
     r"{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
     r"{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
     r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     r"{% if loop.index0 == 0 and system_message != false %}"
     r"{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
     r"{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
     r"{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
     r"{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    ("llama3", "<|begin_of_text|>", "<|eot_id|>",
     r"{% set loop_messages = messages %}{% for message in loop_messages %}"
     r"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
     r"message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
     r"{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
     r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    ("mistral_v0.1", "<s>", "</s>",
     r"{{ bos_token }}{% for message in messages %}"
     r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     r"{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
     r"{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
     r"{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    ("mistral_v0.1_2024", "<s>", "</s>",
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
     "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
     "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
     "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
     "        {{- raise_exception('After the optional system message, conversation roles must alternate "
     "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
     "        {%- if loop.first and system_message is defined %}\n"
     "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
     "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n"
     "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n"
     "    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the "
     "exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"),
]
TEMPLATE_CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi there  "},
     {"role": "assistant", "content": " Hello. "}, {"role": "user", "content": "Bye\n"}],
]


def render_template_families() -> list[dict]:
    from transformers.utils.chat_template_utils import render_jinja_template

    out = []
    for name, bos, eos, source in TEMPLATE_FAMILIES:
        renders = []
        for messages in TEMPLATE_CONVERSATIONS:
            entry = {"messages": messages, "add_generation_prompt": True}
            try:
                rendered, _ = render_jinja_template(conversations=[messages], chat_template=source,
                                                    add_generation_prompt=True, bos_token=bos, eos_token=eos)
                entry["rendered"] = rendered[0]
            except Exception as e:  # the template itself refuses (raise_exception)
                entry["error"] = str(e)
            renders.append(entry)
        out.append({"name": name, "bos_token": bos, "eos_token": eos, "template": source, "renders": renders})
    return out


# A small SentencePiece BPE model (Llama 2 style: byte fallback, dummy prefix, no
# normalization) trained on this text, to check the C++ SentencePiece tokenizer against
# the sentencepiece library itself. Skipped if sentencepiece is not installed.
SPM_TRAINING_TEXT = [text for _, text in CASES if text.strip()] + [
    "Attention maps show which earlier tokens each token looks at when the model predicts the next one.",
    "Sliding-window models only see a fixed number of recent tokens; grouped-query attention shares keys.",
    "The tokenizer turns text into pieces; every piece keeps the byte span it came from.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Ça va très bien, merci beaucoup!",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
]
SPM_CASES = [text for name, text in CASES if "<|" not in text and "<file_sep>" not in text] + [
    "hello world", " leading space", "trailing space ", "two  spaces", "\ttab\nnewline",
    "unseen characters: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃", "numbers 1234567890 and 3.14159",
]


def make_spm_reference() -> dict | None:
    try:
        import sentencepiece as spm
    except ImportError:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(line for text in SPM_TRAINING_TEXT for line in text.splitlines() if line.strip()),
                          encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "sp"), vocab_size=600, model_type="bpe",
            byte_fallback=True, character_coverage=0.995, add_dummy_prefix=True, remove_extra_whitespaces=False,
            normalization_rule_name="identity", split_digits=True, num_threads=1, hard_vocab_limit=False,
            allow_whitespace_only_pieces=True, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "sp.model"))
    n = sp.get_piece_size()

    def piece_type(i: int) -> int:  # GGUF / llama.cpp token_type numbering
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        if sp.is_unused(i):
            return 5
        return 1

    return {
        "sentencepiece_version": spm.__version__,
        "pieces": [sp.id_to_piece(i) for i in range(n)],
        "scores": [sp.get_score(i) for i in range(n)],
        "types": [piece_type(i) for i in range(n)],
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "cases": [{"text": text, "ids": sp.encode(text)} for text in SPM_CASES],
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model_path() -> Path:
    base = os.environ.get("ATTNSCOPE_MODELS") or str(Path.home() / ".cache" / "attnscope" / "models")
    return Path(base) / MODEL_FILE


def build_original_tokenizer(gguf_path: Path):
    """SmolLM2's original tokenizer, rebuilt from the GGUF vocab and merges."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = GGUFReader(str(gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    tok.add_special_tokens(control)
    for added in control:  # the GGUF ids must be kept, not appended
        assert tok.token_to_id(added.content) == vocab[added.content], added.content
    return tok, reader


def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted (character -> byte)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def tokens_mixing_numerals(tok) -> list[str]:
    """Vocab tokens that hold a whole Unicode numeral (\\p{N}) plus any other character."""
    import unicodedata
    decode = byte_level_decoder()
    found = []
    for t in tok.get_vocab(with_added_tokens=False):
        try:
            text = bytes(decode[c] for c in t).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue  # partial UTF-8 sequences cannot hold a whole numeral
        if len(text) > 1 and any(unicodedata.category(c)[0] == "N" for c in text):
            found.append(t)
    return found


def pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None,
                    help=f"path to {MODEL_FILE} (or its folder); default $ATTNSCOPE_MODELS/{MODEL_FILE}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    model_path = args.model or default_model_path()
    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    if not model_path.is_file():
        print(f"error: model not found: {model_path}", file=sys.stderr)
        return 1

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    original, reader = build_original_tokenizer(model_path)
    pre = bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode()

    cases = []
    mismatches = []
    for name, text in CASES:
        ids = original.encode(text, add_special_tokens=False).ids
        hf_ids = hf.encode(text, add_special_tokens=False)
        decoded = original.decode(ids, skip_special_tokens=False)
        assert decoded == text, (name, decoded, text)
        if hf_ids != ids:
            mismatches.append(name)
        cases.append({
            "name": name,
            "text": text,
            "ids": ids,
            "tokens": original.encode(text, add_special_tokens=False).tokens,
            "decoded": decoded,
            "hf_gguf_ids": hf_ids,
            "hf_gguf_matches": hf_ids == ids,
        })

    # A focused probe of the only place the two conversions can differ: whitespace
    # directly before a digit (the vocab has no token mixing digits with anything else).
    probe_text = "a  1"
    probe = {
        "text": probe_text,
        "original_tokens": original.encode(probe_text, add_special_tokens=False).tokens,
        "hf_gguf_tokens": hf.convert_ids_to_tokens(hf.encode(probe_text, add_special_tokens=False)),
    }

    chats = []
    for name, messages in CHATS:
        rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        chats.append({
            "name": name,
            "messages": messages,
            "add_generation_prompt": True,
            "rendered": rendered,
            "ids": original.encode(rendered, add_special_tokens=False).ids,
        })

    multi_char_numeric = tokens_mixing_numerals(original)
    out = {
        "generator": "tests/reference/make_tokenizer_fixtures.py",
        "model_file": MODEL_FILE,
        "model_sha256": sha256_file(model_path),
        "versions": {p: pkg_version(p) for p in ("transformers", "tokenizers", "gguf")},
        "gguf_tokenizer_pre": pre,
        "digit_splitting": {
            "reference_used_for_ids": "original: Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]",
            "hf_gguf_pre_tokenizer": json.loads(hf.backend_tokenizer.to_str())["pre_tokenizer"],
            "vocab_tokens_mixing_a_numeral_with_other_chars": multi_char_numeric,
            "cases_where_hf_gguf_differs": mismatches,
            "whitespace_before_digit_probe": probe,
            "note": ("transformers' GGUF conversion drops the Digits step. The vocab has no "
                     "token holding a whole numeral together with another character, so both "
                     "give one token per ASCII digit, but they differ wherever whitespace "
                     "precedes a numeral: the GPT-2 regex alone puts the last space into the "
                     "numeral's pre-token (' ?\\p{N}+'), so '  4' becomes 'Ġ','Ġ','4' instead "
                     "of 'ĠĠ','4', and ' ½' becomes 'ĠÂ','½' (a merge of the space with the "
                     "numeral's first byte) instead of 'Ġ','Â½'. The ids in 'ids' follow the "
                     "original (and llama.cpp's 'smollm' pre-tokenizer)."),
        },
        "cases": cases,
        "chats": chats,
        "template_families": render_template_families(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    spm_reference = make_spm_reference()
    spm_out = args.out.parent / "tokenizer_spm_reference.json"
    if spm_reference is None:
        print(f"note: sentencepiece is not installed; {spm_out} left as it is")
    else:
        with open(spm_out, "w", encoding="utf-8") as f:
            json.dump(spm_reference, f, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {spm_out}: {len(spm_reference['pieces'])} pieces, {len(spm_reference['cases'])} cases")
    print(f"wrote {args.out}: {len(cases)} cases ({len(mismatches)} differ in hf_gguf: {mismatches}), "
          f"{len(chats)} chats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
