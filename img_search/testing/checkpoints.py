"""Tiny random-weight CLIP / SigLIP / SigLIP2 checkpoints, built offline.

Each ``build_*`` function writes a complete Hugging Face checkpoint (model weights, config,
tokenizer and image processor) into a directory with ``save_pretrained``, so that tests can
load it through the normal code path::

    model = transformers.AutoModel.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)

Nothing is downloaded: the BPE tokenizers are trained on a small fixed corpus (``CORPUS``) by
a deterministic trainer (``_train_bpe``) and wrapped in the usual transformers tokenizer
classes, the weights are random (seeded; rebuilding gives byte-identical files) and the image
processors are the PIL backends (torchvision is not required).

The tiny checkpoints use hidden size 32, 2 layers, 4 heads and an embedding (projection)
dimension of ``TINY_EMBED_DIM`` = 32 for all three families, and are 0.4-0.5 MB on disk.
``build_siglip2_base_sized`` has the tower sizes of ``google/siglip2-base-patch16-224``
(random weights, embedding dimension 768) and is meant for throughput benchmarks.

SigLIP / SigLIP2 text must be tokenised with ``padding="max_length", max_length=64`` (the
text towers pool the last position); their tokenizers have ``model_max_length=64``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

__all__ = [
    "CLIP_TEXT_MAX_LENGTH",
    "CORPUS",
    "SIGLIP2_BASE_EMBED_DIM",
    "TEXT_MAX_LENGTH",
    "TINY_EMBED_DIM",
    "build_siglip2_base_sized",
    "build_tiny_clip",
    "build_tiny_siglip",
    "build_tiny_siglip2",
]

#: Embedding dimension of every tiny checkpoint (CLIP projection_dim, SigLIP hidden size).
TINY_EMBED_DIM = 32
#: Embedding dimension of the base-sized SigLIP2 checkpoint.
SIGLIP2_BASE_EMBED_DIM = 768
#: Text length the SigLIP / SigLIP2 towers are run with (``padding="max_length"``).
TEXT_MAX_LENGTH = 64
#: CLIP's usual context length.
CLIP_TEXT_MAX_LENGTH = 77

_SEED = 0
_TINY_TOWER = {
    "hidden_size": TINY_EMBED_DIM,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
_TINY_IMAGE_SIZE = 32  # CLIP / SigLIP: square input, patch 8 -> 16 patches
_TINY_PATCH_SIZE = 8
# SigLIP2 keeps patch 16 and 256 patches: ``Siglip2Processor`` hard-codes the class defaults
# ``patch_size=16, max_num_patches=256`` for its image kwargs, overriding whatever the saved
# image processor says, so any other value would make ``processor(images=...)`` and
# ``processor.image_processor(...)`` disagree. 256 patches of a 32-wide tower are still cheap.
_SIGLIP2_PATCH_SIZE = 16
_SIGLIP2_MAX_NUM_PATCHES = 256

# A small fixed corpus: enough words for the BPE merges to be non-trivial and a few non-ASCII
# words so that accents and CJK characters are covered by the vocabulary.
CORPUS: tuple[str, ...] = (
    "a photo of a cat sitting on a wooden table next to a cup of coffee",
    "a red fox in the snow looking at the camera",
    "two dogs playing with a ball in a green park on a sunny day",
    "a man riding a bicycle down a busy street in the city",
    "a woman reading a book under a large tree in the garden",
    "a bowl of fresh fruit with apples, bananas and oranges",
    "a plate of pasta with tomato sauce and basil leaves",
    "a small boat on a calm lake surrounded by mountains",
    "the skyline of a modern city at night with bright lights",
    "an old stone bridge over a river in the countryside",
    "a child flying a kite on the beach near the ocean",
    "a group of people walking across a snowy field",
    "a yellow taxi parked outside a tall building",
    "a close up of a flower with pink petals and a bee",
    "a horse standing in a field of tall grass at sunset",
    "a train arriving at a crowded station in the morning",
    "a black and white photograph of an empty road",
    "a bird perched on a branch covered in frost",
    "a kitchen with white cabinets and a blue kettle on the stove",
    "a pizza with cheese, mushrooms and olives on a baking tray",
    "the café in Zürich serves a very good espresso and croissants",
    "a naïve painting of a village with a church and red roofs",
    "the night market in 東京 is full of people and food stalls",
    "a street in 東京 with neon signs reflected in the rain",
    "a cozy café with wooden chairs and a chalkboard menu",
    "the old town of Zürich seen from the lake in autumn",
    "a résumé and a pen lying on a desk near a laptop",
    "a crème brûlée with a cracked sugar crust on a white plate",
    "a façade of a building in São Paulo painted in bright colours",
    "a smiling child eating ice cream on a hot summer afternoon",
    "an airplane flying over the clouds at dawn",
    "a herd of elephants walking through the dry savanna",
    "a laptop, a phone and a notebook on a glass desk",
    "a lighthouse on a rocky coast during a storm",
    "a basket of vegetables: carrots, potatoes, onions and leeks",
    "a cyclist racing along a mountain road in the rain",
    "a snowy mountain peak under a clear blue sky",
    "a jar of honey next to a slice of bread with butter",
    "the number 42 painted in white on a red door",
    "a soccer match in a stadium full of cheering fans",
)


def _train_bpe(
    words: Iterable[str],
    *,
    end_of_word_suffix: str = "",
    max_merges: int = 2000,
) -> list[tuple[str, str]]:
    """Learn BPE merges over ``words`` (pre-tokenised units), deterministically.

    Plain-Python trainer shared by all tokenizers here. The ``tokenizers`` library's
    ``BpeTrainer`` breaks ties between equally frequent pairs by hash-map order when an
    ``end_of_word_suffix`` is used, so its CLIP-style merges change from run to run; here ties
    go to the lexicographically smallest pair. As in CLIP, the last symbol of every word carries
    ``end_of_word_suffix``. Stops when no pair occurs in the corpus any more.
    """
    counts = Counter(words)
    entries: list[tuple[list[str], int]] = []
    for word, n in sorted(counts.items()):
        symbols = list(word)
        if end_of_word_suffix:
            symbols[-1] += end_of_word_suffix
        entries.append((symbols, n))

    pair_counts: Counter[tuple[str, str]] = Counter()
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)

    def account(index: int, sign: int) -> None:
        symbols, n = entries[index]
        for pair in pairwise(symbols):
            pair_counts[pair] += sign * n
            if sign > 0:
                pair_words[pair].add(index)

    for index in range(len(entries)):
        account(index, +1)

    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        live = [(-n, pair) for pair, n in pair_counts.items() if n > 0]
        if not live:
            break
        _, best = min(live)
        merged = best[0] + best[1]
        for index in sorted(pair_words.pop(best, ())):
            symbols, n = entries[index]
            if best not in pairwise(symbols):
                continue
            account(index, -1)
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            entries[index] = (out, n)
            account(index, +1)
        pair_counts.pop(best, None)
        merges.append(best)
    return merges


def _vocab(
    special_tokens: Sequence[str], alphabet: Iterable[str], merges: Sequence[tuple[str, str]]
) -> dict[str, int]:
    """Vocabulary: special tokens, then the base alphabet, then one token per merge."""
    vocab: dict[str, int] = {}
    for token in [*special_tokens, *alphabet, *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    return vocab


# --- SigLIP / SigLIP2 (Gemma-style byte-fallback BPE) -------------------------------------

_SPM_SPACE = "▁"
_BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))


def _spm_normalizer() -> normalizers.Normalizer:
    # What ``Siglip2Tokenizer`` applies: lowercase, then spaces become "▁".
    return normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", _SPM_SPACE)])


@lru_cache(maxsize=1)
def _spm_merges() -> tuple[tuple[str, str], ...]:
    normalizer = _spm_normalizer()
    words = []
    for line in CORPUS:
        # Learn merges inside "▁word" units (the first word has no "▁"); at encode time the
        # merges are applied to the whole string, as ``Siglip2Tokenizer`` does.
        text = normalizer.normalize_str(line)
        words += [w for w in re.split(f"(?={_SPM_SPACE})", text) if w]
    return tuple(_train_bpe(words))


def _spm_vocab(special_tokens: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma-like layout: special tokens, the 256 byte-fallback tokens ``<0x00>``..``<0xFF>``
    (so characters outside the corpus never become ``<unk>``), the corpus characters, then
    the learned pieces."""
    merges = list(_spm_merges())
    chars = sorted({c for line in CORPUS for c in _spm_normalizer().normalize_str(line)})
    return _vocab([*special_tokens, *_BYTE_TOKENS], chars, merges), merges


