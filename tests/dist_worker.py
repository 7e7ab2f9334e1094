"""One process of the 2-process tests: ``python dist_worker.py RANK WORLD STORE_FILE OUT_DIR``.

Runs every scenario of ``dist_cases`` inside a gloo process group and saves what it got (results,
weights, error messages) to OUT_DIR/rank<RANK>.pt for the test to compare with one process.
"""

import datetime
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
import dist_cases as cases  # noqa: E402

import imu_fast  # noqa: E402


def error_of(fn):
    try:
        fn()
    except Exception as exc:  # the test checks the type and the message
        return f"{type(exc).__name__}: {exc}"
    return None


def main(rank: int, world: int, store: str, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=90))
    got = {}
    x, y = cases.data()
    model = cases.model()
    head = imu_fast.influence_scores(model, (x, y), batch_size=5)
    got["head"] = (head.scores, head.indices, head.fisher, head.mean_grad)
    layers = imu_fast.influence_scores(model, (x, y), targets=["body.0.weight", "fc.weight"], batch_size=6)
    got["layers"] = (layers.scores, layers.fisher, layers.mean_grad)
    got["loader"] = imu_fast.influence_scores(model, cases.loader()).scores
    got["fisher"] = imu_fast.fisher_diagonal(model, None, (x, y), batch_size=4)
    got["norms"] = imu_fast.per_sample_grad_norms(model, None, (x, y), per_layer=True, batch_size=9)
    got["alone"] = imu_fast.influence_scores(model, (x[rank::2], y[rank::2]), shard=False).scores
    got["alone_stage"] = error_of(lambda: imu_fast.influence_scores(model, (x, y), shard=False, stage=out / "alone"))

    for name, settings in cases.UNLEARN.items():
        replica = cases.model()
        wrapped = DistributedDataParallel(replica) if name == "imu" else replica  # DDP-wrapped, or a plain replica
        report = imu_fast.unlearn(wrapped, (x, y), **settings)
        got[f"unlearn/{name}"] = ({k: v.clone() for k, v in replica.state_dict().items()}, report.epoch_objective,
                                  report.epoch_forget_loss, report.steps)

    shared = Path(out) / "checkpoint"  # one directory for both processes, as on a shared file system
    replica = cases.model()
    imu_fast.unlearn(replica, (x, y), checkpoint_dir=shared, checkpoint_every=1, **cases.UNLEARN["ga"])
    again = cases.model()  # called again: the finished run's checkpoint gives its result
    report = imu_fast.unlearn(again, (x, y), checkpoint_dir=shared, **cases.UNLEARN["ga"])
    got["checkpointed"] = ({k: v.clone() for k, v in again.state_dict().items()}, report.resumed_from_step)

    stopped = cases.model()
    report = imu_fast.unlearn(stopped, (x, y), stop=cases.stop_criteria(), **cases.STOPPED_RUN)
    got["stopped"] = (report.steps, report.stopped_by, report.final_forget)

    bad_y = y.clone()
    bad_y[30] = 9  # in the second process's block: only it can see the bad label
    got["bad_label"] = error_of(lambda: imu_fast.influence_scores(model, (x, bad_y)))
    got["bad_label_unlearn"] = error_of(lambda: imu_fast.unlearn(cases.model(), (x, bad_y), method="ga",
                                                                 batch_size=8, epochs=1))
    own = (x[: 20 + rank], y[: 20 + rank])  # a different forget set on each process
    got["different_sets"] = error_of(lambda: imu_fast.influence_scores(model, own))
    other = cases.model()
    if rank == 1:
        with torch.no_grad():
            other.fc.bias.add_(1.0)
    got["different_models"] = error_of(lambda: imu_fast.unlearn(other, (x, y), method="ga", epochs=1))

    from torch.distributed.fsdp import fully_shard

    sharded = cases.model()
    fully_shard(sharded)
    got["fsdp_unlearn"] = error_of(lambda: imu_fast.unlearn(sharded, (x, y)))
    got["fsdp_influence"] = error_of(lambda: imu_fast.influence_scores(sharded, (x, y)))
    torch.save(got, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
