"""The token loop: llama.cpp's own decode and sampler chain through llama-cpp-python's low-level
bindings. One `llama_decode` per token on a reused one-token batch; the sampler reads the logits
where llama.cpp left them, so nothing is copied out per token (`Llama.generate` copied every
token's logits into a numpy array, and ran its bookkeeping in Python: see the README's
Performance section for what that cost).

`Llama` still loads the model and tokenises, and its chat template and metadata format prompts;
its own generation state is not used. What the KV cache holds is tracked here, in `kv`.
"""

from __future__ import annotations

import codecs
import ctypes
import math
from collections import deque
from typing import Any

from tui.engine.events import SamplingParams

PENALTY_LAST_N = 64  # tokens the repeat penalty looks back over, as llama-cpp-python's default
PIECE_BYTES = 256  # a token's text is far shorter; a longer one is read again with its real size
TOP_ALTERNATIVES = 5  # the likeliest tokens recorded beside each token, when log-probabilities are asked for


class DecodeError(RuntimeError):
    """llama_decode failed (or was aborted by a cancel)."""


class TokenRecord:
    """A reply's tokens with their log-probabilities, when the request asks (`TurnRequest.logprobs`):
    per token `[text, logprob, [[text, logprob], ...]]`, its alternatives likeliest first.

    The log-probabilities are the model's own: the softmax of its logits, before the repeat
    penalty, temperature, top-k, top-p and min-p change what is drawn from. A token's text is
    what it adds to the reply: a byte that starts a longer character (an emoji is often made of
    several byte tokens) adds "", the one that ends it the whole character, so the texts join
    into the reply. An alternative stands alone: bytes of it that are not whole UTF-8 show as escapes."""

    def __init__(self) -> None:
        self.tokens: list[list[Any]] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, piece: bytes, logprob: float, alternatives: list[tuple[bytes, float]]) -> None:
        texts = [[alternative.decode("utf-8", errors="backslashreplace"), p] for alternative, p in alternatives]
        self.tokens.append([self._decoder.decode(piece), logprob, texts])


