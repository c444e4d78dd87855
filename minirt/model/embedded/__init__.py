"""The models that ship inside the package: a byte-level Qwen3 target and its distilled draft.

Each folder is a standard Hugging Face checkpoint (`transformers` and `minirt` load the same
files), made by `python -m minirt.model.train`; notebook 01 (the embedded model) starts here.
"""

from pathlib import Path

EMBEDDED_DIR = Path(__file__).parent
TARGET_DIR = EMBEDDED_DIR / "target"
DRAFT_DIR = EMBEDDED_DIR / "draft"
MANIFEST_PATH = EMBEDDED_DIR / "corpus_manifest.json"
