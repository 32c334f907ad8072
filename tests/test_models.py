"""The model zoo: reference sizes, forward/backward, contracts and strict checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_stats

from factory.export.onnx import export_onnx
from factory.export.parity import check_parity, fixed_inputs
from factory.models.checkpoint import CheckpointMismatchError, load_model, load_state_dict_strict, save_model
from factory.models.heads import create_head
from factory.models.zoo import count_flops, count_params, create_model, list_models
from factory.registry import UnknownNameError
from factory.runtime.runners import onnx_runner, torch_runner

# ../shared/REFERENCE.md §1 (all nn.Parameters, frozen ones included).
REFERENCE_PARAMS = {
    "tinyfar_a": 5_562_844,
    "tinyfar_b": 3_105_434,
    "tinyfar_c": 1_832_106,
    "mobilefacenet": 1_200_512,
    "mbf": 2_059_520,
    "mbf_large": 6_314_880,
    "iresnet18": 24_025_600,
    "iresnet34": 34_139_328,
    "iresnet50": 43_590_848,
    "iresnet100": 65_156_160,
    "iresnet200": 118_833_920,
}
# Forward/backward and round trips run for every registered model; the big teachers only in `make test-all`.
BIG = {"iresnet50", "iresnet100", "iresnet200"}
EVERY_MODEL = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()]
# ONNX export costs 10-15 s a model (the torch.export-based exporter's tracing): by default one model of each
# architecture family (the others differ in widths and depths, not in operators); every model in `make test-all`.
EXPORTED_BY_DEFAULT = {"tinyfar_c", "mobilefacenet", "iresnet_nano"}
EVERY_MODEL_EXPORTED = [
    n if n in EXPORTED_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in list_models()
]


def test_registry_lists_every_reference_model() -> None:
    assert set(REFERENCE_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(name: str) -> None:
    with torch.device("meta"):  # sizes only: no memory for iresnet200's weights
        model = create_model(name)
    assert count_params(model) == REFERENCE_PARAMS[name]


def test_flops_are_twice_the_macs_reported_in_papers() -> None:
    assert count_flops(create_model("tinyfar_a")) / 1e6 == pytest.approx(253.5, abs=0.5)
    assert count_flops(create_model("mobilefacenet")) / 1e6 == pytest.approx(442, abs=2)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_forward_backward_and_contract(name: str) -> None:
    model = create_model(name)
    assert model.contract.embedding_dim == 512 and model.contract.input_size == (112, 112)
    x = torch.randn(2, 3, 112, 112)
    out = model.train()(x)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():  # eval mode: running BN statistics, so an image's embedding ignores its batch-mates
        assert torch.allclose(model.eval()(x)[:1], model(x[:1]), atol=1e-5)


@pytest.mark.parametrize("name", EVERY_MODEL_EXPORTED)
def test_onnx_export_parity(name: str, tmp_path) -> None:
    model = create_model(name).eval()
    randomise_stats(model, seed=3)
    runner = onnx_runner(export_onnx(model, tmp_path / f"{name}.onnx"), threads=2)
    parity = check_parity(torch_runner(model, threads=2), runner, fixed_inputs(model.contract, n=2))
    assert parity.min_cosine > 0.99999 and parity.n == 2


def test_unknown_model_names_close_match() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'tinyfar_a'"):
        create_model("tinyfar-a")


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_checkpoint_round_trip_keeps_weights_and_contract(name: str, tmp_path) -> None:
    model = create_model(name).eval()
    save_model(tmp_path / "m.pt", model, extra={"steps": 3})
    loaded = load_model(tmp_path / "m.pt").eval()
    assert loaded.model_name == name and loaded.contract == model.contract
    x = torch.randn(1, 3, 112, 112)
    assert torch.equal(model(x), loaded(x))


def test_strict_load_names_the_differences(tmp_path) -> None:
    model = create_model("mobilefacenet")
    state = {f"module.{k}": v for k, v in create_model("mobilefacenet").state_dict().items()}
    load_state_dict_strict(model, state, "ddp.pt")  # a DDP "module." prefix is accepted
    wrong = create_model("tinyfar_c").state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"wrong\.pt does not fit model 'mobilefacenet'") as err:
        load_state_dict_strict(model, wrong, "wrong.pt")
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)
    shaped = dict(model.state_dict())
    key = next(k for k, v in shaped.items() if v.ndim == 4)
    shaped[key] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(CheckpointMismatchError, match="shape differences"):
        load_state_dict_strict(model, shaped, "shaped.pt")


def test_checkpoints_that_need_code_are_refused(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt is not a loadable checkpoint"):
        load_model(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_margin_heads_penalise_the_target_class(head: str) -> None:
    torch.manual_seed(0)
    layer = create_head(head, 8, 5, scale=10.0, margin=0.3)
    emb, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    logits = layer(emb, labels)
    plain = 10.0 * torch.nn.functional.linear(
        torch.nn.functional.normalize(emb), torch.nn.functional.normalize(layer.weight)
    )
    target = torch.arange(4), labels
    assert (logits[target] < plain[target]).all()
    others = torch.ones_like(logits, dtype=torch.bool)
    others[target] = False
    assert torch.allclose(logits[others], plain[others], atol=1e-5)


# Key names and shapes as insightface's arcface_torch modules name them (REFERENCE.md §1 and its backbones/*.py),
# so a backbone.pth from insightface loads with strict=True.
INSIGHTFACE_KEYS = {
    "mbf": {
        "layers.0.layers.0.weight": (128, 3, 3, 3),  # ConvBlock(3, 64*2) conv
        "layers.0.layers.2.weight": (128,),  # its PReLU
        "layers.1.layers.0.weight": (128, 2, 3, 3),  # ConvBlock(128, 128, groups=64)
        "layers.2.layers.0.layers.0.weight": (128, 128, 1, 1),  # DepthWise: 1x1 expand to groups=128
        "layers.3.layers.0.layers.1.layers.0.weight": (128, 1, 3, 3),  # Residual -> DepthWise -> depthwise conv
        "conv_sep.layers.0.weight": (512, 256, 1, 1),
        "features.layers.0.layers.0.weight": (512, 1, 7, 7),  # GDC LinearBlock
        "features.layers.2.weight": (512, 512),  # Linear, no bias
        "features.layers.3.running_var": (512,),  # BatchNorm1d
    },
    "iresnet18": {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer4.1.bn3.running_mean": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 25088),
        "fc.bias": (512,),
        "features.weight": (512,),
    },
}


@pytest.mark.parametrize("name", sorted(INSIGHTFACE_KEYS))
def test_insightface_key_names_and_shapes(name: str) -> None:
    with torch.device("meta"):
        state = create_model(name).state_dict()
    for key, shape in INSIGHTFACE_KEYS[name].items():
        assert key in state, f"{name} lacks insightface key {key}"
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("module.") for k in state)


def test_iresnet_features_scale_is_frozen_at_one() -> None:
    model = create_model("iresnet_nano")
    assert not model.features.weight.requires_grad and torch.all(model.features.weight == 1)
