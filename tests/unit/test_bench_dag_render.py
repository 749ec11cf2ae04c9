"""bench.bench_dag's table: merged results say which runs were on a deployment."""

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
