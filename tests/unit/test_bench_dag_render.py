"""bench.bench_dag's table: merged results say which runs were on a deployment; item 6's ratios pair each run's own."""

from __future__ import annotations

import json

from bench import bench_dag

RUN = {"backend": "sqlite", "size": 400, "run": "full", "kind": "real", "state": "success", "wall_s": 27.0,
       "tasks": {"extract": {"seconds": 1.0, "n": 1}}, "api": {"requests": 51, "fewest_total": 51, "ratio": 1.0}}
MACHINE = {"cpu_model": "CPU", "cpus": 2, "ram_gib": 24, "python": "3.11", "sqlite": "3", "postgres": None}


def test_rows_of_a_deployment_invocation_are_marked_as_such(tmp_path):
    for name, command in (("local", "python -m bench.bench_dag --preset issue-job"),
                          ("deployed", "python -m bench.bench_dag --preset issue-job --deployment")):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"machine": MACHINE, "command": command, "setups": [], "results": [dict(RUN)]}))
    out = tmp_path / "merged.md"
    args = bench_dag.parse_args(["--render-from", f"{tmp_path / 'local.json'},{tmp_path / 'deployed.json'}",
                                 "--out", str(out)])
    assert bench_dag.render_from(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| sqlite | 400 |")]
    assert [row.split(" | ")[2] for row in rows] == ["full", "full (deployment)"]


def test_item_6_ratios_pair_each_run_with_the_full_runs_of_its_own_invocation():
    def run(run, kind, wall, **extra):
        return {**RUN, "run": run, "kind": kind, "wall_s": wall, "ok": True, "size": 1000, **extra}

    results = [
        run("full", "dry", 60.0), run("full", "real", 600.0, local_work_s=90.0, timing={"api_wall_seconds": 510}),
        run("1 % changed (incremental)", "real", 30.0, touched=10),
        run("full", "dry", 50.0), run("full", "real", 500.0, local_work_s=55.0, timing={"api_wall_seconds": 445}),
        run("0 % changed (full)", "real", 20.0, touched=0),  # nothing changed: no 10 % target
    ]
    assert bench_dag.targets(results)[3:] == [
        "- sqlite 1,000: real full run's local work / dry full run's wall = 90.0 / 60.0 s = 1.50x (target <= 1.2x)",
        "- sqlite 1,000: 1 % changed (incremental) real / full real: 30.0 / 600.0 s = 5% (target <= 10 %)",
        "- sqlite 1,000: real full run's local work / dry full run's wall = 55.0 / 50.0 s = 1.10x (target <= 1.2x)",
    ]
