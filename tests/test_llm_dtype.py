"""``model.dtype = "auto"``: bf16 only where the device computes it natively; the choice is recorded."""

from __future__ import annotations

import json

import pytest
import torch

from test_llm_engine import TINY

from rolora.llm.base_dtype import choose_dtype, cpu_info, native_bf16, parse_cpuinfo
from rolora.llm.config import ConfigError, RunConfig, load_config

AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
"""
ZEN4 = AVX2_EPYC.replace("7B12", "9B14").replace("avx2 bmi2", "avx2 avx512f avx512_bf16 bmi2")
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f amx_tile amx_bf16\n"
CPU = torch.device("cpu")


def test_auto_is_the_default_and_an_accepted_value():
    assert RunConfig().model.dtype == "auto"
    assert load_config(None, ["model.dtype=float32"]).model.dtype == "float32"
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config(None, ["model.dtype=fp8"])


@pytest.mark.parametrize("text, expected", [(AVX2_EPYC, "float32"), (ZEN4, "bfloat16"), (SAPPHIRE, "bfloat16")])
def test_auto_picks_bf16_only_with_native_bf16_on_the_cpu(text, expected):
    info = parse_cpuinfo(text)
    choice = choose_dtype("auto", CPU, info, environ={})
    assert choice.name == expected and choice.dtype == getattr(torch, expected)
    assert info.model in choice.reason
    assert ("has none of" in choice.reason) == (expected == "float32")


def test_cuda_is_native_and_explicit_dtypes_are_kept():
    assert choose_dtype("auto", torch.device("cuda"), parse_cpuinfo(AVX2_EPYC), environ={}).name == "bfloat16"
    for name in ("float32", "bfloat16", "float16"):
        assert choose_dtype(name, CPU, parse_cpuinfo(ZEN4), environ={}).name == name


def test_the_environment_overrides_the_cpu_flags():
    assert native_bf16(CPU, parse_cpuinfo(ZEN4), environ={"ROLORA_NATIVE_BF16": "0"}) == (False, "ROLORA_NATIVE_BF16=0")
    assert native_bf16(CPU, parse_cpuinfo(AVX2_EPYC), environ={"ROLORA_NATIVE_BF16": "1"})[0]
    assert native_bf16(CPU, parse_cpuinfo(AVX2_EPYC), environ={"ROLORA_NATIVE_BF16": "yes"})[0] is False  # not 0/1


def test_cpu_info_reads_this_machine_and_tolerates_a_missing_file(tmp_path):
    assert cpu_info(tmp_path / "missing").model == "unknown"
    line = parse_cpuinfo(ZEN4).line(2)
    assert "AMD EPYC 9B14" in line and "avx512_bf16" in line and "not: avx512_vnni amx_tile amx_bf16" in line
    assert isinstance(cpu_info().flags, frozenset)


def test_the_run_folder_records_the_choice_and_why(tmp_path):
    from rolora.llm.engine import run

    config = load_config(None, TINY["roberta"] + ["data.max_train_samples=24", "federated.rounds=1",
                                                  "train.local_steps=1", "federated.clients=2"])
    run(config, tmp_path / "run", quiet=True)
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert versions["base_dtype"] == "float32"  # the tests pin ROLORA_NATIVE_BF16=0 (conftest)
    assert versions["base_dtype_reason"] == "auto: ROLORA_NATIVE_BF16=0"
    assert (versions["client_workers"], versions["client_workers_reason"]) == (2, "auto: CPU")
    assert ("frozen base in float32 (auto: ROLORA_NATIVE_BF16=0); client workers: 2 (auto: CPU); OpenMP waits:"
            in (tmp_path / "run" / "run.log").read_text())
