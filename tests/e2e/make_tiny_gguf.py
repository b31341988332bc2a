#!/usr/bin/env python3
"""Write a tiny, deterministic llama-architecture GGUF model for e2e tests.

Usage:
    python make_tiny_gguf.py OUT.gguf [--ctx N] [--seed S] [--natural-eos]

Needs PyPI `gguf` (0.19.0) and `numpy`. The model is ~0.6 MB: 2 layers,
embedding size 64, 4 attention heads, seeded random f32 weights, and a
SentencePiece-style ("llama") vocabulary of a few hundred tokens:

  * <unk>, <s> (BOS), </s> (EOS), <|im_start|>, <|im_end|> (control tokens);
  * the 256 byte-fallback tokens <0x00>..<0xFF>, so ANY text tokenizes;
  * "\u2581" (the SPM space marker), printable ASCII characters, and a few
    common English words (with every prefix, so SPM merges can reach them).

The chat template (tokenizer.chat_template) is ChatML. Output text is
gibberish (random bytes, possibly invalid UTF-8 / control characters).

By default the end-of-generation tokens (</s>, <|im_end|>) and the other
control tokens are made practically unreachable by sampling, so generation
always runs until max_tokens / the context is exhausted (finish_reason
"length"). Pass --natural-eos to leave them at random weights instead.

The same arguments always produce byte-identical files.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - environment problem
    sys.exit("make_tiny_gguf.py needs PyPI packages: pip install gguf==0.19.0 numpy")

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
RMS_EPS = 1e-5
SPACE = "\u2581"  # SentencePiece's word-boundary marker

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = """
the be to of and a in that have i it for not on with he as you do at this but
his by from they we say her she or an will my one all would there their what
so up out if about who get which go me when make can like time no just him
know take people into year your good some could them see other than then now
look only come its over think also back after use two how our work first well
way even new want because any these give day most us is are was were hello
world test model token user assistant system lexora gateway llama chat
""".split()


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    seen: set[str] = set()

    def add(text: str, score: float, ttype: int) -> None:
        if text in seen:
            return
        seen.add(text)
        tokens.append(text)
        scores.append(score)
        types.append(int(ttype))

    T = gguf.TokenType
    add("<unk>", 0.0, T.UNKNOWN)      # 0
    add("<s>", 0.0, T.CONTROL)        # 1  BOS
    add("</s>", 0.0, T.CONTROL)       # 2  EOS
    add("<|im_start|>", 0.0, T.CONTROL)  # 3
    add("<|im_end|>", 0.0, T.CONTROL)    # 4  end of turn (EOG)
    for b in range(256):              # 5..260 byte fallback
        add(f"<0x{b:02X}>", 0.0, T.BYTE)
    # Single pieces: the space marker and printable ASCII.
    add(SPACE, -1.0, T.NORMAL)
    for c in range(0x21, 0x7F):
        add(chr(c), -2.0, T.NORMAL)
    # Word pieces: every prefix of "▁word", longer pieces score higher so the
    # SPM bigram merger prefers them.
    for w in WORDS:
        piece = SPACE + w
        for k in range(2, len(piece) + 1):
            add(piece[:k], float(k) - 100.0 / k, T.NORMAL)
    return tokens, scores, types


def build_weights(n_vocab: int, control_ids: list[int], seed: int, natural_eos: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    head_dim = N_EMBD // N_HEAD
    kv_dim = head_dim * N_HEAD_KV
    t: dict[str, np.ndarray] = {}
    # numpy shape (rows, cols) == ggml ne [cols, rows]: (n_vocab, n_embd) is
    # exactly what llama.cpp expects for token_embd / output.
    embd = mat(n_vocab, N_EMBD, 1.0)
    if not natural_eos:
        # Dimension 0 of the residual stream carries a large positive constant
        # for every token, so after RMS norm h[0] > 0 always; control tokens
        # get a strongly negative output weight on it => never sampled.
        embd[:, 0] = 8.0
    t["token_embd.weight"] = embd
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "attn_q.weight"] = mat(N_EMBD, N_EMBD, 0.1)
        t[p + "attn_k.weight"] = mat(kv_dim, N_EMBD, 0.1)
        t[p + "attn_v.weight"] = mat(kv_dim, N_EMBD, 0.1)
        t[p + "attn_output.weight"] = mat(N_EMBD, N_EMBD, 0.05)
        t[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, 0.1)
        t[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, 0.1)
        t[p + "ffn_down.weight"] = mat(N_EMBD, N_FF, 0.05)
    t["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    out = mat(n_vocab, N_EMBD, 0.5)
    if not natural_eos:
        out[:, 0] = 0.0
        out[control_ids, :] = 0.0
        out[control_ids, 0] = -50.0
    t["output.weight"] = out
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--ctx", type=int, default=4096, help="llama.context_length (default 4096)")
    ap.add_argument("--seed", type=int, default=0, help="RNG seed for the weights (default 0)")
    ap.add_argument("--natural-eos", action="store_true",
                    help="do not suppress EOS/control tokens in the output layer")
    args = ap.parse_args(argv)
    if args.ctx < 16:
        ap.error("--ctx must be >= 16")

    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)
    control_ids = [i for i, ty in enumerate(types) if ty in (gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN)]
    weights = build_weights(n_vocab, control_ids, args.seed, args.natural_eos)

    tmp = f"{args.out}.tmp.{os.getpid()}"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(f"lexora-tiny-seed{args.seed}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(n_vocab)
    w.add_context_length(args.ctx)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(RMS_EPS)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_eot_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("</s>"))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(CHATML_TEMPLATE)

    for name, arr in weights.items():
        w.add_tensor(name, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {n_vocab} tokens, {N_LAYER} layers, n_embd {N_EMBD}, "
          f"ctx {args.ctx}, seed {args.seed}, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
