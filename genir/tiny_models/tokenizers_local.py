"""Tokenizers for the tiny models, built on this machine from `corpus.py`.

Nothing is downloaded. In transformers v5 every tokenizer class except the SentencePiece
ones is backed by the `tokenizers` library and accepts its vocabulary in the constructor,
so the vocabularies are learned here (deterministically, in pure Python) and handed over:

* ``clip_tokenizer``  - byte-level BPE with ``</w>`` word ends (CLIP / SD3 text encoders 1+2)
* ``t5_tokenizer``    - Unigram with the ``▁`` metaspace (SD3 text encoder 3)
* ``gemma_tokenizer`` - BPE with byte fallback and Gemma 3's special / multimodal tokens
* ``bert_tokenizer``  - WordPiece, lowercased (BLIP; ``[DEC]``/``[ENC]`` added by the BLIP builder)
* ``siglip_tokenizer`` - a real SentencePiece ``spiece.model`` (Unigram) loaded by ``SiglipTokenizer``

The BPE learner and the Unigram scorer are our own and break every tie by string order,
so the same corpus always gives the same files, whatever the process or the library's
thread pool does (the `tokenizers` trainers are multi-threaded).
"""

from __future__ import annotations

import heapq
import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from . import corpus

# --------------------------------------------------------------------------------------
# generic vocabulary learners
# --------------------------------------------------------------------------------------


def learn_bpe(word_counts: dict[tuple[str, ...], int], max_merges: int, min_count: int = 2) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent symbol pair.

    ``word_counts`` maps a word (as its initial symbol sequence) to its frequency. Ties go to
    the lexicographically smallest pair, which makes the result independent of dict order.
    """
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for idx, (syms, n) in enumerate(zip(words, freqs, strict=True)):
        for pair in zip(syms, syms[1:], strict=False):
            pair_counts[pair] += n
            where.setdefault(pair, set()).add(idx)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        neg, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count <= 0 or -neg != count:  # stale heap entry
            continue
        if count < min_count:
            break
        merges.append(pair)
        a, b = pair
        merged = a + b
        touched: set[tuple[str, str]] = set()
        for idx in sorted(where.pop(pair, ())):
            syms, n = words[idx], freqs[idx]
            for old in zip(syms, syms[1:], strict=False):
                pair_counts[old] -= n
                touched.add(old)
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[idx] = out
            for new in zip(out, out[1:], strict=False):
                pair_counts[new] += n
                where.setdefault(new, set()).add(idx)
                touched.add(new)
        pair_counts.pop(pair, None)
        for p in touched:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
    return merges


def unigram_pieces(extra_chars: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Unigram pieces with log-probability scores, best first (no special tokens).

    Whole words carry the metaspace prefix (``▁dog``); single characters (and ``▁`` alone)
    cover everything else. Scores are log relative frequencies, rounded so that the JSON
    and protobuf files are stable.
    """
    words = Counter(w for s in corpus.sentences() for w in s.split())
    counts: Counter[str] = Counter()
    for w, n in words.items():
        core = w.strip(string.punctuation) or w
        counts["\u2581" + core] += n
        counts["\u2581" + core.lower()] += n
        for ch in w:
            counts[ch] += n
    chars = set(string.ascii_letters + string.digits + string.punctuation) | set(extra_chars)
    for ch in chars:
        counts[ch] += 1
    counts["\u2581"] += sum(words.values())
    total = sum(counts.values())
    # single characters are penalised so whole words win the Viterbi search
    scored = [(piece, round(math.log(n / total) - (4.0 if len(piece) == 1 else 0.0), 4)) for piece, n in counts.items()]
    scored.sort(key=lambda ps: (-ps[1], ps[0]))
    return scored


# --------------------------------------------------------------------------------------
# CLIP (byte-level BPE)
# --------------------------------------------------------------------------------------

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> printable unicode table (same order as the real vocab)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = dict(zip(keep, map(chr, keep), strict=True)), 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in keep + [b for b in range(256) if b not in keep]}


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer()._tokenizer  # empty vocab: only its normalizer / pre-tokenizer are used
    counts: Counter[tuple[str, ...]] = Counter()
    for sentence in corpus.sentences():
        norm = backend.normalizer.normalize_str(sentence)
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(norm):
            counts[tuple(word[:-1]) + (word[-1] + "</w>",)] += 1
    merges = learn_bpe(dict(sorted(counts.items())), max_merges=1200, min_count=2)
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges] + [CLIP_BOS, CLIP_EOS]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


