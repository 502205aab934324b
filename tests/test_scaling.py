"""benchmarks/scaling.py: the LPT schedule by hand, and the two job models on a tiny fake run folder."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


def load_scaling():
    """The script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaling"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


scaling = load_scaling()


def test_lpt_matches_the_schedule_by_hand():
    # 2 workers, longest first, each job to the less loaded one (A, B):
    #   7 -> A (7); 5 -> B (5); 4 -> B (9); 3 -> A (10); 3 -> B (12); 2 -> A (12): makespan 12 = 24 / 2
    assert scaling.lpt_makespan([3, 7, 2, 5, 3, 4], 2) == 12
    # 3 workers: 7 -> A (7); 5 -> B (5); 4 -> C (4); 3 -> C (7); 3 -> B (8); 2 -> A or C (9): makespan 9,
    # also the optimum: the 7 needs a 2 to reach 8 and then 5 + 4 + 3 + 3 = 15 cannot fit in two 8s
    assert scaling.lpt_makespan([7, 5, 4, 3, 3, 2], 3) == 9


def test_one_long_job_dominates_and_enough_workers_give_the_longest_job():
    assert scaling.lpt_makespan([100, 1, 2, 3], 2) == 100
    assert scaling.lpt_makespan([7, 5, 4, 3, 3, 2], 6) == 7
    assert scaling.lpt_makespan([7, 5, 4, 3, 3, 2], 128) == 7
    assert scaling.lpt_makespan([7, 5, 4, 3, 3, 2], 1) == 24
    assert scaling.lpt_makespan([], 4) == 0
    with pytest.raises(ValueError, match="at least 1"):
        scaling.lpt_makespan([1.0], 0)


def test_list_scheduling_keeps_the_order_it_is_given():
    # 2 workers in this order: 2 -> A, 3 -> B, 7 -> A (9), 5 -> B (8), 4 -> B (12), 3 -> A (12)
    assert scaling.list_makespan([2, 3, 7, 5, 4, 3], 2) == 12
    assert scaling.list_makespan([1, 1, 10], 2) == 11  # the long job last waits for a free worker
    assert scaling.lpt_makespan([1, 1, 10], 2) == 10


SETTINGS = {"task": "t1", "budget": 100, "omega": 1.0, "init": "default", "width": 8, "total_steps": 300,
            "lr": 1e-3, "depth": 2}  # fmt: skip


def records(version: str, rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """Records of one notebook on task t1, budget 100: (neuron, seed, seconds) per row."""
    return pd.DataFrame(
        [
            {
                "version": version,
                "neuron": neuron,
                "model": neuron,
                "seed": seed,
                "seconds": seconds,
                **SETTINGS,
            }
            for neuron, seed, seconds in rows
        ]
    )


def fake_run(tmp_path: Path, walls: dict[str, float], summary: float = 5.0) -> Path:
    """Two notebooks that both report the cached vanilla training (2 seeds, 10 s each), and a summary.

    v01_a: vanilla 20 s + singlu 30 s; v02_b: vanilla (the same trainings) + v2n 10 s.
    """
    run = tmp_path / "run"
    (run / ".jobs").mkdir(parents=True)
    vanilla = [("vanilla", 0, 10.0), ("vanilla", 1, 10.0)]
    records("v01", [*vanilla, ("singlu", 0, 15.0), ("singlu", 1, 15.0)]).to_csv(
        run / "v01_a.records.csv", index=False
    )
    records("v02", [*vanilla, ("v2n", 0, 5.0), ("v2n", 1, 5.0)]).to_csv(
        run / "v02_b.records.csv", index=False
    )
    for stem, seconds in {**walls, "summary": summary}.items():
        status = {"id": stem, "notebook": f"{stem}.ipynb", "status": "done", "seconds": seconds}
        (run / ".jobs" / f"{stem}.json").write_text(json.dumps(status))
    return run


def test_a_shared_cached_training_counts_once(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0})
    assert len(scaling.read_trainings(run)) == 8
    assert len(scaling.distinct_trainings(run)) == 6
    plan = scaling.program_jobs(run)
    programs = {job.name: job.seconds for job in plan.jobs}
    assert programs == {
        "vanilla on t1, budget 100": 20.0,  # once, not 40
        "singlu on t1, budget 100": 30.0,
        "v2n on t1, budget 100": 10.0,
        "v01_a overhead": 10.0,  # 60 s of wall, 50 s of training charged to it
        "v02_b overhead": 30.0,  # 40 s of wall; vanilla is charged to v01_a, first in order
    }
    assert plan.after == 5.0
    assert plan.total == 105.0


