"""Build a small but real Argos Translate package (.argosmodel) for offline tests.

No Argos language package ships in any registry package, so tests make one in the real format:
a zip holding one folder with `metadata.json`, a CTranslate2 `model/` and `sentencepiece.model`.

The model is a 1-layer Transformer whose weights are set by hand rather than trained, so its
output is deterministic: the encoder passes one-hot token and position codes through, the
decoder's cross-attention at step t looks only at source position t, and the output projection
maps each source piece to a target piece. The result copies the input sentence, replacing the
words of a tiny dictionary (hello → hola, world → mundo, ...).
"""
from __future__ import annotations

import io
import json
import random
import string
import zipfile
from pathlib import Path

import numpy as np

DICTIONARY = {"hello": "hola", "world": "mundo", "house": "casa", "cat": "gato",
              "dog": "perro", "good": "bueno", "morning": "mañana", "water": "agua"}
MAX_POSITIONS = 160
POSITION_ROWS = 1024  # later positions (only reached by losing beams) encode as zeros
HEAD_DIM = 192
_PUNCT = ".,!?;:'\"-()"


def _corpus(seed: int = 0, lines: int = 400) -> list[str]:
    """Sentences covering ASCII letters, digits and punctuation, plus the dictionary words."""
    rng = random.Random(seed)
    words = list(DICTIONARY) + list(DICTIONARY.values()) + ["the", "a", "is", "and", "of"]
    alphabet = string.ascii_letters + string.digits + _PUNCT
    out = []
    for _ in range(lines):
        sentence = [rng.choice(words) for _ in range(rng.randint(3, 8))]
        sentence.append("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))))
        out.append(" ".join(sentence) + rng.choice(".!?"))
    return out


def train_sentencepiece(vocab_size: int = 160) -> bytes:
    """Train a tiny SentencePiece model whose vocabulary holds every dictionary word whole."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    symbols = sorted(set(DICTIONARY) | set(DICTIONARY.values()))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buffer, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, user_defined_symbols=symbols,
        hard_vocab_limit=False, minloglevel=2)
    return buffer.getvalue()


def _pieces(sp_model: bytes) -> list[str]:
    """The vocabulary of a SentencePiece model, in id order."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _unit_norm(norm, dim: int) -> None:
    """Set a layer norm to gamma 1, beta 0."""
    norm.gamma = np.ones(dim, dtype=np.float32)
    norm.beta = np.zeros(dim, dtype=np.float32)


def _set_linear(spec, weight: np.ndarray) -> None:
    """Assign a weight and a zero bias."""
    spec.weight = weight.astype(np.float32)
    spec.bias = np.zeros(weight.shape[0], dtype=np.float32)


def _zero_block(layer, dim: int) -> None:
    """Make self-attention and feed-forward add nothing to the residual."""
    _set_linear(layer.self_attention.linear[0], np.zeros((3 * dim, dim)))
    _set_linear(layer.self_attention.linear[1], np.zeros((dim, dim)))
    _set_linear(layer.ffn.linear_0, np.zeros((dim, dim)))
    _set_linear(layer.ffn.linear_1, np.zeros((dim, dim)))
    _unit_norm(layer.self_attention.layer_norm, dim)
    _unit_norm(layer.ffn.layer_norm, dim)


def _cross_attention(attention, vocab: int, dim: int) -> None:
    """Queries and keys match positions one-hot; values carry the source token code."""
    query = np.zeros((dim, dim))
    for head in range(dim // HEAD_DIM):
        for p in range(MAX_POSITIONS):
            query[head * HEAD_DIM + p, vocab + p] = 1.0
    value = np.zeros((dim, dim))
    value[np.arange(vocab), np.arange(vocab)] = 1.0  # head 0's slice holds the token code
    output = np.zeros((dim, dim))
    output[np.arange(vocab), np.arange(vocab)] = 1.0
    _set_linear(attention.linear[0], query)
    _set_linear(attention.linear[1], np.concatenate([query, value]))
    _set_linear(attention.linear[2], output)
    _unit_norm(attention.layer_norm, dim)


def build_model(pieces: list[str], out_dir: Path) -> Path:
    """Write the hand-set CTranslate2 Transformer for the vocabulary `pieces`."""
    from ctranslate2.specs import TransformerSpec

    vocab = len(pieces)
    dim = 2 * HEAD_DIM
    assert vocab + MAX_POSITIONS <= dim, "vocabulary too large for the model width"
    spec = TransformerSpec.from_config(num_layers=1, num_heads=2)
    spec.config.add_source_eos = True  # the copied </s> ends decoding
    positions = np.zeros((POSITION_ROWS, dim), dtype=np.float32)
    positions[np.arange(MAX_POSITIONS), vocab + np.arange(MAX_POSITIONS)] = 1.0
    embeddings = np.zeros((vocab, dim), dtype=np.float32)
    embeddings[np.arange(vocab), np.arange(vocab)] = 1.0
    _encoder(spec.encoder, embeddings, positions, dim)
    _decoder(spec.decoder, pieces, positions, dim)
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.validate()
    spec.optimize(quantization=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    return out_dir


def _encoder(encoder, embeddings: np.ndarray, positions: np.ndarray, dim: int) -> None:
    """Encoder output = normalised [one-hot token | one-hot position]."""
    encoder.embeddings[0].weight = embeddings
    encoder.scale_embeddings = False
    encoder.position_encodings.encodings = positions
    _zero_block(encoder.layer[0], dim)
    _unit_norm(encoder.layer_norm, dim)


def _decoder(decoder, pieces: list[str], positions: np.ndarray, dim: int) -> None:
    """Decoder copies the aligned source token and maps it through DICTIONARY."""
    vocab = len(pieces)
    decoder.embeddings.weight = np.zeros((vocab, dim), dtype=np.float32)
    decoder.scale_embeddings = False
    decoder.position_encodings.encodings = positions
    layer = decoder.layer[0]
    _zero_block(layer, dim)
    _cross_attention(layer.attention, vocab, dim)
    _unit_norm(decoder.layer_norm, dim)
    index = {piece: i for i, piece in enumerate(pieces)}
    projection = np.zeros((vocab, dim), dtype=np.float32)
    for i, piece in enumerate(pieces):
        target = DICTIONARY.get(piece, piece)
        projection[index.get(target, i), i] = 10.0
    _set_linear(decoder.projection, projection)


def build_argos_package(dest: Path, from_code: str = "en", to_code: str = "es",
                        from_name: str = "English", to_name: str = "Spanish") -> Path:
    """Write `dest` (an .argosmodel zip) and return it."""
    sp_model = train_sentencepiece()
    root = f"translate-{from_code}_{to_code}-1_0"
    staging = dest.parent / f".{dest.stem}-build"
    model_dir = build_model(_pieces(sp_model), staging / "model")
    metadata = {"package_version": "1.0", "argos_version": "1.11", "type": "translate",
                "from_code": from_code, "to_code": to_code, "from_name": from_name,
                "to_name": to_name, "links": []}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/metadata.json", json.dumps(metadata, indent=2))
        zf.writestr(f"{root}/sentencepiece.model", sp_model)
        zf.writestr(f"{root}/README.md", "Test package built by dubfleet's test suite.\n")
        for path in sorted(model_dir.iterdir()):
            zf.write(path, f"{root}/model/{path.name}")
    return dest