def clip_tokenizer(model_max_length: int = 77, pad_token: str = CLIP_EOS):
    """CLIP BPE tokenizer. ``pad_token="!"`` gives the SD3 ``tokenizer_2`` flavour (id 0, as in the real vocab)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=model_max_length)


# --------------------------------------------------------------------------------------
# T5 (Unigram)
# --------------------------------------------------------------------------------------


def t5_tokenizer(model_max_length: int = 256, extra_ids: int = 0):
    """T5 Unigram tokenizer: ``<pad>``=0, ``</s>``=1, ``<unk>``=2, then the pieces."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + unigram_pieces()
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids, model_max_length=model_max_length)


# --------------------------------------------------------------------------------------
# Gemma 3 (BPE with byte fallback)
# --------------------------------------------------------------------------------------

GEMMA_SPECIALS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
)  # fmt: skip
GEMMA_MM_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


@lru_cache(maxsize=1)
def _gemma_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for sentence in corpus.sentences():
        for text in (sentence, sentence.lower()):
            # Gemma has no pre-tokenizer; learning per "▁word" / punctuation run keeps merges inside words
            for i, word in enumerate(text.split(" ")):
                for j, chunk in enumerate(re.findall(r"\w+|[^\w\s]+", word)):
                    counts[tuple(("\u2581" if i and not j else "") + chunk)] += 1
                    if not i and not j:  # sentence-initial words also occur mid-text
                        counts[tuple("\u2581" + chunk)] += 1
    merges = learn_bpe(dict(sorted(counts.items())), max_merges=4000, min_count=1)
    alphabet = sorted({c for w in counts for c in w} | set(string.ascii_letters + string.digits + string.punctuation))
    tokens = list(GEMMA_SPECIALS) + [f"<0x{b:02X}>" for b in range(256)] + alphabet + [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


def gemma_tokenizer(chat_template: str | None = None, model_max_length: int = 4096):
    """Gemma tokenizer with the attributes ``Gemma3Processor`` reads (``boi_token``, ``image_token`` ...)."""
    from transformers import GemmaTokenizer

    vocab, merges = _gemma_vocab()
    tok = GemmaTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        extra_special_tokens=dict(GEMMA_MM_TOKENS),
        chat_template=chat_template,
        model_max_length=model_max_length,
        padding_side="left",
        add_bos_token=True,
        add_eos_token=False,
    )
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return tok


# --------------------------------------------------------------------------------------
# BERT (WordPiece) for BLIP
# --------------------------------------------------------------------------------------

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@lru_cache(maxsize=1)
def _bert_vocab() -> dict[str, int]:
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for sentence in corpus.sentences():
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(sentence)):
            counts[word] += 1
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in counts for c in w})
    # a few frequent suffixes so unseen words split into word pieces, not single letters
    suffixes = ["##" + s for s in ("s", "es", "ed", "ing", "er", "est", "ly", "y", "en", "tion")]
    tokens = list(BERT_SPECIALS) + chars + ["##" + c for c in chars] + suffixes
    tokens += sorted(counts, key=lambda w: (-counts[w], w))
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return vocab


def bert_tokenizer(model_max_length: int = 512):
    from transformers import BertTokenizer

    return BertTokenizer(vocab=dict(_bert_vocab()), do_lower_case=True, model_max_length=model_max_length)


# --------------------------------------------------------------------------------------
# SigLIP (SentencePiece model file)
# --------------------------------------------------------------------------------------


def siglip_spiece_bytes() -> bytes:
    """Serialized SentencePiece Unigram ``ModelProto`` shaped like SigLIP's ``spiece.model``.

    ``<pad>``=0, ``</s>``=1, ``<unk>``=2 as in the released vocabulary (pad and eos are both
    ``</s>`` in the tokenizer config). Written with transformers' own copy of the protobuf
    schema: ``sentencepiece``'s bundled ``*_pb2`` needs protobuf>=7, which this project pins out.
    """
    from transformers.utils import sentencepiece_model_pb2_new as pb

    sp = pb.ModelProto.SentencePiece
    m = pb.ModelProto()
    for piece, kind in (("<pad>", sp.CONTROL), ("</s>", sp.CONTROL), ("<unk>", sp.UNKNOWN)):
        m.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in unigram_pieces():
        m.pieces.add(piece=piece, score=score, type=sp.NORMAL)
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.UNIGRAM
    ts.vocab_size = len(m.pieces)
    ts.pad_id, ts.eos_id, ts.unk_id, ts.bos_id = 0, 1, 2, -1
    ts.byte_fallback = False
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = True
    ns.escape_whitespaces = True
    return m.SerializeToString(deterministic=True)


def siglip_tokenizer(work_dir: str | os.PathLike, model_max_length: int = 64):
    """``SiglipTokenizer`` (SentencePiece backend) over a ``spiece.model`` written into ``work_dir``."""
    from transformers import SiglipTokenizer

    path = os.path.join(os.fspath(work_dir), "spiece.model")
    with open(path, "wb") as f:
        f.write(siglip_spiece_bytes())
    return SiglipTokenizer(vocab_file=path, model_max_length=model_max_length)
