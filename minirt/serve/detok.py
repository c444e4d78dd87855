"""Streaming text: the new characters each step adds, and at the end exactly `generate()`'s text.

Two things may not be sent early: an incomplete UTF-8 character (decoded as U+FFFD until its
last byte arrives) and the start of a stop string (the answer ends before it). So while a request
runs, the last `len(longest stop) - 1` characters wait; the final piece is cut the way
`LLM.generate` cuts it (no EOS, nothing from the first stop string on).

Decoding all of a request's tokens at every step costs O(length) per token, O(length^2) per
answer: at a few thousand tokens/s that alone can take most of the server's one Python thread.
So each step decodes a short window only, as vLLM's detokenizer does: the tokens from
`prefix_offset` on, against the same window without the new tokens; the difference is the new
text. The window restarts where the text last ended on a whole character. Notebook 03.
"""

from __future__ import annotations

from minirt.sampling_params import SamplingParams


class IncrementalText:
    def __init__(self, tokenizer, eos_ids: set[int], params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.params = params
        self.token_ids: list[int] = []
        self.text = ""  # decoded so far, whole characters only
        self.sent = ""  # the text handed out so far (a prefix of `text`)
        self.prefix_offset = 0  # the decode window starts here...
        self.read_offset = 0  # ...and `text` covers the tokens before this one
        self.hold = max((len(s) for s in params.stop), default=1) - 1

    def add(self, token_ids: list[int], finished: bool) -> str:
        """Append a step's tokens; return the text that may be sent now."""
        self.token_ids += token_ids
        if finished:
            text = self.final_text()
        else:
            self._decode_new()
            text = self._safe_text()
        if not text.startswith(self.sent):  # a tokenizer whose text changed behind us
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta

    def final_text(self) -> str:
        ids = self.token_ids
        if ids and ids[-1] in self.eos_ids and not self.params.ignore_eos:
            ids = ids[:-1]  # the EOS token is not part of the text
        text = self.tokenizer.decode(ids)
        for s in self.params.stop:
            if s in text:
                text = text[: text.index(s)]
        return text

    def _decode_new(self) -> None:
        ids = self.token_ids
        before = self.tokenizer.decode(ids[self.prefix_offset : self.read_offset])
        after = self.tokenizer.decode(ids[self.prefix_offset :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(ids)

    def _safe_text(self) -> str:
        text = self.text
        # the engine stops this step on a stop string; never send past it meanwhile (only the
        # tail can hold a new one: the rest was searched before)
        start = max(0, len(self.sent) - self.hold)
        for s in self.params.stop:
            at = text.find(s, start)
            if at >= 0:
                text = text[:at]
        return text[: max(0, len(text) - self.hold)]
