"""The device option end to end (``sega.devices``): resolution, the CLI's --device, and the CPU twins of the
CUDA paths.

CI has no GPU, so the plumbing is held here by running with ``device="cpu"`` *explicitly* under
``sega.testing.device_trap.DeviceTrap``: a tensor made without a device that meets the avatar's tensors
raises there, as it would fail on CUDA. The CUDA tests at the end skip cleanly without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sega.devices import DeviceError, device_label, resolve_device
from sega.testing.device_trap import DeviceMixError, DeviceTrap

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")

SMALL_ATLAS = 64  # texels per side: ~1.6k Gaussians, an avatar made from parts in under a second
VIEW_SIZE = 48  # px of the test renders
CUDA_RGB_ATOL = 5e-3  # gsplat (float32, fast exp) against the CPU rasteriser: 1.5e-3 max measured on the astronaut
CUDA_GEOMETRY_ATOL = 1e-5  # metres: animate on CUDA against the CPU (float32 sums in another order)


# ---- resolution and the command line -----------------------------------------------------------------
def test_auto_resolves_to_what_torch_sees_and_names_are_checked():
    assert resolve_device("auto") == resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and device_label("cpu") == "cpu"
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@without_cuda
def test_cuda_without_cuda_is_a_one_line_sega_error():
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert "no CUDA GPU" in message and "--device cpu" in message and "\n" not in message


@without_cuda
@pytest.mark.parametrize("command", ["build", "play", "drive", "eval"])
def test_cli_device_cuda_without_cuda_is_one_line(tmp_path, capsys, command):
    """Every command that builds or renders takes --device; cuda on a machine without it is refused in one
    line (exit 2) before any input is read (the inputs here do not exist)."""
    from sega.cli import main

    missing = str(tmp_path / "missing")
    argv = {
        "build": ["build", "--example", "-o", str(tmp_path / "out"), "--no-download"],
        "play": ["play", missing + ".zip", "-o", str(tmp_path / "o.mp4")],
        "drive": ["drive", missing + ".npz", "--video", missing + ".mp4", "-o", str(tmp_path / "o.mp4"), "--no-download"],
        "eval": ["eval", "--video", missing + ".mp4", "-o", str(tmp_path / "report"), "--no-download"],
    }[command]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda'") and err.count("\n") == 1 and "Traceback" not in err, err


def test_every_building_or_rendering_command_offers_device():
    from sega.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("build", "play", "drive", "eval"):
        opts = {o: a for a in sub.choices[name]._actions for o in a.option_strings}
        assert opts["--device"].choices == ("auto", "cpu", "cuda") and opts["--device"].default == "auto", name


# ---- the trap itself ----------------------------------------------------------------------------------
def test_trap_catches_a_tensor_made_without_a_device_and_passes_placed_ones():
    placed = torch.ones(4, device="cpu")
    with DeviceTrap() as trap:
        ok = placed * torch.arange(4, device=placed.device) + torch.tensor(2.0)  # a 0-dim host scalar is fine on CUDA too
        host = torch.from_numpy(np.ones(4, np.float32)).numpy()  # host-only work passes
        moved = torch.as_tensor(host).to(placed.device) + ok  # ... and so does moving it
        with pytest.raises(DeviceMixError, match=r"made at .*test_devices.py"):
            _ = placed + torch.zeros(4)
        with pytest.raises(DeviceMixError, match="linear"):
            torch.nn.Linear(4, 2)(placed)  # a module made without device= (host parameters)
        assert torch.nn.Linear(4, 2).to(placed.device)(moved).shape == (2,)
        assert trap.host_ops >= 3


# ---- a small avatar made from parts (no photo): the runtime's CPU twin ---------------------------------
def _small_avatar(model, device: str):
    """An Avatar of the ICT head at SMALL_ATLAS with random colours, non-zero decoder weights and a little hair,
    every tensor made on ``device`` (the same numbers whatever the device)."""
    from sega.avatar import Avatar, AvatarOptions, dynamic_decoder_options, dynamic_texels, texel_spacing
    from sega.avatar.build import atlas_regions
    from sega.camera import orbit_camera
    from sega.gaussians import GaussianMaps, Gaussians
    from sega.nets.decoders import AvatarDecoders
    from sega.uv import Atlas

    atlas = Atlas.build(model, SMALL_ATLAS, regions=atlas_regions(model))
    options = AvatarOptions.preset("fast", atlas_resolution=SMALL_ATLAS, device=device)
    gen = torch.Generator().manual_seed(0)  # CPU draws, then placed: the same avatar on every device
    n = atlas.num_texels
    log_scale = torch.log(torch.as_tensor(0.7 * texel_spacing(atlas, model.vertices)))[:, None].repeat(1, 3)
    maps = GaussianMaps.initial(n, log_scale, torch.rand(n, 3, generator=gen), 2.0, device=device)
    decoders = AvatarDecoders.create(model, dynamic=dynamic_decoder_options(options), device=device)
    with torch.no_grad():  # non-zero residuals, so the dynamic and static branches take part
        for p in decoders.trainable_parameters():
            p.copy_(0.01 * torch.randn(p.shape, generator=gen))
    hair = Gaussians(*(torch.rand(k, generator=gen).to(device) for k in ((8, 3), (8, 4), (8, 3), (8,), (8, 3))))
    cam = orbit_camera(0.0, 0.0, 0.6, np.zeros(3), 20.0, VIEW_SIZE, VIEW_SIZE)
    return Avatar(model, np.zeros(model.num_identity, np.float32), model.expression_vector(jawOpen=0.1), atlas,
                  ~dynamic_texels(model, atlas, options.dynamic_threshold_m), maps, cam, cam, options, decoders=decoders,
                  hair=Gaussians(hair.means * 0.1, hair.quats, hair.scales * 0.005, hair.opacities, hair.colors))  # fmt: skip


def _frame(avatar):
    """One animated, posed, rendered frame and the static branch's maps: the per-frame contract's outputs."""
    expr = avatar.expression_with(jawOpen=0.7, eyeBlink_L=0.5)
    pose = (np.array([0.05, 0.3, 0.0], np.float32), np.array([0.0, 0.01, 0.0], np.float32))
    g = avatar.animate(expr, pose)
    out = avatar.render(expr, pose, camera=avatar.orbit_camera(25.0, size=VIEW_SIZE))
    return g, out, avatar.texel_maps(expr)


def _all_tensors(avatar) -> dict[str, torch.Tensor]:
    from dataclasses import fields

    rig = avatar.rig
    out = {f"rig.{f.name}": getattr(rig, f.name) for f in fields(rig) if isinstance(getattr(rig, f.name), torch.Tensor)}
    out.update({f"rig.static.{k}": v for k, v in rig.static.tensors().items()})
    out.update({f"rig.dynamic_maps.{k}": v for k, v in rig.dynamic_maps.tensors().items()})
    out.update({f"maps.{k}": v for k, v in avatar.maps.tensors().items()})
    out.update({f"hair.{k}": v for k, v in avatar.hair.tensors().items()})
    for name in ("encoder", "dynamic", "static"):
        module = getattr(avatar.decoders, name)
        out.update({f"decoders.{name}.{k}": v for k, v in [*module.named_parameters(), *module.named_buffers()]})
    return out


@pytest.fixture(scope="module")
def small_cpu(ict_model):
    """(the small avatar made with device="cpu" under the trap, its frame) - the trap held through precompute."""
    with DeviceTrap():
        avatar = _small_avatar(ict_model, "cpu")
        return avatar, _frame(avatar)


def test_runtime_makes_no_tensor_off_the_chosen_device(small_cpu, ict_model, tmp_path):
    """precompute, animate (with the dynamic decoder and a head pose), texel_maps, render, save and load with
    device="cpu" under the trap; every tensor the avatar holds and returns reports the chosen device."""
    avatar, (g, out, maps) = small_cpu
    want = torch.device("cpu")
    held = _all_tensors(avatar)
    assert len(held) > 40 and all(t.device == want for t in held.values()), [k for k, t in held.items() if t.device != want]
    assert all(t.device == want for t in [*g.tensors().values(), out.rgb, out.alpha, out.depth, *maps.tensors().values()])
    with DeviceTrap():
        path = avatar.save(tmp_path / "avatar.npz")
        loaded = type(avatar).load(path, ict_model, device="cpu")
        _frame(loaded)
    assert all(t.device == want for t in _all_tensors(loaded).values())


def test_explicit_cpu_equals_the_default_path(small_cpu, ict_model, tmp_path):
    """The same avatar loaded with the default device ("auto": the CPU here) and with device="cpu" animates
    and renders to the same numbers, and ``to`` its own device is itself."""
    avatar, (g, out, _) = small_cpu
    path = avatar.save(tmp_path / "avatar.npz")
    default = type(avatar).load(path, ict_model)
    explicit = type(avatar).load(path, ict_model, device="cpu")
    assert default.device == explicit.device == torch.device(resolve_device("auto"))
    if default.device.type == "cpu":
        gd, od, _ = _frame(default)
        ge, oe, _ = _frame(explicit)
        assert all(torch.equal(a, b) for a, b in zip(gd.tensors().values(), ge.tensors().values()))
        assert torch.equal(od.rgb, oe.rgb) and torch.equal(od.alpha, oe.alpha)
        assert torch.equal(oe.rgb, out.rgb)  # and the avatar it was saved from
    assert explicit.to("cpu") is explicit and explicit.rig.to("cpu") is explicit.rig


def test_a_forgotten_device_is_caught(ict_model, monkeypatch):
    """The trap fails the runtime when one of its tensors is made without the device: here the head model's
    buffers ignore the device they are asked for (as a regression in ``torch_buffers`` would)."""
    from sega.headmodel.base import HeadModel

    original = HeadModel.torch_buffers
    monkeypatch.setattr(HeadModel, "torch_buffers", lambda self, device=None, dtype=torch.float32: original(self, None, dtype))
    with DeviceTrap(), pytest.raises(DeviceMixError, match="made at"):
        _frame(_small_avatar(ict_model, "cpu"))


def test_saved_files_are_the_same_whichever_device_holds_the_avatar(small_cpu, tmp_path):
    """The file holds CPU arrays and a header whatever ``Avatar.device`` is; the resolved build device is in the
    options (``to`` to the same device is a no-op, so this checks the format: the CUDA twin below moves it)."""
    avatar, _ = small_cpu
    a = avatar.save(tmp_path / "a.npz")
    b = avatar.to(resolve_device("auto")).save(tmp_path / "b.npz")
    with np.load(a) as za, np.load(b) as zb:
        assert za.files == zb.files
        for k in za.files:
            assert za[k].dtype == zb[k].dtype and za[k].shape == zb[k].shape, k
            if k != "header_json":
                assert np.array_equal(za[k], zb[k]), k
    assert type(avatar).read_header(a)["options"]["device"] == "cpu"


def test_to_moves_every_tensor_and_leaves_the_original(small_cpu):
    """``Avatar.to`` on torch's shape-only "meta" device (the CPU twin of ``to("cuda")``): every tensor of the copy
    (maps, hair, decoders, the moved rig) is there, the original stays on the CPU, and the copy still animates."""
    avatar, (g, _, _) = small_cpu
    moved = avatar.to("meta")
    assert moved.device.type == "meta" and moved.rig is not avatar.rig and moved.decoders is not avatar.decoders
    assert [k for k, t in _all_tensors(moved).items() if t.device.type != "meta"] == []
    assert all(t.device.type == "cpu" for t in _all_tensors(avatar).values())
    frame = moved.animate(avatar.expression_with(jawOpen=0.7), (np.zeros(3), np.zeros(3)))
    assert frame.means.device.type == "meta" and frame.means.shape == g.means.shape


# ---- the build: device="cpu" explicitly, under the trap, against the default build -------------------
@pytest.mark.slow
def test_build_with_explicit_cpu_makes_no_stray_tensor_and_equals_the_default(fast_build, ict_model, astronaut, face_detector, tmp_path):
    """A fast build with device="cpu" under the trap (fit, initialisation, decoders, optimisation, hair,
    precompute) gives the very same avatar as the session's default build, and records the resolved device."""
    from sega.avatar import AvatarOptions, build_avatar

    default, _, _ = fast_build
    with DeviceTrap() as trap:
        avatar, _ = build_avatar(astronaut, ict_model, AvatarOptions.preset("fast", device="cpu"), detector=face_detector)
    assert trap.host_ops > 0  # host-only work ran under the trap (numpy bridges), and met no placed tensor
    assert avatar.options.device == "cpu" and avatar.provenance["device"] == "cpu"
    assert default.options.device == resolve_device("auto")  # "auto" is never what an artefact records
    if default.device.type == "cpu":
        for name, t in default.maps.tensors().items():
            assert torch.equal(t, avatar.maps.tensors()[name]), name
        for name, arr in default.decoders.arrays().items():
            assert np.array_equal(arr, avatar.decoders.arrays()[name]), name
        assert torch.equal(default.hair.means, avatar.hair.means)
    header = type(avatar).read_header(avatar.save(tmp_path / "avatar.npz"))
    assert header["options"]["device"] == "cpu" and header["provenance"]["device"] == "cpu"