def test_a_cold_run_models_each_notebook_as_measured_and_notebooks_never_beat_programs(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0})
    assert not scaling.is_warm(run)[0]  # 60 s of distinct training fit in 100 s of notebook wall
    measured, modelled = scaling.notebook_jobs(run), scaling.notebook_jobs(run, modelled=True)
    assert sorted(measured.jobs, key=lambda j: j.name) == sorted(modelled.jobs, key=lambda j: j.name)
    programs = scaling.program_jobs(run)
    assert measured.makespan(1) == programs.makespan(1) == 105.0
    assert measured.makespan(2) == 65.0  # 60 | 40, then the summary
    assert programs.makespan(2) == 55.0  # 30 + 20 | 30 + 10 + 10, then the summary
    assert programs.makespan(8) == 35.0  # the longest job (30) and the summary
    for workers in (1, 2, 3, 8, 32, 128):
        assert measured.makespan(workers) >= programs.makespan(workers)
        assert programs.makespan(workers) >= programs.bound(workers)


def test_the_profile_order_decides_which_notebook_a_shared_training_is_charged_to(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0})
    (run / ".jobs" / "profile.yaml").write_text("name: fake\nnotebooks: [v02, v01]\n")
    assert scaling.notebook_order(run, ["v01_a", "v02_b"]) == ["v02_b", "v01_a"]
    charged = scaling.distinct_trainings(run).groupby("notebook")["seconds"].sum().to_dict()
    assert charged == {"v01_a": 30.0, "v02_b": 30.0}


def test_a_warm_run_keeps_its_wall_time_as_overhead(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 6.0, "v02_b": 4.0}, summary=2.0)
    warm, why = scaling.is_warm(run)
    assert warm, why  # 60 s of training cannot have run in 10 s of notebooks
    assert scaling.overheads(run) == {"v01_a": 6.0, "v02_b": 4.0}
    modelled = {job.name: job.seconds for job in scaling.notebook_jobs(run, modelled=True).jobs}
    assert modelled == {"v01_a": 56.0, "v02_b": 14.0}  # charged training + the warm wall time


def test_the_script_prints_the_table_the_check_and_pooling_last(tmp_path, capsys):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0})
    provenance = {"provenance": {"wall_seconds": 62.0, "summary": {"cpus": "2"}}}
    (run / "summary.json").write_text(json.dumps(provenance))
    scaling.main(["--run-dir", str(run), "--workers", "1", "2", "8"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(
        f"run {run}: 2 notebooks, 8 training records = 6 distinct trainings in 3 programs"
    )
    assert out[1].startswith("cache: cold")
    rows = {line.split()[0]: line for line in out if line.strip()[:1].isdigit() and "|" in line}
    assert set(rows) == {"1", "2", "8"}
    assert rows["2"].split("|")[-1].strip() == f"{65 / 55:.2f}x"  # notebook modelled ÷ program
    assert any("measured:  67.0 s (summary.json provenance 62.0 s + summary 5.0 s)" in line for line in out)
    assert any(line.endswith("0.97 (LPT), 0.97 (profile order)") for line in out)  # 65 ÷ 67
    assert out[-1] == f"pooling: {65 / 35:.2f}"


def test_the_capacity_search_is_one_job_per_neuron_and_kind(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0, "capacity": 20.0})
    rows = [("vanilla", seed, 2.0) for seed in (0, 1)]  # each budget's search starts from the last's answer
    capacity = pd.concat(
        [records("capacity", rows).assign(budget=b, width=w) for b, w in ((500, 17), (1000, 30))]
    )
    capacity.assign(task="capacity_binary").to_csv(run / "capacity.records.csv", index=False)
    programs = {job.name: job.seconds for job in scaling.program_jobs(run).jobs}
    assert programs["vanilla on capacity_binary, every budget"] == 8.0
    assert programs["capacity overhead"] == 12.0


def test_todays_runner_gives_each_kernel_its_share_of_the_cores(tmp_path):
    run = fake_run(tmp_path, {"v01_a": 60.0, "v02_b": 40.0})
    # 2 cores: 2 kernels of 1 thread, each notebook as measured: 60 | 40, then the summary
    assert scaling.runner_makespan(run, 2) == (65.0, 2, 1)
    # 4 cores: 2 kernels of 2 threads; v01_a: singlu 30 | vanilla 20, then 10 s of overhead = 40;
    # v02_b: v2n 10 + 30 s of overhead = 40; then the summary
    assert scaling.runner_makespan(run, 4) == (45.0, 2, 2)
    assert scaling.runner_makespan(run, 1) == (105.0, 1, 1)
