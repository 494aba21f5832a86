"""cpu_kernel.c: EnhanceNet's C inference path equals its PyTorch math, on any thread count, and falls back cleanly."""
import os
import shutil
import warnings

import pytest
import torch

import cpu_kernel
from conftest import ROOT
from model import NUM_ITERATIONS, EnhanceNet, init_weights, load_enhance_net

requires_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                       reason="needs a C compiler (cc, or $CC) to build cpu_kernel.c")


def random_net(std: float, conv_type: str = "dsc", scale_factor: int = 12) -> EnhanceNet:
    torch.manual_seed(0)
    net = EnhanceNet(scale_factor, conv_type).eval()
    init_weights(net, std)
    return net


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """library() as on a machine that has never built the kernel: an empty cache folder, nothing memoised."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu_kernel.library.cache_clear()
    yield tmp_path / "sgz"
    cpu_kernel.library.cache_clear()


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
        got = cpu_kernel.efe(cpu_kernel.library(NUM_ITERATIONS), list(net.parameters()), image, (height, width), 2)
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
        got = cpu_kernel.efe(cpu_kernel.library(NUM_ITERATIONS), list(net.parameters()), x, net.downscale_size(x), 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@requires_compiler
def test_our_snapshot_gives_the_same_image_through_c_and_pytorch():
    net = load_enhance_net(ROOT / "snapshots" / "sgz_ours.pth")
    x = torch.rand(1, 3, 396, 600) * 0.3
    with torch.inference_mode():
        c, c_x_r = net.fused_forward(x)
        plain, plain_x_r = net.plain_forward(x)
    assert cpu_kernel.library_for(x, list(net.parameters()), NUM_ITERATIONS) is not None
    torch.testing.assert_close(c_x_r, plain_x_r, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, plain, rtol=0, atol=2e-6)


@requires_compiler
@pytest.mark.parametrize("conv_type", ["dsc", "tc"])
def test_results_do_not_depend_on_the_thread_count(conv_type):
    net = random_net(0.2, conv_type)
    x = torch.rand(3, 3, 123, 157)
    with torch.inference_mode():
        one = net(x)
        torch.set_num_threads(2)
        try:
            two = net(x)
        finally:
            torch.set_num_threads(1)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@requires_compiler
def test_strided_and_channels_last_inputs_give_the_contiguous_result():
    net = random_net(0.2)
    x = torch.rand(2, 3, 90, 240)
    with torch.inference_mode():
        expected = net(x[..., ::2].contiguous())[0]
        assert torch.equal(net(x[..., ::2])[0], expected)
        assert torch.equal(net(x[..., ::2].contiguous(memory_format=torch.channels_last))[0], expected)


@requires_compiler
def test_only_float32_on_a_cpu_uses_the_kernel():
    net = random_net(0.2)
    x = torch.rand(1, 3, 24, 36)
    assert cpu_kernel.library_for(x, list(net.parameters()), NUM_ITERATIONS) is not None
    assert cpu_kernel.library_for(x.double(), list(net.parameters()), NUM_ITERATIONS) is None
    assert cpu_kernel.library_for(x, list(net.double().parameters()), NUM_ITERATIONS) is None


@requires_compiler
def test_subnormal_flushing_stays_inside_the_kernel():
    net = load_enhance_net(ROOT / "snapshots" / "sgz_ours.pth")
    with torch.inference_mode():
        net(torch.rand(1, 3, 48, 64))
    tiny = torch.tensor([torch.finfo(torch.float32).tiny])
    assert (tiny / 4).item() > 0  # this thread still computes subnormals as PyTorch expects


@requires_compiler
def test_the_kernel_is_built_once_into_the_cache(fresh_cache):
    kernel = cpu_kernel.library(NUM_ITERATIONS)
    assert kernel is not None
    built = list(fresh_cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("cpu_kernel-") and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    cpu_kernel.library.cache_clear()
    assert cpu_kernel.library(NUM_ITERATIONS) is not None
    assert list(fresh_cache.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


def test_without_a_compiler_it_warns_once_and_pytorch_gives_the_same_result(fresh_cache, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-compiler"))
    with pytest.warns(UserWarning, match="could not build cpu_kernel.c .*slower PyTorch path"):
        assert cpu_kernel.library(NUM_ITERATIONS) is None
    net = random_net(0.2)
    x = torch.rand(1, 3, 40, 52)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = net(x)[0]
    assert not fresh_cache.exists() or not list(fresh_cache.glob("*.so"))
    torch.testing.assert_close(fused, net.plain_forward(x)[0], rtol=0, atol=1e-5)