# ---- CUDA (skipped without a GPU) ----------------------------------------------------------------------
@needs_cuda
def test_avatar_on_cuda_animates_renders_and_saves_like_the_cpu(small_cpu, tmp_path):
    avatar, (g_cpu, out_cpu, _) = small_cpu
    gpu = avatar.to("cuda")
    assert all(t.device.type == "cuda" for t in _all_tensors(gpu).values())
    g, out, _ = _frame(gpu)
    assert out.rgb.is_cuda and g.means.is_cuda
    assert torch.allclose(g.means.cpu(), g_cpu.means, atol=CUDA_GEOMETRY_ATOL)
    assert (out.rgb.cpu() - out_cpu.rgb).abs().max() < CUDA_RGB_ATOL  # gsplat against the CPU rasteriser
    a, b = avatar.save(tmp_path / "cpu.npz"), gpu.save(tmp_path / "cuda.npz")
    with np.load(a) as za, np.load(b) as zb:
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)


@needs_cuda
@pytest.mark.slow
def test_build_on_cuda_is_within_tolerance_of_the_cpu(fast_build, ict_model, astronaut, face_detector):
    from sega.avatar import AvatarOptions, build_avatar
    from sega.metrics import psnr

    cpu = fast_build[0] if fast_build[0].device.type == "cpu" else fast_build[0].to("cpu")
    gpu, data = build_avatar(astronaut, ict_model, AvatarOptions.preset("fast", device="cuda"), detector=face_detector)
    assert gpu.options.device == "cuda" and gpu.provenance["device"].startswith("cuda")
    target = data.target
    a = cpu.render().rgb.cpu().numpy()
    b = gpu.render().rgb.cpu().numpy()
    assert abs(psnr(a, target, data.face_mask) - psnr(b, target, data.face_mask)) < 1.0  # issue 19 targets 0.3 dB (default preset)


