"""Regenerate lm/scaling/data/hoffmann2022_runs.csv, the external check of the scaling forecasts.

Source: Besiroglu, Erdil, Barnett, You (2024), "Chinchilla scaling: a replication attempt",
https://github.com/epoch-research/analyzing-chinchilla, file data/svg_extracted_data.csv
(commit 92258837425e1b5f2851d624287f0120583a3d0e): the final losses of Hoffmann et al. (2022)
training runs, extracted from the paper's Figure 4. The repository states no license; we keep
a derived extract of the measurements (N, D, loss), 245 rows, for a backtest only.

    python scripts/fetch_scaling_curves.py [PATH_OR_URL_OF_svg_extracted_data.csv]

D is the training tokens, C / (6 N), as in the replication's own analysis.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import urllib.request

URL = ("https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
       "92258837425e1b5f2851d624287f0120583a3d0e/data/svg_extracted_data.csv")
OUT = os.path.join(os.path.dirname(__file__), "..", "lm", "scaling", "data", "hoffmann2022_runs.csv")


def main(src: str = URL) -> int:
    if src.startswith("http"):
        text = urllib.request.urlopen(src, timeout=60).read().decode()
    else:
        with open(src) as f:
            text = f.read()
    rows = list(csv.DictReader(io.StringIO(text)))
    need = {"Model Size", "Training FLOP", "loss"}
    if not rows or not need <= set(rows[0]):
        print(f"{src}: expected the columns {sorted(need)}; is this svg_extracted_data.csv?", file=sys.stderr)
        return 1
    out = []
    for r in rows:
        n, c, loss = float(r["Model Size"]), float(r["Training FLOP"]), float(r["loss"])
        out.append((n, c / (6.0 * n), c, loss))
    out.sort(key=lambda t: t[2])
    with open(OUT, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n_params", "tokens", "train_flops", "loss"])
        for n, d, c, loss in out:
            w.writerow([f"{n:.6g}", f"{d:.6g}", f"{c:.6g}", f"{loss:.5f}"])
    print(f"wrote {len(out)} runs to {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
