"""ZeRO-2 / ZeRO-3 configs through ``deepspeed.initialize`` on CPU with the tiny Flux2 transformer.

DeepSpeed reads its accelerator and the process-group variables from the environment: the test
sets ``DS_ACCELERATOR=cpu``, ``MASTER_ADDR/PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` for
its own duration (monkeypatch restores them afterwards). The first run compiles DeepSpeed's
small CPU shared-memory op with the system C++ compiler (cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import socket

import pytest
import torch

from training.deepspeed import FILES, load_ds_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_configs_are_zero_2_and_3():
    c2, c3 = load_ds_config(2, micro_batch=2, grad_accum=4), load_ds_config(3, precision="32-true")
    assert c2["zero_optimization"]["stage"] == 2 and c3["zero_optimization"]["stage"] == 3
    assert c2["train_batch_size"] == 8 and c2["bf16"]["enabled"] and not c3["bf16"]["enabled"]
    assert "optimizer" not in c2 and "optimizer" not in c3   # the scheme's torch AdamW is passed in
    assert set(FILES) == {2, 3} and all(p.suffix == ".json" for p in FILES.values())


@pytest.fixture
def ds_env(monkeypatch):
    for k, v in {"DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                 "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def test_zero2_and_zero3_initialize_and_step_on_cpu(ds_env):
    import deepspeed

    from training.schemes.flux2 import position_ids, tiny_flux2_transformer

    img, txt = position_ids((4, 4), 3)
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(1, 16, 16, generator=g), torch.randn(1, 3, 64, generator=g)
    for stage in (2, 3):
        model = tiny_flux2_transformer(seed=0)
        ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=opt,
                                                       config=load_ds_config(stage, precision="32-true"))
        assert engine.zero_optimization_stage() == stage
        out = engine(hidden_states=x, encoder_hidden_states=e, timestep=torch.tensor([0.5]), img_ids=img,
                     txt_ids=txt, return_dict=False)[0]
        loss = out.float().square().mean()
        engine.backward(loss)
        engine.step()
        assert torch.isfinite(loss) and engine.global_steps == 1
        if stage == 3:
            with deepspeed.zero.GatheredParameters(list(engine.module.proj_out.parameters())):
                w = engine.module.proj_out.weight.detach().clone()
        else:
            w = engine.module.proj_out.weight.detach().clone()
        assert w.shape == ref["proj_out.weight"].shape and not torch.equal(w, ref["proj_out.weight"])
        engine.destroy()
