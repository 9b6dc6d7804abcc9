"""save_pretrained / load_pretrained: round trips, the load report, adaptation rules and safe file reading."""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit import checkpoint_files, convert
from vitkit.errors import UsageError
from vitkit.weights import LoadReport, UnsafeCheckpointError, read_state_dict


def tiny(**overrides):
    return vitkit.create_model("vit_tiny_patch4_32", dim=32, depth=2, num_heads=2, **overrides).eval()


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


# ---- vitkit directories ------------------------------------------------------------------------------------
def test_save_pretrained_writes_config_with_architecture_and_preprocessing(tmp_path):
    model = tiny(preprocess={"label_names": tuple("abcdefghij")})
    out = vitkit.save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["dim"] == 32 and config["image_size"] == [32, 32]
    assert config["preprocess"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert config["preprocess"]["label_names"][-1] == "j"
    loaded = vitkit.load_pretrained(out)
    assert loaded.config == model.config


def test_load_report_is_clean_and_readable(tmp_path):
    vitkit.save_pretrained(tiny(), tmp_path)
    model, report = vitkit.load_checkpoint(tmp_path)
    assert isinstance(report, LoadReport) and report.clean and report.format == "vitkit"
    text = str(report)
    for field in ("missing", "unexpected", "resampled", "reinitialised", "stripped"):
        assert field in text


def test_weights_file_path_loads_its_directory(tmp_path):
    model = randomize(tiny())
    vitkit.save_pretrained(model, tmp_path)
    loaded = vitkit.load_pretrained(tmp_path / "model.safetensors")
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(images), model(images))
    save_file(tiny().state_dict(), str(tmp_path / "other.safetensors"))  # another file in the same directory
    other = vitkit.load_pretrained(tmp_path / "other.safetensors", num_heads=2)
    assert not torch.equal(other(images), model(images))



def test_loaded_models_are_in_eval_mode(tmp_path):
    vitkit.save_pretrained(tiny(), tmp_path / "dir")
    save_file(tiny().state_dict(), str(tmp_path / "bare.safetensors"))
    images = torch.randn(2, 3, 32, 32)
    for path in (tmp_path / "dir", tmp_path / "bare.safetensors"):
        model = vitkit.load_pretrained(path, num_heads=2, drop_rate=0.5, drop_path_rate=0.5)
        assert not any(m.training for m in model.modules()), path
        with torch.no_grad():  # no dropout or stochastic depth: the same features twice
            assert torch.equal(model.forward_features(images), model.forward_features(images))


def test_overrides_apply_to_the_loaded_config(tmp_path):
    vitkit.save_pretrained(tiny(), tmp_path)
    model = vitkit.load_pretrained(tmp_path, drop_path_rate=0.1)
    assert model.config.drop_path_rate == 0.1
    with pytest.raises(KeyError, match="drop_path_rate"):
        vitkit.load_pretrained(tmp_path, drop_path=0.1)


def test_new_grid_is_resampled_with_the_configured_mode(tmp_path):
    model = randomize(tiny())
    vitkit.save_pretrained(model, tmp_path)
    for mode in ("bicubic", "bilinear"):
        bigger, report = vitkit.load_checkpoint(tmp_path, image_size=(48, 64), pos_interp=mode)
        assert report.resampled == ["pos_embed.weight 8×8 → 12×16"]
        expected = torch.nn.functional.interpolate(
            model.pos_embed.weight.reshape(1, 8, 8, -1).permute(0, 3, 1, 2), size=(12, 16), mode=mode,
            align_corners=False).permute(0, 2, 3, 1).reshape(1, 12 * 16, -1)
        assert torch.allclose(bigger.pos_embed.weight, expected, atol=1e-6)
        assert torch.equal(bigger.cls_pos_embed, model.cls_pos_embed)  # [CLS] position is kept as is


