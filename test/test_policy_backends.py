"""Inference backends: the ONNX export gives the same chunk in ONNX Runtime as torch for the same noise
(low-dim and one-camera configs), its checksums tie it to the checkpoint's weights, and the thread plan
never asks for more threads than the process has cores."""

from __future__ import annotations

import json

import pytest
import torch
from test_policy import make_obs, make_policy

from genil_ros.errors import CheckpointError, GenilError
from genil_ros.policy.backends import (
    BACKENDS,
    OnnxBackend,
    TorchBackend,
    choose_backend,
    make_backend,
    ort_providers,
)
from genil_ros.policy.checkpoint import load_policy, save_checkpoint
from genil_ros.policy.chunk_model import load_chunk_model, zero_obs
from genil_ros.policy.onnx_export import (
    FILM,
    META,
    SUMS,
    UNET,
    camera_file,
    export_onnx,
    file_sha256,
    network_files,
    read_onnx_export,
    weights_digest,
)
from genil_ros.policy.onnx_export import main as export_main
from genil_ros.policy.sampler import shift_chunk
from genil_ros.policy.threads import (
    MAX_DEFAULT_THREADS,
    ThreadPlan,
    available_cpus,
    physical_cores_available,
    set_process_env,
)

pytest.importorskip("onnxruntime")

# Same noise, same weights: torch and ONNX Runtime differ by float32 rounding only. Stated bound, in the
# action's raw units (the test normaliser spans 4 units, so this is ~1e-5 of the range).
CHUNK_TOL = 5e-5


@pytest.fixture(scope="module", params=["lowdim", "camera"])
def exported(request, tmp_path_factory):
    """A saved checkpoint (low-dim or one 32x32 camera) and its ONNX export in <ckpt>/onnx."""
    ckpt = tmp_path_factory.mktemp(request.param) / "ckpt"
    save_checkpoint(ckpt, make_policy(seed=3, camera=request.param == "camera"))
    out = export_onnx(ckpt)
    return ckpt, out


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_onnx_chunk_equals_torch_chunk(exported):
    ckpt, out = exported
    assert out == ckpt / "onnx"
    p = load_policy(ckpt, device="cpu")
    obs = make_obs(p, B=3, seed=5)
    ref = p.predict_action(obs, gen())
    ref_k = p.sample_actions(obs, num_samples=2, generator=gen())
    ref_warm = p.predict_action(obs, gen(1), warm_start=shift_chunk(ref, 2), steps=2)
    backend = p.set_backend(make_backend("onnxruntime", p, threads=ThreadPlan.choose(1)))
    assert isinstance(backend, OnnxBackend) and "CPUExecutionProvider" in backend.describe()
    got = p.predict_action(obs, gen())
    assert (got - ref).abs().max() <= CHUNK_TOL
    assert (p.sample_actions(obs, num_samples=2, generator=gen()) - ref_k).abs().max() <= CHUNK_TOL
    assert (p.predict_action(obs, gen(1), warm_start=shift_chunk(ref, 2), steps=2) - ref_warm).abs().max() <= CHUNK_TOL
    # and the chunk is a real function of the observation: another observation gives another chunk
    assert (p.predict_action(make_obs(p, B=3, seed=6), gen()) - got).abs().max() > 100 * CHUNK_TOL
    p.set_backend(None)
    assert isinstance(p.backend, TorchBackend) and torch.equal(p.predict_action(obs, gen()), ref)


def test_export_files_and_checksums(exported):
    ckpt, out = exported
    meta = json.loads((out / META).read_text())
    assert meta["format_version"] == 2 and meta["verified_max_abs_diff"] < 1e-4
    p0 = load_policy(ckpt, device="cpu")
    assert network_files(p0) == [camera_file(n) for n in p0.camera_names] + [FILM, UNET]
    assert sorted(meta["files"]) == sorted(network_files(p0))
    for name in network_files(p0):
        assert meta["files"][name] == file_sha256(out / name)
    sums = dict(reversed(line.split("  ")) for line in (out / SUMS).read_text().splitlines())
    assert sums == meta["files"]
    p = load_policy(ckpt, device="cpu")
    assert meta["weights_sha256"] == weights_digest(p)
    assert read_onnx_export(p).unet == out / UNET


