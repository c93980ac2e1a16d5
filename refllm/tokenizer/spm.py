"""SentencePiece-BPE on one text fragment, as llama.cpp's ``llm_tokenizer_spm_session`` does it.

The input is one fragment of text that contains no special token, with spaces already replaced by ``▁`` (and a
leading ``▁`` added when the fragment follows the start of the input or a special token; see
:mod:`refllm.tokenizer.tokenizer`).  Two interchangeable implementations:

* :func:`spm_tokenize` — a line-by-line Python port of ``src/llama-vocab.cpp:111-233``.  It is the specification.
* :class:`BPEEngine` — the same algorithm run by the Rust ``tokenizers`` library (``models.BPE`` with byte
  fallback and a merge list derived from the scores).  It is faster; the tests check that it gives the same ids.

The algorithm
-------------
1. Split the fragment into characters (UTF-8 code points).  Each one is a *symbol* in a doubly linked list.
2. For every pair of neighbouring symbols whose concatenation is a token of the vocabulary, push a *bigram* on a
   max-heap, keyed by that token's score.  (Any token counts, whatever its type.)
3. Pop the best bigram: the highest score; among equal scores the **leftmost** one.  If one of its two symbols has
   changed since it was pushed (merged away, or grown), it is stale: skip it.  Otherwise merge the right symbol
   into the left one and push the bigrams the new symbol forms with its neighbours.  Repeat until the heap is
   empty.
4. Emit each remaining symbol: its token if it is one; otherwise (a single character the vocabulary does not have,
   like ``\\n`` or most emoji) **byte fallback**: the tokens ``<0xXX>`` of its UTF-8 bytes.

For Phi-3 the scores are minus the BPE merge ranks, so step 3 replays SentencePiece's merges in training order,
and ``<unk>`` is never produced.  One tie matters: the 16 whitespace tokens ``▁``, ``▁▁``, …, ``▁`` × 16 all have
score -1e9 (the LLaMA tokenizer's quirk), so they merge last, and a run of spaces is grouped greedily from the left
in chunks of 16: ``▁`` × 20 → [``▁`` × 16, ``▁▁▁▁``].

(llama.cpp also keeps a ``rev_merge`` table to undo merges whose result is not a token.  With valid UTF-8 input
every merged symbol is a token, so that path never runs and is left out here.)
"""

from __future__ import annotations

import functools
import heapq

from .vocab import Vocab


def spm_tokenize(text: str, vocab: Vocab) -> list[int]:
    """Token ids of one ``▁``-escaped fragment (the Python port of llama.cpp's SPM session)."""
    if not text:
        return []
    token_to_id, scores = vocab.token_to_id, vocab.scores
    n = len(text)
    # the symbols: text[start[i] : start[i] + size[i]], linked by prev/next (-1 = none); size 0 = merged away
    start = list(range(n))
    size = [1] * n
    prev = list(range(-1, n - 1))
    next_ = list(range(1, n + 1))
    next_[-1] = -1
    heap: list[tuple[float, int, int, int]] = []  # (-score, left, right, length of the merged text)

    def try_add_bigram(left: int, right: int) -> None:
        if left == -1 or right == -1:
            return
        merged = text[start[left] : start[left] + size[left] + size[right]]
        tid = token_to_id.get(merged)
        if tid is not None:
            heapq.heappush(heap, (-scores[tid], left, right, len(merged)))

    for i in range(1, n):
        try_add_bigram(i - 1, i)

    while heap:
        _, left, right, length = heapq.heappop(heap)
        if size[left] == 0 or size[right] == 0 or size[left] + size[right] != length:
            continue  # stale: one of the two symbols changed after this bigram was pushed
        size[left] += size[right]
        size[right] = 0
        next_[left] = next_[right]
        if next_[right] >= 0:
            prev[next_[right]] = left
        try_add_bigram(prev[left], left)
        try_add_bigram(left, next_[left])

    out: list[int] = []
    i = 0
    while i != -1:
        piece = text[start[i] : start[i] + size[i]]
        tid = token_to_id.get(piece)
        if tid is not None:
            out.append(tid)
        else:  # byte fallback (only single characters get here)
            out.extend(vocab.byte_to_token(b) for b in piece.encode("utf-8"))
        i = next_[i]
    return out


