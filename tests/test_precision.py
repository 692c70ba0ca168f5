"""The "auto" dtype rule: bf16 only where the device computes it natively, fp32 elsewhere."""

import pytest
import torch

from sfclip import precision
from sfclip.teachers import TeacherConfig
from sfclip.teachers.base import Teacher


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has (or lacks) AVX512-BF16 / AMX; the cached probe is cleared around the test, and
    `SFCLIP_BF16` (which the suite sets) is cleared so that the hardware rule applies."""
    monkeypatch.delenv(precision.ENV, raising=False)

    def set_flags(avx512_bf16: bool, amx: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
        # such a CPU runs torch's AVX-512 kernels (unless ATEN_CPU_CAPABILITY says otherwise; tested below)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        precision._cpu_bf16.cache_clear()

    yield set_flags
    precision._cpu_bf16.cache_clear()


@pytest.mark.parametrize("avx512_bf16,amx,want", [(False, False, torch.float32), (True, False, torch.bfloat16),
                                                  (False, True, torch.bfloat16)])
def test_cpu_rule(cpu_flags, avx512_bf16, amx, want):
    cpu_flags(avx512_bf16, amx)
    assert precision.auto_dtype("cpu") is want
    ok, why = precision.bf16_reason("cpu")
    assert ok == (want is torch.bfloat16)
    assert torch.backends.cpu.get_cpu_capability() in why


def test_cpu_rule_follows_the_kernels_torch_runs(cpu_flags, monkeypatch):
    """bf16 instructions are no use when torch is held to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)."""
    cpu_flags(True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    precision._cpu_bf16.cache_clear()
    ok, why = precision.bf16_reason("cpu")
    assert not ok and "AVX2 kernels" in why
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    precision._cpu_bf16.cache_clear()
    assert precision.native_bf16("cpu")


def test_cuda_rule_without_cuda(monkeypatch):
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.auto_dtype("cuda") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.auto_dtype("cuda:0") is torch.bfloat16


def test_teacher_default_is_auto_and_resolves_per_device(cpu_flags):
    assert TeacherConfig().dtype == "auto"
    with pytest.raises(ValueError, match="dtype"):
        TeacherConfig(dtype="bf16")
    t = Teacher("t", 4, dtype=None)
    cpu_flags(False)
    assert t.effective_dtype("cpu") is torch.float32
    with t._autocast(torch.device("cpu")):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype is torch.float32  # autocast off: fp32 matmul
    cpu_flags(True)
    assert t.effective_dtype("cpu") is torch.bfloat16
    with t._autocast(torch.device("cpu")):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype is torch.bfloat16
    # An explicit dtype is honoured whatever the device.
    assert Teacher("t", 4, dtype=torch.bfloat16).effective_dtype("cpu") is torch.bfloat16


def test_demo_teachers_use_auto():
    from sfclip.demo.settings import demo_settings, teacher_configs

    assert {t.dtype for t in teacher_configs(demo_settings())} == {"auto"}


@pytest.mark.parametrize("value,want", [("1", torch.bfloat16), ("0", torch.float32), (" 1 ", torch.bfloat16)])
@pytest.mark.parametrize("hardware", [False, True])
def test_env_forces_the_rule_either_way(cpu_flags, monkeypatch, value, want, hardware):
    cpu_flags(hardware)
    monkeypatch.setenv(precision.ENV, value)
    assert precision.auto_dtype("cpu") is want
    assert precision.auto_dtype("cuda") is want
    ok, why = precision.bf16_reason("cpu")
    assert ok == (want is torch.bfloat16) and "SFCLIP_BF16" in why
    assert precision.hardware_bf16("cpu")[0] is hardware  # the hardware answer is still there to report
    t = Teacher("t", 4, dtype=None)
    assert t.effective_dtype("cpu") is want
    # an explicit dtype is not "auto": the variable does not touch it
    assert Teacher("t", 4, dtype=torch.float32).effective_dtype("cpu") is torch.float32


@pytest.mark.parametrize("hardware", [False, True])
def test_env_auto_or_empty_is_the_hardware_rule(cpu_flags, monkeypatch, hardware):
    cpu_flags(hardware)
    for value in ("auto", "AUTO", ""):
        monkeypatch.setenv(precision.ENV, value)
        assert precision.native_bf16("cpu") is hardware


def test_env_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(precision.ENV, "yes")
    with pytest.raises(ValueError, match=r"SFCLIP_BF16='yes'.*1 \(bf16\), 0 \(fp32\) or auto"):
        precision.auto_dtype("cpu")


@pytest.mark.parametrize("env,want", [("0", "fp32"), ("1", "bf16")])
def test_training_auto_follows_the_one_rule(monkeypatch, env, want):
    """train.precision=auto resolves through sfclip.precision (no rule of its own in the loop)."""
    from sfclip.train.loop import Trainer

    monkeypatch.setenv(precision.ENV, env)
    fake = type("T", (), {"device": torch.device("cpu")})()
    assert Trainer._resolve_precision(fake, "auto") == want
    assert Trainer._resolve_precision(fake, "fp32") == "fp32"
    assert Trainer._resolve_precision(fake, "bf16") == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        Trainer._resolve_precision(fake, "fp16")
