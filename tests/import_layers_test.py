"""The package layout's rules, read from the imports of im2txt/ and beam_jobs/ (no code is run).

- No import cycle between modules.
- Imports point down the layers: the shared contracts at the root of im2txt/ import only each
  other; a sub-package of im2txt/ never imports a binary; and the sub-packages, taken as one
  node each, form no cycle either (model <- data <- training, model <- inference <- evaluation,
  ...).
- im2txt/ itself holds only the binaries and the shared contracts.
"""

import ast
import os
import tempfile
import unittest
from typing import Dict, List, Optional, Set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("im2txt", "beam_jobs")
# The shared contracts that stay at im2txt's root: everything else there is a binary.
CONTRACTS = {"im2txt.checkpoint_files", "im2txt.concepts", "im2txt.configuration",
             "im2txt.file_io", "im2txt.quiet_start", "im2txt.references",
             "im2txt.sequence_example",
             "im2txt.vocabulary"}
BINARIES = {"im2txt.console", "im2txt.convert_checkpoint", "im2txt.evaluate",
            "im2txt.export_saved_model", "im2txt.run_inference", "im2txt.score_captions",
            "im2txt.train"}


def find_modules(root: str, packages=PACKAGES) -> Dict[str, str]:
  """Dotted module name -> file, for every .py file under the packages (a package is its
  __init__)."""
  modules = {}
  for package in packages:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for name in files:
        if not name.endswith(".py"):
          continue
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        modules[dotted.removesuffix(".__init__")] = path
  return modules


def import_graph(modules: Dict[str, str]) -> Dict[str, Set[str]]:
  """Module -> the project modules it imports, anywhere in the file (function bodies and
  TYPE_CHECKING blocks included: a cycle hidden there is still a cycle)."""

  def resolve(name: str) -> Optional[str]:
    while name and name not in modules:
      name = name.rpartition(".")[0]
    return name or None

  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(resolve(alias.name) for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for alias in node.names:  # `from pkg import module` imports pkg.module
          full = f"{node.module}.{alias.name}"
          targets.add(full if full in modules else resolve(node.module))
    targets.discard(None)
    targets.discard(module)
    graph[module] = targets
  return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
  """One cycle of the graph as [a, b, ..., a], or None (depth-first search)."""
  state: Dict[str, int] = {}  # 1: on the current path, 2: done
  path: List[str] = []

  def visit(node: str) -> Optional[List[str]]:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def layer(module: str) -> str:
  """The node a module belongs to in the layer graph: its sub-package of im2txt (im2txt.model,
  ...), else the module itself (the root's binaries and contracts, beam_jobs' modules)."""
  parts = module.split(".")
  if parts[0] == "im2txt" and len(parts) > 2:
    return ".".join(parts[:2])
  return module


def layer_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
  layers: Dict[str, Set[str]] = {}
  for module, targets in graph.items():
    here = layer(module)
    layers.setdefault(here, set()).update(layer(t) for t in targets if layer(t) != here)
  return layers


class ImportLayersTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.modules = find_modules(REPO)
    cls.graph = import_graph(cls.modules)

  def test_reads_the_imports(self):
    # The checker sees what the code does (or every other assertion here would pass vacuously).
    self.assertIn("im2txt.training.train_options", self.graph["im2txt.training.train_state"])
    self.assertIn("im2txt.training.trainer", self.graph["im2txt.train"])
    self.assertIn("beam_jobs.build_report", self.graph["im2txt.evaluation.caption_scoring"])

  def test_no_module_cycle(self):
    self.assertIsNone(find_cycle(self.graph))

  def test_no_layer_cycle(self):
    self.assertIsNone(find_cycle(layer_graph(self.graph)))

  def test_contracts_import_only_contracts(self):
    for module in CONTRACTS:
      self.assertLessEqual(self.graph[module], CONTRACTS, module)

  def test_nothing_imports_a_binary(self):
    for module, targets in self.graph.items():
      if module not in BINARIES:
        self.assertFalse(targets & (BINARIES - {"im2txt.console"}), module)

  def test_root_holds_only_binaries_and_contracts(self):
    root = {m for m in self.modules if m.count(".") == 1 and m.startswith("im2txt.")
            and not os.path.basename(self.modules[m]) == "__init__.py"}
    self.assertEqual(root, CONTRACTS | BINARIES)

  def test_finds_a_cycle_when_there_is_one(self):
    with tempfile.TemporaryDirectory() as tmp:
      os.makedirs(os.path.join(tmp, "pkg", "sub"))
      files = {"pkg/__init__.py": "", "pkg/sub/__init__.py": "",
               "pkg/a.py": "from pkg.sub import b\n",
               "pkg/sub/b.py": "def f():\n  from pkg import c\n",
               "pkg/c.py": "import pkg.a\n", "pkg/d.py": "from pkg import a\n"}
      for name, text in files.items():
        with open(os.path.join(tmp, name), "w") as f:
          f.write(text)
      graph = import_graph(find_modules(tmp, ("pkg",)))
      self.assertEqual(graph["pkg.d"], {"pkg.a"})
      self.assertEqual(find_cycle(graph), ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"])
      del graph["pkg.c"]
      self.assertIsNone(find_cycle(graph))

  def test_finds_a_layer_cycle(self):
    graph = {"im2txt.model.m": {"im2txt.inference.i"}, "im2txt.inference.i": {"im2txt.x"},
             "im2txt.x": set(), "im2txt.inference.j": {"im2txt.model.n"}, "im2txt.model.n": set()}
    self.assertIsNone(find_cycle(graph))
    self.assertEqual(find_cycle(layer_graph(graph)),
                     ["im2txt.inference", "im2txt.model", "im2txt.inference"])


if __name__ == "__main__":
  unittest.main()