def test_head_of_another_size_is_refused_unless_num_classes_asks(tmp_path):
    model = randomize(tiny())
    vitkit.save_pretrained(model, tmp_path)
    (tmp_path / "config.json").write_text(
        (tmp_path / "config.json").read_text().replace('"num_classes": 10', '"num_classes": 7'))
    with pytest.raises(ValueError, match="num_classes=7"):
        vitkit.load_pretrained(tmp_path)
    fresh, report = vitkit.load_checkpoint(tmp_path, num_classes=3)
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert fresh.head.out_features == 3 and not fresh.head.weight.any()  # zero head
    assert fresh.config.preprocess.label_names == ()
    assert torch.equal(fresh.blocks[1].mlp.fc2.weight, model.blocks[1].mlp.fc2.weight)
    headless, report = vitkit.load_checkpoint(tmp_path, num_classes=0)
    assert headless(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    assert all(k.endswith("(head removed)") for k in report.reinitialised)


def test_same_num_classes_keeps_the_head(tmp_path):
    model = randomize(tiny())
    vitkit.save_pretrained(model, tmp_path)
    loaded, report = vitkit.load_checkpoint(tmp_path, num_classes=10)
    assert report.clean and torch.equal(loaded.head.weight, model.head.weight)


def test_strict_reports_missing_and_unexpected(tmp_path):
    sd = tiny().state_dict()
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    del sd["norm.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    vitkit.save_pretrained(tiny(), tmp_path / "ref")
    (tmp_path / "config.json").write_text((tmp_path / "ref" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"(?s)missing:\s+norm.weight.*unexpected:\s+blocks.0.attn.extra"):
        vitkit.load_pretrained(tmp_path)
    _, report = vitkit.load_checkpoint(tmp_path, strict=False)
    assert report.missing == ["norm.weight"] and report.unexpected == ["blocks.0.attn.extra"]


def test_other_shape_mismatch_is_an_error(tmp_path):
    vitkit.save_pretrained(tiny(), tmp_path)
    with pytest.raises(ValueError, match=r"do not fit.*blocks.0.attn.proj.bias \(32,\) vs \(64,\)"):
        vitkit.load_pretrained(tmp_path, dim=64, num_heads=2)


def test_unknown_layout_names_the_known_ones(tmp_path):
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="timm"):
        vitkit.load_pretrained(tmp_path / "x.safetensors")
    assert {"timm", "jax"} <= set(convert.state_dict_formats())
    assert "vit" in convert.hf_model_types()



@pytest.mark.parametrize("wrappers", [("module.",), ("_orig_mod.",), ("module.", "_orig_mod.")])
@pytest.mark.parametrize("layout", ["vitkit", "timm"])
def test_wrapper_key_prefixes_are_stripped_and_reported(tmp_path, layout, wrappers):
    model = randomize(tiny())
    sd = model.state_dict() if layout == "vitkit" else timm_layout(model)
    torch.save({"model": {"".join(wrappers) + k: v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    loaded, report = vitkit.load_checkpoint(tmp_path / "ddp.pth", num_heads=2)
    names = {"module.": "module. (DistributedDataParallel)", "_orig_mod.": "_orig_mod. (torch.compile)"}
    assert report.format == layout and report.clean and report.stripped == [names[w] for w in wrappers]
    assert all(name in str(report) for name in report.stripped)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(images), model.forward_features(images))


def test_directory_saved_from_a_compiled_model_loads(tmp_path):
    model = randomize(tiny())
    vitkit.save_pretrained(torch.compile(model), tmp_path)  # compiled lazily: nothing runs here
    loaded, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and report.stripped == ["_orig_mod. (torch.compile)"]
    assert torch.equal(loaded.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)


def test_a_prefix_on_only_some_keys_is_kept(tmp_path):
    sd = {k: v for k, v in tiny().state_dict().items()}
    sd["module.extra"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "w.safetensors"))
    _, report = vitkit.load_checkpoint(tmp_path / "w.safetensors", num_heads=2, strict=False)
    assert report.unexpected == ["module.extra"] and report.stripped == []

# ---- safe reading ------------------------------------------------------------------------------------------
class Payload:
    """A pickle payload: unpickling it calls `function(*args)`, which writes a marker file."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker):
    """A payload per kind of callable an attacker would name: a builtin, a library function, a system call."""
    source = marker.with_name("source")
    source.write_text("pwned")
    return {"exec": Payload(exec, f"open({str(marker)!r}, 'w').write('pwned')"),
            "shutil.copyfile": Payload(shutil.copyfile, str(source), str(marker)),
            "os.system": Payload(os.system, f"echo pwned > {marker}")}


def advised(message: str) -> list[tuple[str, ...]]:
    """The allow_pickle tuples a refusal message tells the user to pass."""
    return [ast.literal_eval(m) for m in re.findall(r"allow_pickle=(\(.*?\))", message)]


@pytest.mark.parametrize("kind", ["exec", "shutil.copyfile", "os.system"])
def test_malicious_pickle_never_runs_by_default_or_by_following_the_advice(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1),
                "payload": payloads(marker)[kind]}, path)
    (tmp_path / "evil.bin").write_bytes(path.read_bytes())
    messages = []
    for allow in ((), ("argparse.Namespace",)):
        for load in (vitkit.load_pretrained, read_state_dict):
            with pytest.raises(UnsafeCheckpointError) as refused:
                load(path, allow_pickle=allow)
            messages.append(str(refused.value))
            for advice in advised(messages[-1]):  # a user following the message, adding what it names
                with contextlib.suppress(ValueError):
                    load(path, allow_pickle=(*allow, *advice))
        with pytest.raises(UnsafeCheckpointError):
            read_state_dict(tmp_path / "evil.bin", allow_pickle=allow)
    assert not marker.exists()
    assert all("can run code" in message and not advised(message) for message in messages)
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # what the old message advised
    function = next(name for name in needed if name != "argparse.Namespace")
    for allow in ((function,), (function, "argparse.Namespace")):
        with pytest.raises(UsageError, match=f"^allow_pickle names '{function}', a function: .*never allows"):
            read_state_dict(path, allow_pickle=allow)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load does run it
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("name", ["builtins.eval", "builtins.exec", "builtins.getattr", "os.system",
                                  "shutil.rmtree", "subprocess.run", "subprocess.Popen", "torch.load"])
def test_allow_pickle_refuses_callables_in_one_line(tmp_path, name):
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(UsageError, match=f"^allow_pickle names '{name}', .*never allows it") as refused:
        read_state_dict(tmp_path / "x.pth", allow_pickle=(name,))
    assert "\n" not in str(refused.value)


def test_numpy_values_load_by_following_the_advice(tmp_path):
    sd = {"w": torch.randn(3)}
    torch.save({"model": sd, "best_acc": np.float64(0.9), "mean": np.array([0.5, 0.4], dtype=np.float32),
                "dtype": np.dtype("int16")}, tmp_path / "ckpt.pth")
    with pytest.raises(UnsafeCheckpointError, match="hold only data") as refused:
        read_state_dict(tmp_path / "ckpt.pth")
    (advice,) = advised(str(refused.value))
    assert all(name.startswith("numpy.") for name in advice)
    assert torch.equal(read_state_dict(tmp_path / "ckpt.pth", allow_pickle=advice)["w"], sd["w"])


def timm_layout(model):
    """The model's state dict in timm's layout: one pos_embed (1, 1 + N, D), [CLS] position first."""
    sd = dict(model.state_dict())
    sd["pos_embed"] = torch.cat([sd.pop("cls_pos_embed"), sd.pop("pos_embed.weight")], dim=1)
    return sd


def test_pickle_with_extra_types_loads_only_when_allowed(tmp_path):
    sd = timm_layout(randomize(tiny()))
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-3)}, tmp_path / "ckpt.bin")
    with pytest.raises(UnsafeCheckpointError, match=r"allow_pickle=\('argparse.Namespace',\)"):
        read_state_dict(tmp_path / "ckpt.bin")
    loaded = read_state_dict(tmp_path / "ckpt.bin", allow_pickle=("argparse.Namespace",))
    assert torch.equal(loaded["pos_embed"], sd["pos_embed"])
    model = vitkit.load_pretrained(tmp_path / "ckpt.bin", allow_pickle=("argparse.Namespace",), num_heads=2)
    assert model.config.dim == 32


def test_npz_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="object array"):
        read_state_dict(tmp_path / "bad.npz")


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_broken_safetensors_give_a_clear_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_file(tiny().state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x00" * 64}[damage])
    with pytest.raises(ValueError, match=str(path)):
        read_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip"])
def test_broken_pickles_and_npz_give_clear_errors(tmp_path, content):
    for name in ("x.pth", "x.npz"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="x."):
            read_state_dict(tmp_path / name)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "w.h5").write_bytes(b"1234")
    with pytest.raises(ValueError, match=".safetensors"):
        read_state_dict(tmp_path / "w.h5")



@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_weights_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        for format in ("vitkit", "hf"):
            out = vitkit.save_pretrained(tiny(num_classes=0), tmp_path / format, format=format)
            for name in ("model.safetensors", "config.json"):
                assert stat.S_IMODE((out / name).stat().st_mode) == mode, (format, name)
    finally:
        os.umask(previous)


def _unreadable_checkpoints(tmp_path):
    save_file(tiny().state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(tiny().state_dict(), tmp_path / "w.pth")
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    return [tmp_path / name for name in ("w.safetensors", "w.pth", "w.npz")]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_reported_as_permission_denied(tmp_path):
    for path in _unreadable_checkpoints(tmp_path):
        path.chmod(0)
        with pytest.raises(UsageError, match=f"cannot read {path}: permission denied"):
            read_state_dict(path)


def test_permission_denied_is_not_reported_as_corrupt(tmp_path, monkeypatch):
    def denied(file, *args, **kwargs):  # what open() raises for a file of mode 000 (for anyone but root)
        raise PermissionError(13, "Permission denied", str(file))

    paths = _unreadable_checkpoints(tmp_path)
    monkeypatch.setattr(checkpoint_files, "open", denied, raising=False)  # the module's own open() only
    for path in paths:
        with pytest.raises(UsageError, match=r"^cannot read .*: permission denied; give this user read"):
            read_state_dict(path)

def test_every_load_logs_its_report(tmp_path, caplog):
    vitkit.save_pretrained(tiny(), tmp_path)
    with caplog.at_level("INFO", logger="vitkit.weights"):
        vitkit.load_pretrained(tmp_path)
        vitkit.load_pretrained(tmp_path, image_size=48)
    clean, resampled = [r for r in caplog.records if r.name == "vitkit.weights"]
    assert clean.levelname == "INFO" and "vitkit format" in clean.getMessage()
    assert resampled.levelname == "WARNING" and "8×8 → 12×12" in resampled.getMessage()


def test_allow_pickle_names_must_import(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="nonexistent_mod.Thing"):
        read_state_dict(tmp_path / "x.pth", allow_pickle=("nonexistent_mod.Thing",))


def test_generic_timm_layout_is_detected_after_specific_ones_whatever_the_import_order():
    import subprocess
    import sys

    # Importing the timm converter first (as a test or a user may) registers it before MAE and the hybrid.
    code = ("import vitkit.convert.timm_vit; from vitkit import convert; f = convert.state_dict_formats(); "
            "print(f[-1] == 'timm', f.index('mae') < f.index('timm'), "
            "f.index('timm_hybrid') < f.index('timm'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]
