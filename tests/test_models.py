"""Every model config builds, learns, and every option does what its comment says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from dlrunner.errors import DlrunError
from dlrunner.models.auto import build_auto, ladder
from dlrunner.models.conv1d import build_conv1d
from dlrunner.models.init import init_weights
from dlrunner.models.lenet import LeNet, build_lenet
from dlrunner.models.lstm import LSTMClassifier, build_lstm
from dlrunner.models.mlp import MLP, build_mlp
from dlrunner.models.resnet import BasicBlock, build_resnet
from dlrunner.models.transformer import build_transformer
from dlrunner.models.tv import build_torchvision_resnet

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
CONFIGS = sorted(CONF.glob("*.yaml"))
SHAPES = {"image": [(1, 28, 28), (3, 32, 32)], "sequence": [(1, 40)], "tabular": [(13,)]}
NUM_CLASSES = 10


def _instantiate(path: Path, shape: tuple[int, ...]) -> nn.Module:
    cfg = OmegaConf.load(path)
    cfg.pop("init_from", None)  # a runner-level key (build.build_model), not a builder argument
    if "pretrained" in cfg:
        cfg.pretrained = False  # never reach for the network in tests
    return instantiate(cfg, in_shape=shape, num_classes=NUM_CLASSES)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_learns(model: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, *shape), torch.tensor([0, 3, 7, 9])
    model.train()
    out = model(x)
    assert out.shape == (4, NUM_CLASSES)
    loss = F.cross_entropy(out, y)
    loss.backward()
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.requires_grad]
    for name, grad in grads:
        assert grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(grad).all(), f"non-finite gradient in {name}"
    assert math.sqrt(sum(float(g.pow(2).sum()) for _, g in grads)) > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.003)  # small enough for ResNet-50 on 4 samples
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < loss.item()


def test_configs_found() -> None:
    expected = {"lenet", "resnet", "lstm", "conv1d", "transformer", "mlp", "auto"}
    assert expected <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_on_a_ladder(path: Path) -> None:
    # model=auto and the mismatch error only ever suggest models that are on a ladder.
    assert path.stem == "auto" or any(path.stem in ladder(kind) for kind in SHAPES)


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_learns(path: Path, kind: str) -> None:
    for shape in SHAPES[kind]:
        try:
            model = _instantiate(path, shape)
        except InstantiationException as exc:
            # A model made for another modality must refuse with a one-line, helpful error.
            assert isinstance(exc.__cause__, DlrunError), exc
            assert path.stem not in ladder(kind) and path.stem not in ("auto", "mlp")
            assert f"model={path.stem} " in str(exc.__cause__)
            assert "\n" not in str(exc.__cause__)
            return
        _assert_learns(model, shape)


def test_lenet_is_lenet5() -> None:
    model = build_lenet((1, 28, 28), NUM_CLASSES)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [6, 16] and linears == [120, 84, NUM_CLASSES]
    assert build_lenet((3, 8, 8), NUM_CLASSES)(torch.randn(2, 3, 8, 8)).shape == (2, NUM_CLASSES)


def test_modality_mismatch_names_model_and_alternatives() -> None:
    with pytest.raises(DlrunError) as err:
        build_lenet((1, 40), NUM_CLASSES)
    msg = str(err.value)
    assert "model=lenet" in msg and "(1, 40)" in msg and "model=auto" in msg
    assert all(name in msg for name in ("lstm", "conv1d", "transformer")) and "\n" not in msg


def test_unknown_activation_lists_choices() -> None:
    with pytest.raises(DlrunError, match="relu.*gelu.*tanh.*leaky_relu.*silu.*elu.*sigmoid"):
        build_mlp((13,), NUM_CLASSES, act="swish")


def test_unknown_option_lists_choices() -> None:
    with pytest.raises(DlrunError, match="stride2, maxpool"):
        build_resnet((3, 32, 32), NUM_CLASSES, downsample="avgpool")
    with pytest.raises(DlrunError, match="he, glorot, default"):
        build_mlp((13,), NUM_CLASSES, init="lecun")


def test_resnet_separable_is_depthwise_and_smaller() -> None:
    plain = build_resnet((3, 32, 32), NUM_CLASSES, width=16)
    sep = build_resnet((3, 32, 32), NUM_CLASSES, width=16, separable=True)

    def depthwise(model: nn.Module) -> list[nn.Conv2d]:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        return [m for m in convs if m.groups == m.in_channels > 1]

    assert not depthwise(plain) and len(depthwise(sep)) == 4  # 2 stages x 1 block x 2 convs
    stem = next(m for m in sep.modules() if isinstance(m, nn.Conv2d))
    assert stem.groups == 1  # the stem stays dense
    assert _n_params(sep) < _n_params(plain)


@pytest.mark.parametrize("downsample", ["stride2", "maxpool"])
def test_resnet_downsample(downsample: str) -> None:
    model = build_resnet((3, 32, 32), NUM_CLASSES, width=8, depth=3, downsample=downsample)
    has_pool = any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    has_stride = any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in model.modules())
    assert (has_pool, has_stride) == ((True, False) if downsample == "maxpool" else (False, True))
    features = model[:-1](torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 32, 8, 8)  # two halvings between three stages


def test_resnet_bn_off() -> None:
    def norms(model: nn.Module) -> int:
        return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    assert norms(build_resnet((3, 32, 32), NUM_CLASSES, width=8)) > 0
    assert norms(build_resnet((3, 32, 32), NUM_CLASSES, width=8, bn=False)) == 0


@pytest.mark.parametrize(
    ("bn", "bias", "expect_bias"),
    [(True, "auto", False), (False, "auto", True), (True, True, True), (False, False, False)],
)
def test_resnet_bias(bn: bool, bias: bool | str, expect_bias: bool) -> None:
    model = build_resnet((3, 32, 32), NUM_CLASSES, width=8, bn=bn, bias=bias, separable=True)
    # Depthwise convs never carry a bias: the pointwise conv right after absorbs it.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert convs and all((m.bias is not None) == expect_bias for m in convs)


def test_resnet_act_position_orders_block() -> None:
    def block_types(position: str) -> tuple[list[type], type]:
        model = build_resnet((3, 32, 32), NUM_CLASSES, width=8, act_position=position)
        block = next(m for m in model.modules() if isinstance(m, BasicBlock))
        return [type(m) for m in block.body], type(block.post)

    conv, act, bn = nn.Conv2d, nn.ReLU, nn.BatchNorm2d
    assert block_types("before_bn") == ([conv, act, bn, conv, act, bn], nn.Identity)
    assert block_types("after_bn") == ([conv, bn, act, conv, bn], nn.ReLU)


def test_resnet_head() -> None:
    gap = build_resnet((3, 32, 32), NUM_CLASSES, width=8, head="gap")
    fc = build_resnet((3, 32, 32), NUM_CLASSES, width=8, head="fc")

    def pools(model: nn.Module) -> bool:
        return any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())

    assert gap[-1][-1].in_features == 16 and pools(gap)  # channels of the last stage
    assert fc[-1][-1].in_features == 16 * 16 * 16 and not pools(fc)  # channels x 16 x 16
    assert fc(torch.randn(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(("scheme", "fan"), [("he", 1000), ("glorot", 1500)])
def test_init_std(scheme: str, fan: int) -> None:
    torch.manual_seed(0)
    model = build_mlp((1000,), NUM_CLASSES, width=500, init=scheme)
    first = model[1]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.15)
    assert torch.count_nonzero(first.bias) == 0


def test_init_lstm_orthogonal_recurrence() -> None:
    model = build_lstm((1, 40), NUM_CLASSES, width=32)
    gates = model.lstm.weight_hh_l0.detach().split(32)
    assert all(torch.allclose(g @ g.T, torch.eye(32), atol=1e-4) for g in gates)
    assert torch.all(model.lstm.bias_ih_l0[32:64] == 1) and torch.all(model.lstm.bias_hh_l0 == 0)


def test_init_default_leaves_torch_init() -> None:
    torch.manual_seed(0)
    expected = nn.Linear(20, 5).weight.clone()
    torch.manual_seed(0)
    layer = nn.Linear(20, 5)
    init_weights(layer, "default")
    assert torch.equal(layer.weight, expected)


def test_conv1d_dilations_keep_length() -> None:
    model = build_conv1d((2, 40), NUM_CLASSES, width=8, depth=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] == 3]
    dilations = [m.dilation[0] for m in convs]
    assert dilations == [1, 2, 4, 8]
    assert model.blocks(model.proj(torch.randn(2, 2, 40))).shape == (2, 8, 40)


def test_transformer_rejects_indivisible_heads() -> None:
    with pytest.raises(DlrunError, match="divisible"):
        build_transformer((1, 40), NUM_CLASSES, width=30, heads=4)


def test_lstm_bidirectional_doubles_features() -> None:
    model = build_lstm((3, 20), NUM_CLASSES, width=16, depth=2, bidirectional=True)
    assert model.head.in_features == 32 and model(torch.randn(2, 3, 20)).shape == (2, NUM_CLASSES)


def test_torchvision_small_grayscale() -> None:
    model = build_torchvision_resnet((1, 28, 28), NUM_CLASSES, pretrained=False)
    conv1 = model.conv1
    assert conv1.in_channels == 1 and conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, NUM_CLASSES)
    large = build_torchvision_resnet((1, 64, 64), NUM_CLASSES, pretrained=False)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub cache and a download that fails like an offline machine."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", refuse)
    return tmp_path


def test_pretrained_auto_offline_warns_and_builds(offline_hub: Path) -> None:
    with pytest.warns(UserWarning, match="pretrained resnet18 weights unavailable"):
        model = build_torchvision_resnet((3, 32, 32), NUM_CLASSES, pretrained="auto")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


def test_pretrained_true_offline_names_cache_path(offline_hub: Path) -> None:
    with pytest.raises(DlrunError) as err:
        build_torchvision_resnet((3, 32, 32), NUM_CLASSES, pretrained=True)
    assert str(offline_hub / "checkpoints" / "resnet18-f37072fd.pth") in str(err.value)


def test_pretrained_loads_cached_file_and_adapts_channels(offline_hub: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"].fill_(0.123)
    (offline_hub / "checkpoints").mkdir()
    torch.save(state, offline_hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = build_torchvision_resnet((1, 96, 96), NUM_CLASSES, pretrained=True)
    assert torch.all(model.layer1[0].conv1.weight == 0.123)
    # One input channel: the RGB filters' mean, rescaled by 3 (i.e. their sum).
    expected = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.conv1.weight, expected, atol=1e-6)


def test_auto_picks_first_rung() -> None:
    assert isinstance(build_auto((1, 28, 28), NUM_CLASSES, act="tanh"), LeNet)
    assert isinstance(build_auto((1, 40), NUM_CLASSES, act="tanh", init="he"), LSTMClassifier)
    assert isinstance(build_auto((13,), NUM_CLASSES), MLP)
    # Options reach the chosen model; ones it lacks (act for the LSTM) are dropped.
    lenet = build_auto((1, 28, 28), NUM_CLASSES, act="tanh")
    assert any(isinstance(m, nn.Tanh) for m in lenet.modules())


def test_ladders_start_where_auto_starts_and_have_configs() -> None:
    firsts = [ladder(kind)[0] for kind in ("image", "sequence", "tabular")]
    assert firsts == ["lenet", "lstm", "mlp"]
    names = {p.stem for p in CONFIGS}
    assert all(name in names for kind in SHAPES for name in ladder(kind))
