"""Gate numbers of a validation run that stopped before ``summary.json`` (`python -m benchmarks.validation_tables RUN`).

``psylens validate`` writes each gate's tables as soon as the gate has run; a run stopped later (e.g. in
the long ``preferences`` gate) keeps them. This reads them back and prints each gate's value and control
as a markdown table: ``dose_response`` and ``geometry`` through the gates' own functions (the saved
projections; the saved directions and shuffled-label control directions), the others by the gates'
definitions from their item tables (``feels_matrix``: rows / columns won and the gap; ``implicit_scenarios``:
top-1 accuracy per set beside the shuffled-label directions'; ``logit_lens``: emotions with ≥ 3 of their
words in the top 30, beside the random directions'; ``read_back``: win rates beside random-vs-unsteered).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def summarize(run: Path, layer: int) -> list[tuple[str, str, str]]:
    from psylens.concepts import concept_info, dose_templates
    from psylens.probes import Directions
    from psylens.validation import artifacts as art
    from psylens.validation import gates as G

    def table(gate: str, name: str) -> pd.DataFrame | None:
        path = run / art.table_file(gate, name)
        return pd.read_parquet(path) if path.is_file() else None

    rows: list[tuple[str, str, str]] = []
    f = table("feels_matrix", "matrix")
    if f is not None:
        m = f.pivot(index="vector", columns="words", values="shift")
        m_words = list(m.index)
        m = m.loc[m_words, m_words].to_numpy()
        n = len(m)
        eye = np.eye(n, dtype=bool)
        control = "—"
        rnd = table("feels_matrix", "random")
        if rnd is not None and "vector" not in rnd.columns:  # draws shared by every row: the gate's control
            gaps = [(x := d.set_index("words").loc[list(m_words), "shift"].to_numpy()).max() - np.delete(x, x.argmax()).mean()
                    for _, d in rnd.groupby("draw")]
            rand_mean = rnd.groupby("words")["shift"].mean().loc[list(m_words)].to_numpy()
            control = f"random draws' gap {np.mean(gaps):.2f} nats; own − random mean shift " + ", ".join(
                f"{w} {m[k, k] - rand_mean[k]:+.2f}" for k, w in enumerate(m_words))
        rows.append(("feels_matrix", f"rows {int(sum(np.argmax(m[r]) == r for r in range(n)))}/{n}, columns "
                     f"{int(sum(np.argmax(m[:, c]) == c for c in range(n)))}/{n}, gap {m[eye].mean() - m[~eye].mean():.2f} nats",
                     control))
    i = table("implicit_scenarios", "items")
    if i is not None:
        acc = i.groupby("set").apply(lambda d: (d.predicted == d.label).mean(), include_groups=False)
        ctl = i.groupby("set").apply(lambda d: (d.control_predicted == d.label).mean(), include_groups=False)
        rows.append(("implicit_scenarios", ", ".join(f"{k} {v:.3f} (n {int((i.set == k).sum())})" for k, v in acc.items()),
                     ", ".join(f"{k} {v:.3f}" for k, v in ctl.items()) + " (shuffled-label directions)"))
    d = table("dose_response", "levels")
    if d is not None:
        tps = [t for t in dose_templates() if t["id"] in set(d.template)]
        g = G.dose_response(tps, {t: list(x.sort_values("level").projection) for t, x in d.groupby("template")})
        rows.append(("dose_response", f"{g['value']:.0f} of {len(tps)} templates", f"{g['control']:.2f} (levels shuffled)"))
    dirs_path, ctl_path = run / art.DIRECTIONS, run / art.CONTROL_DIRECTIONS
    if dirs_path.is_file() and ctl_path.is_file():
        dirs = Directions.load(dirs_path)
        if set(concept_info()) <= set(dirs.emotions):
            g = G.geometry(dirs, layer, concept_info(), control=Directions.load(ctl_path))
            rows.append(("geometry", f"valence AUROC {g['value']:.3f}, arousal {g.get('arousal_auroc', float('nan')):.3f}, "
                         f"basic cosine {g.get('basic_mean_cosine', float('nan')):.3f}", f"{g['control']:.3f} (shuffled labels)"))
    lens = table("logit_lens", "tokens")
    if lens is not None:
        top = lens[lens["rank"] < 30].groupby(["kind", "emotion"]).is_word.sum()
        won = {k: int((top.xs(k) >= 3).sum()) for k in top.index.get_level_values(0).unique()}
        rows.append(("logit_lens", f"{won.get('direction', 0)} of 6", f"{won.get('random', 0)} of 6 (random directions)"))
    rb = table("read_back", "items")
    if rb is not None:
        rows.append(("read_back", f"{rb.win_none.mean():.3f} vs unsteered, {rb.win_random.mean():.3f} vs random text "
                     f"(n {len(rb)})", f"{rb.random_win_none.mean():.3f} (random vs unsteered)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--layer", type=int, default=13)
    a = ap.parse_args()
    print("| gate | value | control |\n|---|---|---|")
    for name, value, control in summarize(a.run, a.layer):
        print(f"| {name} | {value} | {control} |")


if __name__ == "__main__":
    main()
