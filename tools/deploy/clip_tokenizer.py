# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""CLIP's byte-level BPE tokenizer without torch (numpy output), for ONNX deployment.

open_clip's ``SimpleTokenizer`` returns torch tensors and ``import open_clip`` imports torch,
so the ONNX runtime side cannot use it. This is a from-scratch implementation of the same
tokenisation (CLIP's published algorithm): text cleaning (ftfy, HTML unescaping, whitespace
collapsing, lower case), CLIP's pre-tokenisation pattern, byte-to-unicode mapping, greedy
lowest-rank BPE merges, ``<start_of_text>`` / ``<end_of_text>``, truncation to the context
length with the last token forced to ``<end_of_text>``, zero padding.

The merges file is the one open_clip ships (``bpe_simple_vocab_16e6.txt.gz``);
``tools/deploy/export_onnx.py`` copies it next to the ONNX files. Equality with open_clip's
tokenizer is tested on every class name the package ships, in every template, and on
unicode, punctuation and over-long text (``tests/tools/test_onnx_export.py``).

Needs only ``numpy``, ``ftfy`` and ``regex`` (already requirements of the package).
"""
import gzip
import html
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ['ClipTokenizer', 'NUM_MERGES']

#: Merges of CLIP's vocabulary used by the model: 49152 tokens = 256 bytes x 2 (with and
#: without the end-of-word mark) + merges + 2 special tokens.
NUM_MERGES = 49152 - 256 - 2
_SPECIALS = ('<start_of_text>', '<end_of_text>')
_WORD_END = '</w>'


def _byte_alphabet() -> Dict[int, str]:
    """Every byte value -> one printable unicode character (CLIP's reversible mapping):
    printable Latin-1 bytes map to themselves, the others to code points 256, 257, ..."""
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    # CLIP's vocabulary lists the printable bytes first, then the remapped ones
    order = printable + [b for b in range(256) if b not in printable]
    return {b: table[b] for b in order}


class ClipTokenizer:
    """Text -> CLIP token ids as an int64 numpy array [n, context_length].

    Args:
        bpe_path (str): CLIP's merges file (``bpe_simple_vocab_16e6.txt.gz`` or the text).
        context_length (int): Tokens per text (CLIP: 77).
    """

    def __init__(self, bpe_path: str, context_length: int = 77):
        import regex
        opener = gzip.open if bpe_path.endswith('.gz') else open
        with opener(bpe_path, 'rb') as f:
            lines = f.read().decode('utf-8').split('\n')
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f'{bpe_path!r} is not CLIP\'s BPE merges file (expected '
                             f'{NUM_MERGES} merge lines after a header).')
        self.byte_chars = _byte_alphabet()
        symbols = list(self.byte_chars.values())
        vocab = symbols + [s + _WORD_END for s in symbols] + [a + b for a, b in merges]
        vocab += list(_SPECIALS)
        self.token_id = {tok: i for i, tok in enumerate(vocab)}
        self.merge_rank = {pair: i for i, pair in enumerate(merges)}
        self.sot, self.eot = self.token_id[_SPECIALS[0]], self.token_id[_SPECIALS[1]]
        self.context_length = int(context_length)
        self._pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
            r"[^\s\p{L}\p{N}]+", regex.IGNORECASE)
        self._memo: Dict[str, Tuple[str, ...]] = {s: (s, ) for s in _SPECIALS}

    @staticmethod
    def clean(text: str) -> str:
        """ftfy repair, HTML unescaping (twice), whitespace collapsed, lower case."""
        import ftfy
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return ' '.join(text.split()).strip().lower()

    def _merge(self, word: str) -> Tuple[str, ...]:
        """Byte-mapped word -> its BPE symbols (repeatedly join the best-ranked pair)."""
        if word in self._memo:
            return self._memo[word]
        parts = list(word[:-1]) + [word[-1] + _WORD_END]
        while len(parts) > 1:
            ranked = [(self.merge_rank[pair], pair) for pair in zip(parts[:-1], parts[1:])
                      if pair in self.merge_rank]
            if not ranked:
                break
            first, second = min(ranked)[1]
            merged, i = [], 0
            while i < len(parts):  # join every non-overlapping occurrence, left to right
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._memo[word] = tuple(parts)
        return self._memo[word]

    def encode(self, text: str) -> List[int]:
        """Token ids of one text, without start/end tokens."""
        ids = []
        for piece in self._pattern.findall(self.clean(text)):
            word = ''.join(self.byte_chars[b] for b in piece.encode('utf-8'))
            ids.extend(self.token_id[s] for s in self._merge(word))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids int64 [len(texts), context_length]: start, text, end, zeros."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot
            out[row, :len(ids)] = ids
        return out
