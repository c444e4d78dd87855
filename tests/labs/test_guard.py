"""The grading guard refuses code that hands minirt's graded part back as the learner's own, and
says what it found, where, and why; the solutions and ordinary code pass."""

from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab01
from minirt.grading.guard import Forbidden, check_instance, check_objects, check_source

ROOT = Path(__file__).resolve().parents[2]
RADIX = Forbidden(
    modules=("minirt.kv.radix_cache", "minirt.kv.radix_tree", "minirt.kv.caches"),
    names=("RadixCache", "RadixNode", "PREFIX_CACHES", "make_prefix_cache"),
    strings=("radix",),
    what="minirt's radix cache",
)

CHEATS = {
    "from-import": "from minirt.kv.radix_cache import RadixCache",
    "import-as": "import minirt.kv.radix_tree as rt",
    "package export": "from minirt.kv import RadixCache as Mine",
    "module from package": "from minirt.kv import radix_cache",
    "attribute": "import minirt\nX = minirt.kv.RadixCache",
    "registry by name": "from minirt import LLM\nllm = LLM(prefix_cache='radix')",
    "registry function": "from minirt.kv import caches\nc = caches.make_prefix_cache",
    "__import__": "m = __import__('minirt.kv.radix' + '_cache')",
    "importlib": "import importlib\nm = importlib.import_module('minirt.kv.radix_' + 'cache')",
    "getattr": "import minirt.kv as kv\nC = getattr(kv, 'Radix' + 'Cache')",
    "exec": "exec('from minirt.kv.radix_cache import Radix' + 'Cache')",
    "sys.modules": "import sys\nm = sys.modules['minirt.kv']",
    "module path string": "name = 'minirt.kv.radix_tree'",
    # the grader and the engine must run as shipped, whatever the lab grades
    "the grader's runner": "from minirt.grading import runner",
    "the grader as a module": "import minirt.grading.lab06 as g",
    "the grader by attribute": "import minirt\nf = minirt.grading",
    "a patched module": "import minirt.kv.block_manager as b\nb.BlockManager.evict = print",
    "a patched import": "from minirt import LLM\nLLM.generate = print",
    "setattr on a module": "import torch\nsetattr(torch, 'softmax', print)",
    "a function's globals": "g = print.__globals__",
    "the class tree": "classes = object.__subclasses__()",
    "the grader's frame": "import sys\nconn = sys._getframe(2).f_locals['conn']",
}


@pytest.mark.parametrize("code", CHEATS.values(), ids=CHEATS.keys())
def test_a_cheating_cell_is_refused_with_its_line_and_why(code):
    refusals = check_source([(7, "x = 1\n" + code)], RADIX)
    assert refusals, code
    text = str(refusals[0])
    assert text.startswith("cell 7, line ") and "refused" in text
    assert int(text.split("line ")[1].split(":")[0]) >= 2  # the line of the cheat, not line 1


def test_ordinary_learner_code_passes_the_source_check():
    code = """
from collections import OrderedDict
import heapq
from minirt.kv.prefix_cache import PrefixCacheHooks

class MyCache(PrefixCacheHooks):
    def match(self, tokens):
        node = getattr(self, "root", None)
        return heapq.nsmallest(1, [len(tokens)]), OrderedDict(), node
"""
    assert check_source([(1, code)], RADIX) == []
    assert check_source([(1, "this is ( not python")], RADIX) == []  # reported when it runs
    own = """
from minirt.grading import self_check

class Mine:
    def __init__(self):
        self.clock = 0
        self.tables = {}

    def tick(self, seq_id):
        self.clock += 1
        self.tables[seq_id] = [self.clock]
"""
    assert check_source([(1, own)], RADIX, imported={"torch", "LLM"}) == []
    env = 'import os\nos.environ["TRITON_INTERPRET"] = "1"'  # a setting, not a patch
    assert check_source([(1, env)], RADIX) == []


def test_patching_a_name_another_cell_imported_is_refused():
    refusals = check_source([(9, "x = 1\nLLM.generate = print")], RADIX, imported={"LLM"})
    assert [r.where for r in refusals] == ["cell 9, line 2"]
    assert "changes what was imported" in str(refusals[0])


def test_objects_from_the_graded_module_are_refused_however_they_were_reached():
    import importlib

    radix = importlib.import_module("minirt.kv.radix_cache")
    tree = importlib.import_module("minirt.kv.radix_tree")

    class Sub(radix.RadixCache):  # a subclass: RadixCache is in its MRO
        pass

    cell = {"walk": tree.match}  # a notebook's namespace, the graded function under a new name
    exec("def delegating(root, tokens):\n    return walk(root, tokens)", cell)
    objects = {"Cache": radix.RadixCache, "Sub": Sub, "match": tree.match, "f": cell["delegating"]}
    found = check_objects(objects, RADIX)
    where = {r.where for r in found}
    assert where == {"Cache", "Sub", "match", "f"}
    assert "minirt.kv.radix_cache.RadixCache" in str(next(r for r in found if r.where == "Sub"))

    class Wrapper:  # an object that holds a RadixCache and forwards to it
        def __init__(self):
            self.inner = radix.RadixCache(4, 4)

    assert "cache.inner" in [r.where for r in check_instance("cache", Wrapper(), RADIX)]
    assert check_instance("cache", object(), RADIX) == []


def test_lab01_delegating_to_minirt_is_refused_on_every_task(tmp_path):
    nb = nbformat.read(ROOT / "labs" / "source" / "lab01_kv_blocks.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "def kv_bytes_per_token" in c.source)
    cell.source = cell.source.replace(
        "return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes",
        "return kv_cache_bytes_per_token(None, None)",
    )
    path = tmp_path / "lab01_kv_blocks.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=0)
    assert report.score == 0
    assert {r.status for r in report.results} == {"refused"}
    message = report.results[0].message
    assert "kv_cache_bytes_per_token" in message and "refused" in message and "line 5" in message


def test_lab01_objects_check_catches_what_the_source_check_cannot_see():
    class BlockAllocator(lab01.BlockManager):  # as if built from a string the AST cannot read
        pass

    found = check_objects({"BlockAllocator": BlockAllocator}, lab01.FORBIDDEN)
    assert found and "BlockManager" in str(found[0])
    cell = {}  # task 3 builds its chain with minirt's block_hash: allowed
    exec("from minirt.kv import block_hash\ndef chain_hashes(t, b):\n    block_hash(None, t)", cell)
    assert check_objects({"chain_hashes": cell["chain_hashes"]}, lab01.FORBIDDEN) == []


def test_a_part_held_in_a_default_argument_or_a_class_attribute_is_refused():
    cell = {"BlockManager": lab01.BlockManager}
    exec("def books(n, b, _make=BlockManager):\n    return _make(n, b)", cell)
    exec("def kw(n, *, _make=BlockManager):\n    return _make(n, 4)", cell)
    exec("class Books:\n    impl = BlockManager\n    def make(self):\n        return 1", cell)
    found = check_objects({k: cell[k] for k in ("books", "kw", "Books")}, lab01.FORBIDDEN)
    assert {r.where for r in found} == {"books", "kw", "Books.impl"}
    assert all("minirt.kv.block_manager" in str(r) or "BlockManager" in str(r) for r in found)
    exec("def fine(n, b, size=16):\n    return n * b * size", cell)
    assert check_objects({"fine": cell["fine"]}, lab01.FORBIDDEN) == []
