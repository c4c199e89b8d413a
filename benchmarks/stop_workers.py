"""Stop with 2 workers on the Search page's path (`SearchRunner(config, workers=2)` on PostgreSQL), both training.

Prints, per repetition, when each worker process exited and when the runner's thread ended, in seconds after Stop.
Usage: python benchmarks/stop_workers.py [REPS]   (starts its own PostgreSQL on loopback, as benchmarks/workers.py does)
"""

import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas_core.jobs import SearchRunner
from nas_core.search import SearchConfig
from nas_core.workspace.owners import pid_alive

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/workers.py: the loopback PostgreSQL helper
from workers import postgres  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
with postgres() as pg, tempfile.TemporaryDirectory() as ws:
    for rep in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        cfg = SearchConfig(
            dataset="digits",
            trials=40,
            epochs=30,
            train_samples=300,
            workspace=ws,
            study=f"s{rep}",
            storage=pg,
            device="cpu",
        )
        r = SearchRunner(cfg, workers=2).start()
        pids = set()
        time.sleep(3)
        while len(pids) < 2:
            try:
                pids = {
                    t.user_attrs["owner"]["pid"]
                    for t in optuna.load_study(
                        study_name=f"s{rep}", storage=pg
                    ).get_trials(deepcopy=False)
                    if t.state == TrialState.RUNNING and "summary" in t.user_attrs
                }
            except KeyError:
                pass
            time.sleep(0.1)
        t0 = time.perf_counter()
        r.stop()
        ends = {}
        while not r.wait(0.01) or len(ends) < len(pids):
            for p in pids:
                if p not in ends and not pid_alive(p):
                    ends[p] = time.perf_counter() - t0
        print(
            f"rep {rep}: children exited at {sorted(round(v, 2) for v in ends.values())} s, runner done at {time.perf_counter() - t0:.2f} s",
            flush=True,
        )
