"""A ticket search on a regression task with real data: scikit-learn's bundled diabetes
set (442 patients, 10 features, a disease-progression score), an MLP, IMP with rewinding
to θ0 against the random-reinitialisation control, over seeds.

    .venv/bin/python scripts/diabetes_tickets.py --store runs/diabetes --seeds 0-2

Prints, per experiment and level, the % of weights left and the test mean absolute error
(of the standardised score) at early stop and at the end, mean ± sd over seeds; the numbers
in docs/tasks.md come from this script.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_diabetes
from torch import nn

import lth
from lth.experiment.session import parse_seeds


def diabetes() -> lth.Data:
    """Standardised features and score; 342 patients to train on (34 of them held out for
    validation), 100 to test."""
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    x = (x - x[:342].mean(0)) / x[:342].std(0)
    y = (y - y[:342].mean()) / y[:342].std()
    return lth.from_arrays(x[:342], y[:342], x[342:], y[342:], name="diabetes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="runs/diabetes")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--levels", type=int, default=8)
    args = ap.parse_args()
    data = diabetes()
    model = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 1))
    session = lth.LotterySession(
        model, data, name="diabetes", task="regression", levels=args.levels,
        initializer="xavier_normal", seeds=parse_seeds(args.seeds),
        train={"duration": "1500it", "eval_every": "50it", "batch_size": 32, "lr": 1e-3},
        variants={"ticket": {},
                  "random_reinit": {"control": "random_reinit", "of": "ticket"}})
    result = session.run(store=args.store, executor="local", progress=False)
    stats = result.stats()
    rows = []
    for (experiment, level), part in stats.groupby(["experiment", "level"], sort=False):
        m = part.set_index("metric")

        def cell(metric: str, m: object = m) -> str:
            r = m.loc[metric]  # type: ignore[attr-defined]
            return f"{r['mean']:.3f} ± {r['sd']:.3f}" if r["n"] > 1 else f"{r['mean']:.3f}"

        rows.append({"experiment": experiment, "level": level,
                     "% weights": f"{m.loc['pct_remaining', 'mean']:.1f}",
                     "test MAE @ early stop": cell("early_stop_test_mae"),
                     "final test MAE": cell("final_test_mae"),
                     "early-stop it": f"{m.loc['early_stop_step', 'mean']:.0f}"})
    import pandas as pd

    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else
          pd.DataFrame(rows).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