class Sampler:
    """llama.cpp's sampler chain for one reply, in llama-cpp-python's order (so a seed gives the
    same reply as `Llama.generate` did): repeat penalty, then greedy at temperature 0, else
    top-k, top-p, min-p, temperature and a seeded draw.

    At temperature 0 the same choice is made here instead, from the logits in place: the chain
    first copies every token's logit into a candidate list, which for a 262k-token vocabulary
    (Gemma 3) took 2.2 ms of a 24 ms token; the largest logit, after the repeat penalty, takes
    a tenth of that."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        import llama_cpp

        self.n_vocab = n_vocab
        self.greedy = params.temperature == 0
        self.penalty = params.repeat_penalty
        self.recent: deque[int] = deque(maxlen=PENALTY_LAST_N)  # the tokens sampled last, repeats too
        self.chain = None
        if self.greedy:
            return
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        # The vendored llama.cpp still takes n_vocab first.
        add(self.chain, llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0, 0))
        add(self.chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(self.chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(self.chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(self.chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(self.chain, llama_cpp.llama_sampler_init_dist(params.seed if params.seed is not None else 0))

    def sample(self, ctx: Any) -> int:
        """The next token, from the logits of the last token decoded (and accepted into the chain)."""
        import llama_cpp

        if self.chain is not None:
            return int(llama_cpp.llama_sampler_sample(self.chain, ctx, -1))
        return self._greedy(llama_cpp.llama_get_logits_ith(ctx, -1))

    def _greedy(self, pointer: Any) -> int:
        """The largest logit (the first of equals), with llama.cpp's repeat penalty applied, in
        float32 as it does, to the tokens among the last PENALTY_LAST_N sampled."""
        import numpy as np

        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        if self.penalty != 1.0 and self.recent:
            logits = logits.copy()  # llama.cpp's buffer stays as it was, for top_alternatives
            seen = np.unique(np.fromiter(self.recent, dtype=np.int64))
            penalty = np.float32(self.penalty)
            logits[seen] = np.where(logits[seen] <= 0, logits[seen] * penalty, logits[seen] / penalty)
        token = int(np.argmax(logits))
        self.recent.append(token)
        return token

    def close(self) -> None:
        import llama_cpp

        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


class TokenLoop:
    """Decoding on one model's context: prompts in batches, then one token at a time."""

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self.llm = llm
        self.ctx = llm.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = llm.n_ctx()
        self.n_batch = llm.n_batch
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.kv: list[int] = []  # the tokens the KV cache holds, in order
        self._one = (llama_cpp.llama_token * 1)()  # the reused one-token batch
        self._one_batch = llama_cpp.llama_batch_get_one(self._one, 1)
        self._piece = ctypes.create_string_buffer(PIECE_BYTES)

    def keep_prefix(self, tokens: list[int]) -> int:
        """Forget what the cache holds beyond the start `tokens` share with it (at least the last
        token of `tokens` is evaluated again, for its logits); returns how many are kept."""
        keep = 0
        for held, wanted in zip(self.kv, tokens[:-1], strict=False):
            if held != wanted:
                break
            keep += 1
        if not self._forget_from(keep):
            # llama.cpp could not remove them (a cache kind that cannot): start afresh.
            self.reset()
            return 0
        return keep

    def _forget_from(self, position: int) -> bool:
        """Drop what the cache holds from `position` on; False if llama.cpp could not."""
        import llama_cpp

        if position < len(self.kv):
            if not llama_cpp.llama_memory_seq_rm(self.memory, 0, position, -1):
                return False
            del self.kv[position:]
        return True

    def evaluate(self, tokens: list[int]) -> None:
        """Decode tokens after those the cache holds, `n_batch` at a time; the logits of the last
        are then ready to sample."""
        import llama_cpp

        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            self._decode(llama_cpp.llama_batch_get_one(array, len(chunk)))
            self.kv += chunk

    def step(self, token: int) -> None:
        """Decode one token: the one just sampled."""
        self._one[0] = token
        self._decode(self._one_batch)
        self.kv.append(token)

    def score(self, prompt: list[int], continuations: list[list[int]]) -> list[list[float]]:
        """Teacher forcing: the log-probability of each token of each continuation after `prompt`.

        The prompt must be what the cache holds, just evaluated: the logits of its last token give
        every continuation's first token. The rest of a continuation is decoded in one batch with
        logits at every position (each gives the next token's), then dropped again, so the cache
        holds the prompt for the next continuation and afterwards. A single-token continuation
        costs no decode at all."""
        if self.kv != prompt:
            raise ValueError("score needs the prompt evaluated first, and nothing after it")
        logits, log_total = self._log_softmax(-1)
        scores = [[float(logits[continuation[0]]) - log_total] for continuation in continuations]
        for continuation, logprobs in zip(continuations, scores, strict=True):
            inputs, targets = continuation[:-1], continuation[1:]
            for start in range(0, len(inputs), self.n_batch):
                chunk = inputs[start : start + self.n_batch]
                self._decode_with_logits(chunk)
                for index, token in enumerate(targets[start : start + len(chunk)]):
                    logits, log_total = self._log_softmax(index)
                    logprobs.append(float(logits[token]) - log_total)
            if not self._forget_from(len(prompt)):
                self.reset()
                raise DecodeError("llama.cpp could not drop a scored continuation from the cache")
        return scores

    def _decode_with_logits(self, tokens: list[int]) -> None:
        """Decode tokens after those the cache holds, in one batch, keeping the logits of every
        position (llama_batch_get_one keeps only the last's)."""
        import llama_cpp

        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            for index, token in enumerate(tokens):
                batch.token[index] = token
                batch.pos[index] = len(self.kv) + index
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = 0
                batch.logits[index] = 1
            batch.n_tokens = len(tokens)
            self._decode(batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        self.kv += tokens

    def _log_softmax(self, index: int) -> tuple[Any, float]:
        """The logits of the batch position `index` of the last decode (read in place: valid until
        the next decode), and the log of their softmax's denominator: a token's log-probability is
        its logit minus that."""
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
        top = float(logits.max())
        return logits, top + math.log(float(np.exp(logits - top, dtype=np.float64).sum()))

    def _decode(self, batch: Any) -> None:
        import llama_cpp

        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            # Whatever the failed batch left in the cache is not what `kv` says: forget it all.
            self.reset()
            raise DecodeError(f"llama_decode returned {status}")

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int, special: bool = False) -> bytes:
        """The token's text as bytes (a character may span several tokens); `special`: a control
        token's too (e.g. "<|im_end|>"), which a reply leaves out."""
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, PIECE_BYTES, 0, special)
        if n < 0:  # longer than the buffer: -n is its size
            longer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, longer, -n, 0, special)
            return longer.raw[:n]
        return self._piece.raw[:n]

    def top_alternatives(self, chosen: int, k: int = TOP_ALTERNATIVES) -> tuple[float, list[tuple[int, float]]]:
        """The chosen token's log-probability and the `k` likeliest tokens with theirs, from the
        logits of the last token decoded (read in place). Off the hot path: only called when asked,
        and before the next `step`."""
        import numpy as np

        logits, log_total = self._log_softmax(-1)
        best = np.argpartition(logits, -k)[-k:]  # the k largest, in no order (no negated copy of the vocabulary)
        best = best[np.argsort(-logits[best])]
        return float(logits[chosen]) - log_total, [(int(t), float(logits[t]) - log_total) for t in best]

    def reset(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)
        self.kv.clear()