def test_export_refuses_corrupt_or_foreign_files(exported, tmp_path):
    ckpt, out = exported
    import shutil

    bad = tmp_path / "onnx"
    shutil.copytree(out, bad)
    p = load_policy(ckpt, device="cpu")
    data = bytearray((bad / UNET).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / UNET).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"unet\.onnx: sha256 does not match"):
        read_onnx_export(p, bad)
    (bad / FILM).unlink()
    with pytest.raises(CheckpointError, match=r"film\.onnx: missing"):
        read_onnx_export(p, bad)
    with torch.no_grad():  # the same network with one weight changed: the export is not its own
        next(p.model.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(CheckpointError, match="made from other weights"):
        make_backend("onnxruntime", p)
    with pytest.raises(CheckpointError, match="no ONNX export here"):
        read_onnx_export(p, tmp_path / "nowhere")


def test_export_refuses_other_shapes(exported, tmp_path):
    ckpt, out = exported
    other = make_policy(seed=3, joints=("a", "b", "c", "d"), camera=(ckpt.parent.name.startswith("camera")))
    with pytest.raises(CheckpointError, match="exported for shapes"):
        read_onnx_export(other, out)


def test_weights_digest_is_about_values():
    a, b = make_policy(seed=1), make_policy(seed=1)
    assert weights_digest(a) == weights_digest(b)
    assert weights_digest(a) != weights_digest(make_policy(seed=2))


def test_export_cli_hook(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, make_policy(seed=4))
    assert export_main([str(ckpt), "--out", str(tmp_path / "x")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "x" / META).is_file()
    assert export_main([str(tmp_path / "missing")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().out


def test_make_backend_errors():
    p = make_policy()
    assert set(BACKENDS) == {"torch", "cuda_graph", "onnxruntime"}
    with pytest.raises(GenilError, match="expected one of"):
        make_backend("tensorflow", p)
    with pytest.raises(GenilError, match="CUDA device"):
        make_backend("cuda_graph", p)
    with pytest.raises(CheckpointError, match="not loaded from a checkpoint"):
        make_backend("onnxruntime", p)
    with pytest.raises(GenilError, match="not installed"):
        ort_providers(["NoSuchExecutionProvider"])
    assert ort_providers()[-1] == "CPUExecutionProvider"


# --------------------------------------------------------------------------- threads


def fake_topology(root, cores_of_cpu):
    for cpu, (pkg, core) in cores_of_cpu.items():
        d = root / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{pkg}\n")
        (d / "core_id").write_text(f"{core}\n")


def test_physical_cores_count_smt_siblings_once(tmp_path):
    fake_topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0)})
    assert physical_cores_available([0, 1, 2, 3], tmp_path) == 2
    assert physical_cores_available([0, 2], tmp_path) == 1
    assert physical_cores_available([0, 1, 4], tmp_path) == 3
    assert physical_cores_available([7, 8, 9], tmp_path) == 3  # unreadable topology: logical CPUs


def test_thread_plan_never_oversubscribes():
    cpus = len(available_cpus())
    plan = ThreadPlan.choose(0)
    assert 1 <= plan.intra_op <= min(physical_cores_available(), MAX_DEFAULT_THREADS)
    assert plan.inter_op == 1 and not plan.spinning and plan.source == "default"
    assert ThreadPlan.choose(10_000).intra_op == cpus
    assert ThreadPlan.choose(1).describe().startswith("intra-op 1 (parameter")
    assert "no spinning" in plan.describe()
    with pytest.raises(ValueError, match="threads"):
        ThreadPlan.choose(-1)


def test_thread_plan_reaches_torch_and_onnxruntime():
    before = torch.get_num_threads()
    try:
        b = TorchBackend(make_policy(), ThreadPlan.choose(1))
        assert torch.get_num_threads() == 1 and "intra-op 1" in b.describe()
    finally:
        torch.set_num_threads(before)
    so = ThreadPlan(2, 1, spinning=False).ort_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ThreadPlan(2, 1, spinning=True).ort_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "1"


def test_set_process_env_keeps_user_values():
    env = {"OMP_NUM_THREADS": "3"}
    plan = set_process_env(0, environ=env)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == str(plan.intra_op)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {}
    set_process_env(1, spinning=True, environ=env)
    assert "OMP_WAIT_POLICY" not in env and env["OMP_NUM_THREADS"] == "1"


def test_format_1_export_is_refused_with_a_request_to_export_again(exported, tmp_path):
    ckpt, out = exported
    import shutil

    old = tmp_path / "onnx"
    shutil.copytree(out, old)
    meta = json.loads((old / META).read_text())
    meta["format_version"] = 1
    (old / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="export this checkpoint again"):
        read_onnx_export(load_policy(ckpt, device="cpu"), old)


def test_auto_backend_is_onnxruntime_with_a_valid_export_else_torch_and_says_why(exported, tmp_path):
    ckpt, out = exported
    p = load_policy(ckpt, device="cpu")
    b, why = choose_backend("auto", p, ThreadPlan.choose(1))
    assert isinstance(b, OnnxBackend) and why == "auto: onnxruntime (valid ONNX export)"
    bare = tmp_path / "bare"
    save_checkpoint(bare, load_policy(ckpt, device="cpu"))  # the same weights, no export beside them
    b, why = choose_backend("auto", load_policy(bare, device="cpu"))
    assert isinstance(b, TorchBackend) and why.startswith("auto: torch (") and "no ONNX export here" in why
    with pytest.raises(GenilError, match="expected one of auto, torch"):
        choose_backend("fast", p)


def test_chunk_model_backend_and_threads(exported, tmp_path):
    """The node's model on each CPU backend: the same chunk for the same seed (ONNX Runtime within
    CHUNK_TOL of torch), the backend and thread plan reported; an explicit backend that cannot run is an
    error naming the parameter."""
    ckpt, _ = exported
    logs = []
    m_torch = load_chunk_model(str(ckpt), "cpu", seed=3, backend="torch", threads=1, log=logs.append)
    m_ort = load_chunk_model(str(ckpt), "auto", seed=3, backend="onnxruntime", threads=1)
    m_auto = load_chunk_model(str(ckpt), "cpu", seed=3)
    assert m_torch.backend.startswith("torch") and m_ort.backend.startswith("onnxruntime")
    assert m_auto.backend.startswith("onnxruntime") and "auto: onnxruntime" in m_auto.description
    assert m_torch.threads.startswith("intra-op 1 (parameter") and m_ort.device == "cpu"
    obs = zero_obs(m_torch.spec)
    obs["state"][:] = 0.3
    assert abs(m_ort(obs) - m_torch(obs)).max() <= CHUNK_TOL
    bare = tmp_path / "bare"
    save_checkpoint(bare, load_policy(ckpt, device="cpu"))
    with pytest.raises(GenilError, match="parameter backend: onnxruntime: .*no ONNX export here"):
        load_chunk_model(str(bare), "cpu", backend="onnxruntime")
    with pytest.raises(GenilError, match="parameter backend"):
        load_chunk_model(str(bare), "cpu", backend="tensorrt")
    with pytest.raises(GenilError, match="parameter threads"):
        load_chunk_model(str(bare), "cpu", threads=-2)
    assert not logs


def test_export_cli_format_onnx(tmp_path, capsys):
    from genil_ros.cli import main

    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, make_policy(seed=4))
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx"]) == 0
    assert "wrote" in capsys.readouterr().out
    read_onnx_export(load_policy(ckpt, device="cpu"))
    assert main(["export", "--checkpoint", str(ckpt)]) == 2  # safetensors needs --out
    assert "--out: required" in capsys.readouterr().err