class BPEEngine:
    """The SPM algorithm run by the ``tokenizers`` library.

    ``tokenizers.models.BPE`` applies merges by *rank* (lowest first, leftmost among equal ranks) to a word split
    into characters (missing characters become ``<0xXX>`` byte tokens: ``byte_fallback=True``).  The merge list is
    derived from the scores, as transformers' ``LlamaConverter`` / GGUF loader derive it: for every token, every
    split into two tokens is a merge, ranked by the token's score, highest first.

    The one thing ranks cannot express is a tie between *different* tokens: llama.cpp then takes the leftmost
    bigram, whatever the pair.  Phi-3 has one such tie that matters: the 16 whitespace-run tokens ``▁▁`` … ``▁`` × 16
    all score -1e9.  (Other equal scores — ``ting`` and the control tokens at -1000, ``[PAD…]`` at -10000, the byte
    tokens at 0 — involve at most one token that merges can build.)  For a tied group of runs of one character the
    list keeps only the splits "run minus one character" + "one character", longest run first: a run then grows one
    character at a time from its left end up to the longest token, exactly as llama.cpp grows it.  Any other kind of
    tie makes the merge list inexact: :attr:`exact` is then False and :class:`~refllm.tokenizer.Tokenizer` uses the
    Python engine instead.
    """

    def __init__(self, vocab: Vocab):
        from tokenizers.models import BPE

        self.vocab = vocab
        merges, self.exact = self.merges(vocab)
        self.model = BPE(vocab=dict(vocab.token_to_id), merges=merges, byte_fallback=True, fuse_unk=False,
                         dropout=None)

    @staticmethod
    def merges(vocab: Vocab) -> tuple[list[tuple[str, str]], bool]:
        """The merge list, best first, and whether it reproduces llama.cpp exactly."""
        return _merges(tuple(vocab.tokens), tuple(vocab.scores))

    def __call__(self, text: str) -> list[int]:
        if not text:
            return []
        return [t.id for t in self.model.tokenize(text)]


@functools.lru_cache(maxsize=4)  # the same vocabulary is often opened more than once (whitespace modes, tests)
def _merges(tokens: tuple[str, ...], scores: tuple[float, ...]) -> tuple[list[tuple[str, str]], bool]:
    """See :class:`BPEEngine`: every split of every token into two tokens, ranked by the token's score."""
    token_to_id = {text: i for i, text in enumerate(tokens)}

    def splits(text: str) -> list[tuple[str, str]]:
        return [(text[:k], text[k:]) for k in range(1, len(text))
                if text[:k] in token_to_id and text[k:] in token_to_id]

    by_score: dict[float, list[tuple[str, list]]] = {}
    for text, tid in token_to_id.items():
        pairs = splits(text)
        if pairs:  # a token that merges can build
            by_score.setdefault(scores[tid], []).append((text, pairs))
    merges: list[tuple[str, str]] = []
    exact = True
    for score in sorted(by_score, reverse=True):
        group = by_score[score]
        if len(group) == 1:
            merges.extend(group[0][1])
        elif all(len(set(text)) == 1 for text, _ in group):  # runs of one character: grow from the left
            for text, pairs in sorted(group, key=lambda g: -len(g[0])):
                if (text[:-1], text[-1]) in pairs:
                    merges.append((text[:-1], text[-1]))
                else:  # a run that cannot grow one character at a time: the ranks cannot follow llama.cpp
                    exact = False
                    merges.extend(pairs)
        else:
            exact = False
            for _, pairs in group:
                merges.extend(pairs)
    return merges, exact
