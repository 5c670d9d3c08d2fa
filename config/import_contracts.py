"""A house rule that import-linter's own contracts cannot state: no cycle among the project's modules.

`lint-imports` loads it (see `contract_types` in pyproject.toml). Every import counts, those inside
functions too: a cycle hidden in a function is still two modules that cannot be understood apart.
"""

import grimp
from importlinter.application import output
from importlinter.domain.contract import Contract, ContractCheck


class AcyclicModulesContract(Contract):
    type_name = "acyclic_modules"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        cycles = [sorted(group) for group in strongly_connected(graph) if len(group) > 1]
        chains = [_cycle_through(graph, group) for group in cycles]
        return ContractCheck(kept=not cycles, warnings=None, metadata={"cycles": sorted(chains)})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain in check.metadata["cycles"]:
            output.print_error(" -> ".join(chain), bold=False)
            output.new_line()


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The graph's strongly connected components (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == module:
                            break
                    components.append(component)
    return components


def _cycle_through(graph: grimp.ImportGraph, group: list[str]) -> list[str]:
    """One cycle of the group, as the chain of imports that closes it."""
    first = group[0]
    back = min(
        (graph.find_shortest_chain(importer=other, imported=first) or () for other in group[1:]),
        key=lambda chain: len(chain) or len(group) + 1,
    )
    forward = graph.find_shortest_chain(importer=first, imported=back[0]) if back else None
    return [*(forward or (first,)), *back[1:]]
