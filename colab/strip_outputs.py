"""Strip outputs from notebooks before committing them: `python colab/strip_outputs.py colab/*.ipynb`.

Clears every code cell's outputs and execution count and drops widget state, so the committed
notebooks stay small and their diffs show only code. Files already clean are not rewritten.
"""

import sys

import nbformat


def strip(path: str) -> bool:
    """Strip one notebook in place; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            changed |= cell.metadata.pop(key, None) is not None
    if changed:
        nbformat.write(nb, path)
    return changed


def main(paths) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    for path in paths:
        if strip(path):
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
