# The Optuna side of `tlab run --sweeper optuna` (framework/src/run/optuna.hpp). tlab starts
# this script with Debian's Python and speaks to it in JSON lines: one request on stdin, one
# answer on stdout. Optuna keeps the study in its own storage (an SQLite file by default), so a
# study outlives tlab and is open to optuna-dashboard, pandas and Optuna's own API.
#
# Requests and answers:
#   {"op": "open", "storage": URL, "study": NAME, "direction": "maximize"|"minimize",
#    "sampler": "tpe"|"random", "seed": S, "startup_trials": N, "space": {NAME: DIST},
#    "attrs": {...}}
#     -> {"ok": true, "study": NAME, "trials": [{"number", "state", "params", "value"}]}
#     DIST: {"type": "float"|"int", "low", "high", "log"} or {"type": "categorical",
#     "choices": [text, ...]}; attrs become the study's user attributes.
#   {"op": "ask", "n": K} -> {"ok": true, "trials": [{"number": n, "params": {NAME: value}}]}
#   {"op": "tell", "number": n, "state": "complete"|"pruned"|"fail", "value": v,
#    "attrs": {...}} -> {"ok": true}
#   {"op": "close"} -> {"ok": true}, then exits.
# A failure answers {"ok": false, "error": TEXT}; the script goes on reading.
import json
import sys
import warnings


def answer(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


try:
    import optuna
except ImportError as e:  # Optuna missing: tlab says how to install it
    answer({"ok": False, "error": "import optuna failed (%s) in %s" % (e, sys.executable),
            "missing": True})
    sys.exit(3)

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def distribution(d):
    kind = d["type"]
    if kind == "float":
        return optuna.distributions.FloatDistribution(d["low"], d["high"], log=d["log"])
    if kind == "int":
        return optuna.distributions.IntDistribution(int(d["low"]), int(d["high"]), log=d["log"])
    if kind == "categorical":
        return optuna.distributions.CategoricalDistribution(d["choices"])
    raise ValueError("unknown distribution type %r" % kind)


STATES = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "fail": optuna.trial.TrialState.FAIL,
}


class Bridge:
    def __init__(self):
        self.study = None
        self.space = None

    def open(self, r):
        if r["sampler"] == "tpe":
            # constant_liar: trials asked while others run (-j N) are drawn away from them.
            sampler = optuna.samplers.TPESampler(
                seed=r["seed"], n_startup_trials=r["startup_trials"], constant_liar=True)
        elif r["sampler"] == "random":
            sampler = optuna.samplers.RandomSampler(seed=r["seed"])
        else:
            raise ValueError("unknown sampler %r" % r["sampler"])
        self.study = optuna.create_study(storage=r["storage"], study_name=r["study"],
                                         direction=r["direction"], sampler=sampler,
                                         load_if_exists=True)
        if self.study.direction != optuna.study.StudyDirection[r["direction"].upper()]:
            raise ValueError("study %r in %s exists with direction %s, not %s" % (
                r["study"], r["storage"], self.study.direction.name.lower(), r["direction"]))
        for k, v in r.get("attrs", {}).items():
            self.study.set_user_attr(k, v)
        self.space = {k: distribution(d) for k, d in r["space"].items()}
        trials = []
        for t in self.study.get_trials(deepcopy=False):
            trials.append({"number": t.number, "state": t.state.name.lower(),
                           "params": t.params, "value": t.value})
        return {"study": self.study.study_name, "trials": trials}

    def ask(self, r):
        out = []
        for _ in range(r.get("n", 1)):
            t = self.study.ask(self.space)
            out.append({"number": t.number, "params": t.params})
        return {"trials": out}

    def tell(self, r):
        number = r["number"]
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number)
        for k, v in r.get("attrs", {}).items():
            self.study._storage.set_trial_user_attr(trial_id, k, v)
        state = STATES[r["state"]]
        value = r.get("value")
        if state == optuna.trial.TrialState.COMPLETE:
            self.study.tell(number, value)
        else:
            self.study.tell(number, state=state)
        return {}


def main():
    bridge = Bridge()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            r = json.loads(line)
            op = r.get("op")
            if op == "close":
                answer({"ok": True})
                return
            if op not in ("open", "ask", "tell"):
                raise ValueError("unknown request %r" % op)
            if op != "open" and bridge.study is None:
                raise ValueError("%s before open" % op)
            result = getattr(bridge, op)(r)
            result["ok"] = True
            answer(result)
        except Exception as e:  # noqa: BLE001 - every failure goes back to tlab as text
            answer({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})


main()
