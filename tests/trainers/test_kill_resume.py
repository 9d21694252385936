"""A real training run killed with SIGKILL while it writes a snapshot, then resumed: no temporary file is left and
the finished run is bit-identical to an uninterrupted one (main.py as subprocesses, tiny shapes AttnGAN, seconds)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from miscc.checkpoint import TMP_PATTERN, load_checkpoint
from tests.helpers import small_config, tiny_encoders, tiny_shapes
from trainers.base import STATE_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "TEXT.EMBEDDING_DIM": 32, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 2,
        "DAMSM.IMAGE_SIZE": 32, "TRAIN.SNAPSHOT_INTERVAL": 1, "TRAIN.CHECKPOINT_STEPS": 1, "WORKERS": 0,
        "TRAIN.LOG_INTERVAL": 1,
        "TRAIN.PERCEPTUAL_EXTRA": ""}  # the shipped config's second image encoder is 128-d
TIMEOUT = 240  # per subprocess; a run takes seconds


@pytest.fixture(scope="module", params=[1, 2], ids=["one_step", "parallel_steps"])
def args(tmp_path_factory, request):
    """The tiny run, one step at a time and with TRAIN.PARALLEL_STEPS 2 (steps in pairs, trainers.parallel)."""
    data = tiny_shapes(tmp_path_factory.mktemp("data"))
    cfg = small_config("cfg/shapes_attn.yml", data, **TINY)
    net_e = tiny_encoders(cfg, tmp_path_factory.mktemp("damsm"))
    return ["--cfg", "cfg/shapes_attn.yml", "--gpu", "-1", "--set", f"DATA_DIR={data}", f"TRAIN.NET_E={net_e}",
            f"TRAIN.PARALLEL_STEPS={request.param}"] + [f"{k}={v}" for k, v in TINY.items()]


def _start(args, out, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "main.py", *args, "--output_dir", str(out)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _temporaries(model_dir):
    return [n for n in os.listdir(model_dir) if TMP_PATTERN.fullmatch(n)] if os.path.isdir(model_dir) else []


def _kill_during_a_write(proc, model_dir, deadline):
    """SIGKILL `proc` as soon as a temporary snapshot file appears once a training state exists (or, if none is
    seen within a second of that, at that moment: a kill at a random point). Returns the temporaries at the kill,
    or None when the run ended first."""
    state_seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state_seen is None and os.path.isfile(os.path.join(model_dir, STATE_FILE)):
            state_seen = time.monotonic()
        if state_seen is not None and (_temporaries(model_dir) or time.monotonic() - state_seen > 1.0):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return _temporaries(model_dir)
    return None


def test_sigkill_during_snapshot_then_resume_is_exact(args, tmp_path):
    with open(tmp_path / "full.log", "wb") as log:
        full = _start(args, tmp_path / "full", log)
        try:
            for attempt in range(3):  # a tiny run may finish before the poll sees a state; try again
                run = tmp_path / f"killed{attempt}"
                with open(tmp_path / f"killed{attempt}.log", "wb") as klog:
                    proc = _start(args, run, klog)
                    left = _kill_during_a_write(proc, str(run / "Model"), time.monotonic() + TIMEOUT)
                if left is not None:
                    break
            else:
                pytest.fail("the run finished three times before it could be killed")
            assert proc.returncode == -signal.SIGKILL
            with open(tmp_path / "resumed.log", "wb") as rlog:
                resumed = _start(args + ["--resume"], run, rlog)
                assert resumed.wait(timeout=TIMEOUT) == 0, (tmp_path / "resumed.log").read_text()
            assert full.wait(timeout=TIMEOUT) == 0, (tmp_path / "full.log").read_text()
        finally:
            for p in (full, locals().get("proc"), locals().get("resumed")):
                if p is not None and p.poll() is None:
                    p.kill()
    out = (tmp_path / "resumed.log").read_text()
    assert _temporaries(str(run / "Model")) == []
    for name in left:  # a kill during a write left its temporary file; the resume removed it and said so
        assert f"removed {run / 'Model' / name}" in out
    a = load_checkpoint(str(tmp_path / "full" / "Model" / STATE_FILE))
    b = load_checkpoint(str(run / "Model" / STATE_FILE))
    assert a["step"] == b["step"] == 12
    for model in a["models"]:
        for k, v in a["models"][model].items():
            assert torch.equal(v, b["models"][model][k]), (model, k)
    g_full = load_checkpoint(str(tmp_path / "full" / "Model" / "netG_epoch_2.pth"))
    g_run = load_checkpoint(str(run / "Model" / "netG_epoch_2.pth"))
    assert all(torch.equal(v, g_run[k]) for k, v in g_full.items())