# ---- the CUDA Space image (read, not built: CI has no Docker) -------------------------------------------
def test_cuda_space_image_builds_gsplat_and_runs_what_the_cpu_image_runs():
    """space/Dockerfile.cuda: a CUDA runtime base, the CUDA build of the pinned torch from the wheel index of the
    base image's CUDA, gsplat's extension compiled at image build time for the Space GPUs, onnxruntime-gpu of the
    pinned onnxruntime, and the CPU image's command. The CPU image stays on python:3.11 (tests/test_app.py)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    docker = (repo / "space" / "Dockerfile.cuda").read_text()
    cpu = (repo / "space" / "Dockerfile").read_text()
    cuda = re.search(r"^ARG CUDA_VERSION=(\d+)\.(\d+)\.\d+$", docker, re.MULTILINE)
    assert cuda and f"whl/cu{cuda[1]}{cuda[2]}" in docker  # torch's CUDA = the toolkit's (nvcc is checked against it)
    assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel-.* AS build$", docker, re.MULTILINE)
    assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-cudnn-runtime-.* AS runtime$", docker, re.MULTILINE)
    assert "grep '^torch==' requirements.txt" in docker and "grep '^gsplat==' requirements.txt" in docker
    assert 'onnxruntime-gpu==$ORT' in docker and "pip uninstall -y -q onnxruntime" in docker
    archs = re.search(r'^ARG GSPLAT_CUDA_ARCHS="([0-9.;]+)"$', docker, re.MULTILINE)
    assert archs and {"8.0", "8.6", "8.9", "9.0"} <= set(archs[1].split(";"))
    assert 'TORCH_CUDA_ARCH_LIST="$GSPLAT_CUDA_ARCHS"' in docker and "from gsplat import csrc" in docker
    command = re.compile(r"^CMD .*$", re.MULTILINE)
    assert command.search(docker)[0] == command.search(cpu)[0]
    assert "FROM python:3.11" in cpu and "nvidia" not in cpu
