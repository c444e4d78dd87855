"""Streaming text: the new characters each step adds, and at the end exactly `generate()`'s text.

Two things may not be sent early: an incomplete UTF-8 character (decoded as U+FFFD until its
last byte arrives) and the start of a stop string (the answer ends before it). So while a request
runs, the last `len(longest stop) - 1` characters wait; the final piece is cut the way
`LLM.generate` cuts it (no EOS, nothing from the first stop string on). Notebook 03.
"""

from __future__ import annotations

from minirt.sampling_params import SamplingParams


class IncrementalText:
    def __init__(self, tokenizer, eos_ids: set[int], params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.params = params
        self.token_ids: list[int] = []
        self.sent = ""  # the text handed out so far

    def add(self, token_ids: list[int], finished: bool) -> str:
        """Append a step's tokens; return the text that may be sent now."""
        self.token_ids += token_ids
        text = self.final_text() if finished else self._safe_text()
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

    def _safe_text(self) -> str:
        text = self.tokenizer.decode(self.token_ids).rstrip("\ufffd")
        for s in self.params.stop:  # the engine stops this step; never send past it meanwhile
            if s in text:
                text = text[: text.index(s)]
        hold = max((len(s) for s in self.params.stop), default=1) - 1
        return text[: max(0, len(text) - hold)]