# --- CLIP (byte-level BPE with "</w>" word ends) -------------------------------------------

_CLIP_BOS, _CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    from transformers import CLIPTokenizer

    # Use CLIPTokenizer's own normaliser / pre-tokeniser, so the training words are exactly the
    # units it will apply the merges to.
    backend = CLIPTokenizer().backend_tokenizer
    words = []
    for line in CORPUS:
        text = backend.normalizer.normalize_str(line)
        words += [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    merges = _train_bpe(words, end_of_word_suffix="</w>")
    # Like the real CLIP vocabulary: every byte symbol, alone and word-final.
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    alphabet = [*byte_symbols, *(s + "</w>" for s in byte_symbols)]
    vocab = _vocab([_CLIP_BOS, _CLIP_EOS], alphabet, merges)
    return tuple(vocab.items()), tuple(merges)


def _make_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        bos_token=_CLIP_BOS,
        eos_token=_CLIP_EOS,
        unk_token=_CLIP_EOS,
        pad_token=_CLIP_EOS,
        model_max_length=CLIP_TEXT_MAX_LENGTH,
    )


def _make_siglip_tokenizer():
    """SigLIP tokenizer stand-in (the real one is SentencePiece, which is not installed).

    Saved as a plain ``TokenizersBackend`` (``PreTrainedTokenizerFast``) whose tokenizer.json
    is reloaded verbatim; same pipeline as SigLIP2's, and appends ``</s>`` like the real
    SigLIP tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    pad, eos, unk = "<pad>", "</s>", "<unk>"
    vocab, merges = _spm_vocab([pad, eos, unk])
    backend = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = _spm_normalizer()
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    backend.decoder = decoders.Sequence(
        [decoders.Replace(_SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        eos_token=eos,
        unk_token=unk,
        model_max_length=TEXT_MAX_LENGTH,
        padding_side="right",
    )


def _make_siglip2_tokenizer():
    """A ``Siglip2Tokenizer`` (byte-fallback BPE, lowercasing) over the tiny corpus vocabulary.

    ``AutoProcessor`` always reloads SigLIP2 tokenizers as ``Siglip2Tokenizer``, which rebuilds
    its pipeline from vocab + merges, so the tokenizer must be this class to round-trip.
    """
    from transformers import Siglip2Tokenizer

    vocab, merges = _spm_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    # Appends <eos> and pads on the right, like the SigLIP tokenizer above (the class default
    # would pad on the left and add no special tokens); both settings survive the reload.
    return Siglip2Tokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=TEXT_MAX_LENGTH,
        padding_side="right",
        add_bos_token=False,
        add_eos_token=True,
    )


def _special_ids(tokenizer) -> dict[str, int]:
    """Special-token ids for a text config (a missing BOS falls back to EOS, as the config
    would otherwise keep its out-of-vocabulary default id)."""
    bos = tokenizer.bos_token_id
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.eos_token_id if bos is None else bos,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _save(model, processor, path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    # ``save_pretrained`` diffs the config against a default-constructed one, and transformers'
    # own default ``SiglipTextConfig`` (vocab 32000, bos/eos 49406/49407) warns about itself.
    config_logger = logging.getLogger("transformers.configuration_utils")
    level = config_logger.level
    config_logger.setLevel(logging.ERROR)
    try:
        model.save_pretrained(out)
    finally:
        config_logger.setLevel(level)
    processor.save_pretrained(out)
    return out


def build_tiny_clip(path: str | Path) -> Path:
    """Write a tiny random CLIP checkpoint (32x32 input, patch 8, embedding dim 32)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = _make_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            **_TINY_TOWER,
            **_special_ids(tokenizer),
            "vocab_size": len(tokenizer),
            "max_position_embeddings": CLIP_TEXT_MAX_LENGTH,
        },
        vision_config={
            **_TINY_TOWER,
            "image_size": _TINY_IMAGE_SIZE,
            "patch_size": _TINY_PATCH_SIZE,
        },
        projection_dim=TINY_EMBED_DIM,
    )
    torch.manual_seed(_SEED)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": _TINY_IMAGE_SIZE},
        crop_size={"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(model, processor, path)


def build_tiny_siglip(path: str | Path) -> Path:
    """Write a tiny random SigLIP checkpoint (32x32 input, patch 8, embedding dim 32)."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    tokenizer = _make_siglip_tokenizer()
    config = SiglipConfig(
        text_config={
            **_TINY_TOWER,
            **_special_ids(tokenizer),
            "vocab_size": len(tokenizer),
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "projection_size": TINY_EMBED_DIM,
        },
        vision_config={
            **_TINY_TOWER,
            "image_size": _TINY_IMAGE_SIZE,
            "patch_size": _TINY_PATCH_SIZE,
        },
    )
    torch.manual_seed(_SEED)
    model = SiglipModel(config)
    image_processor = SiglipImageProcessorPil(
        size={"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE}
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(model, processor, path)


def _fast_random_init(model: torch.nn.Module, *, pool_size: int = 1_048_583) -> None:
    """Materialise a meta-device model on the CPU with cheap, deterministic random weights.

    The models' own initialisers take ~5 s for a base-sized SigLIP2 on a small CPU; here every
    weight matrix / embedding / probe is filled from one seeded pool of N(0, 1) samples (read
    cyclically from a running offset; the pool size is prime so rows do not repeat in step)
    scaled by ``fan_in ** -0.5``. LayerNorm weights are 1, biases and the logit scale/bias 0
    (as in ``Siglip2PreTrainedModel._init_weights``). Good enough for throughput benchmarks.
    """
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(_SEED)
    pool = torch.randn(pool_size, generator=generator)
    offset = 0
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    param.fill_(1.0)
                elif param.dim() < 2 and name != "probe":  # biases, logit_scale, logit_bias
                    param.zero_()
                else:
                    flat = param.view(-1)
                    done = 0
                    while done < flat.numel():
                        start = (offset + done) % pool_size
                        n = min(flat.numel() - done, pool_size - start)
                        flat[done : done + n].copy_(pool[start : start + n])
                        done += n
                    offset = (offset + flat.numel()) % pool_size
                    flat.mul_(param.shape[-1] ** -0.5)
            for name, buffer in module.named_buffers(recurse=False):
                if name != "position_ids":
                    raise ValueError(f"unexpected buffer {name!r} in {type(module).__name__}")
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))


def _build_siglip2(
    path: str | Path, *, text_tower: dict, vision_tower: dict, fast_init: bool = False
) -> Path:
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessorPil,
        Siglip2Model,
        Siglip2Processor,
    )

    tokenizer = _make_siglip2_tokenizer()
    config = Siglip2Config(
        text_config={
            **text_tower,
            **_special_ids(tokenizer),
            "vocab_size": len(tokenizer),
            "max_position_embeddings": TEXT_MAX_LENGTH,
        },
        vision_config={
            **vision_tower,
            "patch_size": _SIGLIP2_PATCH_SIZE,
            "num_patches": _SIGLIP2_MAX_NUM_PATCHES,
        },
    )
    if fast_init:
        with torch.device("meta"):
            model = Siglip2Model(config)
        _fast_random_init(model)
    else:
        torch.manual_seed(_SEED)
        model = Siglip2Model(config)
    image_processor = Siglip2ImageProcessorPil(
        patch_size=_SIGLIP2_PATCH_SIZE, max_num_patches=_SIGLIP2_MAX_NUM_PATCHES
    )
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(model, processor, path)


def build_tiny_siglip2(path: str | Path) -> Path:
    """Write a tiny random SigLIP2 (NaFlex) checkpoint to ``path``.

    Patch 16 with up to 256 patches (the ``Siglip2Processor`` defaults), embedding dim 32.
    """
    return _build_siglip2(
        path,
        text_tower={**_TINY_TOWER, "projection_size": TINY_EMBED_DIM},
        vision_tower=dict(_TINY_TOWER),
    )


def build_siglip2_base_sized(path: str | Path) -> Path:
    """Write a random-weight SigLIP2 with the tower sizes of ``google/siglip2-base-patch16-224``.

    Vision and text towers: hidden 768, 12 layers, 12 heads, intermediate 3072; patch 16,
    ``max_num_patches`` 256; embedding (projection) dim 768 (about 180M parameters, ~720 MB
    in float32). Only the text vocabulary is the tiny corpus one instead of Gemma's 256k tokens
    (which would add ~200M parameters). Weights come from ``_fast_random_init`` (seeded), not
    from the model's own initialisers, to keep the build at a couple of seconds.
    """
    base = {
        "hidden_size": SIGLIP2_BASE_EMBED_DIM,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    }
    return _build_siglip2(
        path,
        text_tower={**base, "projection_size": SIGLIP2_BASE_EMBED_DIM},
        vision_tower=dict(base),
        fast_init=True,
    )


if __name__ == "__main__":  # pragma: no cover - manual timing helper
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for builder in (build_tiny_clip, build_tiny_siglip, build_tiny_siglip2) + (
            (build_siglip2_base_sized,) if "--base" in sys.argv else ()
        ):
            start = time.perf_counter()
            out = builder(Path(tmp) / builder.__name__)
            size = sum(f.stat().st_size for f in out.iterdir())
            print(f"{builder.__name__}: {time.perf_counter() - start:.2f}s, {size / 1e6:.2f} MB")
