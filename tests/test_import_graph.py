""" The package's modules import each other without cycles (a cycle needs late imports to work at all, and breaks
as soon as someone moves one). Every import counts, top-level or inside a function. """
import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / 'sfsc_timm'


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> List[str]:
    if node.level == 0:
        base = node.module or ''
    else:
        parts = current.split('.')
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = '.'.join(parts + ([node.module] if node.module else []))
    # `from .pkg import module` imports a module; `from .module import name` the module itself
    return [f'{base}.{alias.name}' for alias in node.names] + [base]


def import_graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets.update(_resolve(name, path.name == '__init__.py', node))
        # package __init__ files re-export; an edge into a package means its __init__
        graph[name] = {t for t in targets if t in files and t != name and not name.startswith(t + '.')}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) == []


def test_train_steps_and_baselines_do_not_import_each_other():
    graph = import_graph()
    assert 'sfsc_timm.train.steps' in graph['sfsc_timm.train.baselines']
    assert 'sfsc_timm.train.baselines' not in graph['sfsc_timm.train.steps']


def test_no_module_is_in_an_import_cycle():
    assert find_cycle(import_graph()) == []
