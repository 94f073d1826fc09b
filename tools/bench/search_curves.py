"""Best validation accuracy against target-stage epochs spent, per search (tools/bench/search.sh).

Reads the runs of every search (experiment names search_grid, search_random_s<k>,
search_asha_s<k>, search_tpe_s<k>) from a tlab database (plain SQLite),
in the order they ended; a run's epochs are its target/train/epochs_run (a pruned run stops
early) or train.epochs. The best so far counts finished runs (the configurations a search would
pick). Writes OUT/search.md (table) and OUT/search.png (curves).
"""
import sqlite3
import sys

db, out = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db)


def summary(run, name):
    row = con.execute("SELECT value FROM summaries WHERE run_id = ? AND name = ?",
                      (run, name)).fetchone()
    return None if row is None else row[0]


def param(run, key):
    row = con.execute("SELECT value FROM params WHERE run_id = ? AND key = ?", (run, key)).fetchone()
    return None if row is None else row[0]


curves = {}
rows = []
names = [r[0] for r in con.execute(
    "SELECT name FROM runs WHERE name LIKE 'search_%' GROUP BY name ORDER BY min(id)")]
for name in names:
    runs = con.execute("SELECT id, status FROM runs WHERE name = ? ORDER BY ended_at, id",
                       (name,)).fetchall()
    spent, best, best_test, xs, ys = 0, float("nan"), float("nan"), [], []
    pruned = 0
    for run, status in runs:
        epochs = summary(run, "target/train/epochs_run") or param(run, "train.epochs")
        spent += int(epochs)
        pruned += status == "pruned"
        val = summary(run, "target/val/acc")
        if status == "finished" and val is not None and not (val <= best):
            best, best_test = val, summary(run, "target/test/acc")
        xs.append(spent)
        ys.append(best)
    curves[name] = (xs, ys)
    rows.append((name, len(runs), pruned, spent, best, best_test))

grid_best = rows[0][4]
lines = ["| search | runs | pruned | epochs spent | best val acc | its test acc | epochs to reach "
         "grid best - 0.01 | share of the grid's epochs |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
grid_epochs = rows[0][3]
for name, n, pruned, spent, best, test in rows:
    xs, ys = curves[name]
    reach = next((x for x, y in zip(xs, ys) if y == y and y >= grid_best - 0.01), None)
    share = f"{100 * reach / grid_epochs:.0f}%" if reach is not None else "not reached"
    lines.append(f"| {name[7:]} | {n} | {pruned} | {spent} | {best:.4f} | {test:.4f} | "
                 f"{reach if reach is not None else '-'} | {share} |")
open(f"{out}/search.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4.2))
colors = {"grid": "#0072B2", "random": "#E69F00", "asha": "#009E73", "tpe": "#CC79A7"}
styles = ["-", "--", ":"]
for name, (xs, ys) in curves.items():
    kind = name[7:].split("_")[0]
    seed = int(name.rsplit("_s", 1)[1]) if "_s" in name else 0
    ax.step(xs, ys, where="post", label=name[7:], color=colors[kind], linewidth=2,
            linestyle=styles[seed % 3])
ax.axhline(grid_best - 0.01, color="grey", linestyle="-.", linewidth=1, label="grid best - 0.01")
ax.set_xlabel("target-stage epochs spent (all runs, in the order they ended)")
ax.set_ylabel("best validation accuracy so far")
ax.set_title("L2-SP on digits: lr x weight decay x alpha")
ax.legend(loc="lower right")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(f"{out}/search.png", dpi=120)
