"""Chat messages to one prompt: the checkpoint's own chat template, or a plain one.

A Hugging Face checkpoint ships its template (Jinja) in tokenizer_config.json; it is rendered in
Jinja's sandbox as transformers does, with `add_generation_prompt=True` so the text ends where
the assistant's answer begins. The embedded model was trained on plain text, so it gets
"role: content" lines and a final "assistant:". Notebook 03.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def load_chat_template(model_path: str | Path) -> tuple[str, dict]:
    """The template of the checkpoint in `model_path` (else the plain one) and its specials."""
    path = Path(model_path) / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: take "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    specials = {k: config.get(k) for k in ("bos_token", "eos_token")}
    specials = {k: v.get("content") if isinstance(v, dict) else v for k, v in specials.items()}
    return (template if isinstance(template, str) else PLAIN_TEMPLATE), specials


class ChatTemplate:
    def __init__(self, model_path: str | Path) -> None:
        self.source, self.specials = load_chat_template(model_path)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(self.source)

    def render(self, messages: list[dict]) -> str:
        """The prompt text for `messages` ([{"role", "content"}]), ready for the answer."""
        return self.template.render(messages=messages, add_generation_prompt=True, **self.specials)
