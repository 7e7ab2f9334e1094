"""``IMUTrainer`` under DDP: two gloo processes on the CPU, each scoring its own batches."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from hf_tiny import args, fitted_llama, lm_loss
    from imu_fast.integrations.huggingface import IMUTrainer

    model, data = fitted_llama()
    loss0 = lm_loss(model, data)
    trainer = IMUTrainer(model=model, args=args(ddp_backend="gloo", per_device_train_batch_size=3), train_dataset=data)
    trainer.train()
    assert trainer.args.world_size == world
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "loss0": loss0,
                "loss": lm_loss(model, data), "steps": trainer.state.global_step}, f"{out}/rank{rank}.pt")


def test_ranks_end_with_the_same_weights(tmp_path):
    world = 2
    mp.spawn(_rank, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert results[0]["steps"] == 6  # 12 samples, 3 per process and step, 3 epochs: 2 steps per epoch
    for name, value in results[0]["state"].items():
        assert torch.equal(value, results[1]["state"][name]), name
    assert results[0]["loss"] > results[0]["loss0"] + 0.3
