"""inference.py: the fast paths (C kernel and banded PyTorch) equal EnhanceNet's plain math, on any thread count,
and fall back cleanly; networks they do not fit are refused."""
import os
import shutil
import warnings

import pytest
import torch

import inference
from baselines import ZeroDCENet
from conftest import ROOT, random_net
from files import to_uint8
from model import load_enhance_net

requires_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                       reason="needs a C compiler (cc, or $CC) to build cpu_kernel.c")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """library() as on a machine that has never built the kernel: an empty cache folder, nothing memoised."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    inference.library.cache_clear()
    yield tmp_path / "sgz"
    inference.library.cache_clear()


@requires_compiler
@pytest.mark.parametrize("std, last_std", [(0.02, 0.02), (0.2, 10.0)], ids=["trained-scale", "saturating-tanh"])
@pytest.mark.parametrize("height, width", [(75, 100), (33, 1), (1, 1), (2, 129)])
def test_c_efe_equals_pytorch_efe(height, width, std, last_std):
    net = random_net(std, scale_factor=1)
    with torch.no_grad():
        net.e_conv7.point_conv.weight.normal_(0, last_std)
    image = torch.rand(2, 3, height, width)
    with torch.inference_mode():
        expected = net.low_resolution_factor(image)
        got = inference.c_efe(inference.library(), list(net.parameters()), image, (height, width), (height, width), 2)
    if last_std > 1 and height == 75:  # tanh's flat tails and its steep middle are both exercised
        assert (expected.abs() > 0.999).any() and (expected.abs() < 0.9).any()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 if last_std < 1 else 1e-5)


@requires_compiler
@pytest.mark.parametrize("height, width", [(900, 1200), (397, 601), (13, 25)])
def test_c_downscaling_equals_pytorch_bilinear(height, width):
    net = random_net(0.02)
    x = torch.rand(2, 3, height, width)
    with torch.inference_mode():
        expected = net.low_resolution_factor(x)
        got = inference.c_efe(inference.library(), list(net.parameters()), x, net.crop_size(x), net.downscale_size(x),
                              2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@requires_compiler
@pytest.mark.parametrize("uint8", [False, True], ids=["float", "uint8"])
def test_the_efe_in_strips_is_the_whole_images_bit_for_bit(uint8):
    """Strips narrower than the 7 rows each side that the convs reach, and wider, and one strip for the whole."""
    net = random_net(0.2)
    rgb = torch.randint(0, 120, (2, 397, 601, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    x = rgb if uint8 else rgb.permute(0, 3, 1, 2).float().div(255)
    planes = rgb.permute(0, 3, 1, 2)
    with torch.inference_mode():
        strips = {rows: inference.c_efe(inference.library(), list(net.parameters()), x, net.crop_size(planes),
                                        net.downscale_size(planes), 2, strip_rows=rows)
                  for rows in (1, 5, 14, 33, 1000)}
    whole = strips.pop(1000)
    assert whole.shape == (2, 3, 33, 50)
    for rows, got in strips.items():
        assert torch.equal(got, whole), f"strips of {rows} rows"


@requires_compiler
def test_our_snapshot_gives_the_same_image_through_c_and_pytorch():
    net = load_enhance_net(ROOT / "snapshots" / "sgz_ours.pth")
    x = torch.rand(1, 3, 396, 600) * 0.3
    with torch.inference_mode():
        c, c_x_r = inference.enhance(net, x)
        plain, plain_x_r = net(x)
    assert inference.kernel_for(x, *net.parameters()) is not None
    torch.testing.assert_close(c_x_r, plain_x_r, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, plain, rtol=0, atol=2e-6)


@requires_compiler
@pytest.mark.parametrize("conv_type", ["dsc", "tc"])
def test_results_do_not_depend_on_the_thread_count(conv_type):
    net = random_net(0.2, conv_type)
    x = torch.rand(3, 3, 123, 157)
    with torch.inference_mode():
        one = inference.enhance(net, x)
        torch.set_num_threads(2)
        try:
            two = inference.enhance(net, x)
        finally:
            torch.set_num_threads(1)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@requires_compiler
def test_strided_and_channels_last_inputs_give_the_contiguous_result():
    net = random_net(0.2)
    x = torch.rand(2, 3, 90, 240)
    with torch.inference_mode():
        expected = inference.enhance(net, x[..., ::2].contiguous())[0]
        assert torch.equal(inference.enhance(net, x[..., ::2])[0], expected)
        assert torch.equal(inference.enhance(net, x[..., ::2].contiguous(memory_format=torch.channels_last))[0],
                           expected)


@requires_compiler
def test_only_float32_on_a_cpu_uses_the_kernel():
    net = random_net(0.2)
    x = torch.rand(1, 3, 24, 36)
    assert inference.kernel_for(x, *net.parameters()) is not None
    assert inference.kernel_for(x.double(), *net.parameters()) is None
    assert inference.kernel_for(x, *net.double().parameters()) is None


@requires_compiler
def test_subnormal_flushing_stays_inside_the_kernel():
    net = load_enhance_net(ROOT / "snapshots" / "sgz_ours.pth")
    with torch.inference_mode():
        inference.enhance(net, torch.rand(1, 3, 48, 64))
    tiny = torch.tensor([torch.finfo(torch.float32).tiny])
    assert (tiny / 4).item() > 0  # this thread still computes subnormals as PyTorch expects


@requires_compiler
def test_the_kernel_is_built_once_into_the_cache(fresh_cache):
    kernel = inference.library()
    assert kernel is not None
    built = list(fresh_cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("cpu_kernel-") and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    inference.library.cache_clear()
    assert inference.library() is not None
    assert list(fresh_cache.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


@requires_compiler
def test_each_cpu_gets_its_own_build(fresh_cache, monkeypatch):
    """A -march=native build may not run on another CPU: a cache that several machines share keeps one for each."""
    assert inference.library() is not None
    monkeypatch.setattr(inference, "cpu_identity", lambda: "model name\t: another CPU")
    inference.library.cache_clear()
    assert inference.library() is not None
    assert len(list(fresh_cache.glob("cpu_kernel-*.so"))) == 2


@requires_compiler
def test_a_compiler_without_march_native_builds_for_the_baseline(fresh_cache, monkeypatch, tmp_path, capsys):
    compiler = tmp_path / "cc-without-native"
    compiler.write_text(f'#!/bin/sh\ncase "$*" in *-march=native*) echo "unknown option" >&2; exit 1;; esac\n'
                        f'exec {shutil.which(os.environ.get("CC", "cc"))} "$@"\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    net = random_net(0.2)
    x = torch.rand(1, 3, 40, 52)
    with torch.inference_mode():
        fused = inference.enhance(net, x)[0]
    assert inference.library() is not None and capsys.readouterr().err == ""
    assert len(list(fresh_cache.glob("cpu_kernel-*.so"))) == 1
    torch.testing.assert_close(fused, net(x)[0], rtol=0, atol=1e-5)


@requires_compiler
def test_a_build_without_the_kernels_functions_falls_back_with_one_line(fresh_cache, monkeypatch, capsys, tmp_path):
    """As clang 14's multiversioned builds were (the kernel is no longer multiversioned), with its functions under
    other names."""
    empty = tmp_path / "cpu_kernel.c"
    empty.write_text("int not_the_kernel;\n")
    monkeypatch.setattr(inference, "SOURCE", empty)
    assert inference.library() is None
    err = capsys.readouterr().err
    assert "undefined symbol: efe" in err and "slower PyTorch path" in err and "Traceback" not in err
    net = random_net(0.2)
    with torch.inference_mode():
        assert inference.enhance(net, torch.rand(1, 3, 24, 36))[0].shape == (1, 3, 24, 36)


def test_without_a_compiler_it_says_so_once_and_pytorch_gives_the_same_result(fresh_cache, monkeypatch, capsys):
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-compiler"))
    assert inference.library() is None
    assert inference.library() is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: could not build cpu_kernel.c (")
    assert "slower PyTorch path" in lines[0]
    net = random_net(0.2)
    x = torch.rand(1, 3, 40, 52)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = inference.enhance(net, x)[0]
    assert not fresh_cache.exists() or not list(fresh_cache.glob("*.so"))
    torch.testing.assert_close(fused, net(x)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("c_kernel", [True, False], ids=["C", "PyTorch"])
@pytest.mark.parametrize("shape, scale_factor", [((1, 3, 900, 1200), 12), ((2, 3, 397, 601), 12),
                                                 ((3, 3, 5, 7), 12), ((2, 3, 64, 48), 1)])
def test_fast_inference_equals_the_plain_math(shape, scale_factor, c_kernel):
    net = random_net(scale_factor=scale_factor)
    x = torch.rand(shape) * 0.5
    with torch.inference_mode():
        fast, fast_x_r = inference.enhance(net, x, c_kernel=c_kernel)
        plain, x_r = net(x)
    torch.testing.assert_close(fast_x_r, x_r, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-6)


def test_the_forward_is_the_same_with_and_without_autograd():
    net = random_net(0.2)
    x = torch.rand(1, 3, 50, 70)
    with torch.inference_mode():
        without = net(x)[0]
    assert torch.equal(net(x)[0].detach(), without)


def test_networks_the_fast_paths_do_not_fit_are_refused():
    with pytest.raises(TypeError, match="ZeroDCENet"):
        inference.enhance(ZeroDCENet().eval(), torch.rand(1, 3, 24, 24))
    zero_dce = ZeroDCENet().eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        assert torch.equal(inference.forward_for(zero_dce)(x)[0], zero_dce(x)[0])


@requires_compiler
def test_the_c_glue_checks_shapes_before_calling_c():
    net = random_net()
    x = torch.rand(1, 3, 48, 48)
    with pytest.raises(ValueError, match="not a 'dsc' EnhanceNet"):
        inference.c_efe(inference.library(), list(net.parameters())[:-1], x, (48, 48), (4, 4), 1)
    with pytest.raises(ValueError, match="does not fit x"):
        inference.c_enhance(inference.library(), x, torch.rand(1, 1, 4, 4), (48, 48), 1)
    with pytest.raises(ValueError, match="does not fit"):
        inference.c_efe(inference.library(), list(net.parameters()), x, (60, 48), (5, 4), 1)


@requires_compiler
@pytest.mark.parametrize("shape", [(1, 400, 600), (2, 203, 301), (1, 5, 7), (1, 900, 1200)])
def test_uint8_path_writes_what_the_float_path_rounds_to(shape):
    net = random_net(0.2)
    rgb = torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = to_uint8(inference.enhance(net, rgb.permute(0, 3, 1, 2).float().div(255))[0]).permute(0, 2, 3, 1)
        got = inference.enhance_uint8(net, rgb)
        fallback = inference.enhance_uint8(net, rgb, c_kernel=False)  # converted, then `enhance` in PyTorch
    assert got.shape == rgb.shape and got.dtype == torch.uint8
    assert torch.equal(got, expected)
    assert (got.int() - fallback.int()).abs().max() <= 1


@requires_compiler
@pytest.mark.parametrize("shape", [(2, 203, 301), (1, 5, 7), (1, 900, 1200)])
def test_rgbx_in_gives_the_rgb_result_and_keeps_x(shape):
    """PIL's own layout, 4 bytes a pixel: the C kernel reads and writes it as it is."""
    net = random_net(0.2)
    rgb = torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 256, (*shape, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = inference.enhance_uint8(net, rgb)
        got = inference.enhance_uint8(net, torch.cat([rgb, x], dim=-1))
        fallback = inference.enhance_uint8(net, torch.cat([rgb, x], dim=-1), c_kernel=False)
    assert got.shape == (*shape, 4)
    assert torch.equal(got[..., :3], expected) and torch.equal(got[..., 3:], x)
    assert fallback.shape == (*shape, 3) and (fallback.int() - expected.int()).abs().max() <= 1


def test_uint8_input_of_another_layout_is_refused():
    with pytest.raises(ValueError, match=r"N x H x W x 3 \(or 4\) uint8"):
        inference.enhance_uint8(random_net(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
