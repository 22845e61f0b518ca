"""Reading W&B offline run files: the steps a killed driver's run logged, even from a torn file."""

from __future__ import annotations

import shutil

from search.wandb_offline import highest_logged_step, offline_runs, run_steps


def _offline_run(directory, run_id: str, steps: list[int]) -> None:
    import wandb

    run = wandb.init(project="offline-test", id=run_id, dir=str(directory), mode="offline",
                     settings=wandb.Settings(silent=True, x_disable_stats=True))
    for step in steps:
        run.log({"val_acc": step / 10}, step=step)
    run.finish()


def test_steps_of_every_file_of_a_run_and_of_a_torn_file(tmp_path):
    _offline_run(tmp_path, "trial-a", [1, 2, 3, 4])
    _offline_run(tmp_path, "trial-b", [1, 2])
    wandb_dir = tmp_path / "wandb"
    (path,) = offline_runs(wandb_dir, "trial-a")
    assert run_steps(path) == ({"trial-a"}, [1, 2, 3, 4])
    assert highest_logged_step(wandb_dir, "trial-a") == 4
    assert highest_logged_step(wandb_dir, "trial-b") == 2
    assert highest_logged_step(wandb_dir, "never-ran") == float("-inf")

    # A driver killed mid-write leaves the file cut anywhere: the complete records still count.
    data = path.read_bytes()
    for cut in (len(data) - 3, len(data) // 2, 9):
        torn = tmp_path / f"torn-{cut}" / "wandb" / path.parent.name
        torn.mkdir(parents=True)
        (torn / path.name).write_bytes(data[:cut])
        steps = run_steps(torn / path.name)[1]
        assert steps == [1, 2, 3, 4][:len(steps)]
        assert highest_logged_step(torn.parent, "trial-a") == (max(steps) if steps else float("-inf"))
        shutil.rmtree(torn.parent.parent)
