"""Every `train/accelerate/*.yaml` and every `accelerate launch` command in train/README.md, through accelerate's own
config loader, launch validation and environment preparation, up to the DeepSpeed / FSDP plugin the training
processes would build (CPU only: nothing is launched, and deepspeed need not be installed).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from accelerate.commands import launch as accelerate_launch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import (
    prepare_deepspeed_cmd_env,
    prepare_multi_gpu_env,
    prepare_simple_launcher_cmd_env,
)

from train.sft import parameter_sharding

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "train/accelerate"
# What each config must be: distributed type, ZeRO stage / FSDP version, and whether the trainer refuses it.
EXPECTED = {
    "cpu.yaml": (DistributedType.NO, None, False),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, None, False),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2, False),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 3, True),
    "fsdp.yaml": (DistributedType.FSDP, 2, False),
}


def readme_launch_commands() -> list[str]:
    """The `accelerate launch ...` lines of train/README.md's code blocks (continuations joined, env prefix kept)."""
    text = (REPO / "train/README.md").read_text().replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [
        line.split("#")[0].strip() for b in blocks for line in b.splitlines() if "accelerate launch" in line
    ]


def launch_env(command: str, monkeypatch) -> tuple[object, object, dict[str, str]]:
    """(launch args, config, environment of the training processes) for one documented command."""
    env_prefix, _, rest = command.partition("accelerate launch")
    for assignment in env_prefix.split():
        monkeypatch.setenv(*assignment.split("=", 1))
    # A developer's own ~/.cache/huggingface/accelerate/default_config.yaml must not fill in what a command omits.
    monkeypatch.setattr(accelerate_launch, "default_config_file", str(REPO / "no-such-default.yaml"))
    args = accelerate_launch.launch_command_parser().parse_args(shlex.split(rest))
    args, config, _ = accelerate_launch._validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(config.deepspeed_config) if config else ""
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    return args, config, env


def plugin_stage(distributed_type, env: dict[str, str], monkeypatch) -> int | None:
    """Build the plugin the processes would build from ``env``; its ZeRO stage or FSDP version."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if distributed_type == DistributedType.DEEPSPEED:
        return DeepSpeedPlugin().zero_stage
    if distributed_type == DistributedType.FSDP:
        return FullyShardedDataParallelPlugin().fsdp_version
    return None


def test_every_config_is_documented_and_every_documented_config_exists() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    named = set()
    for path in [
        *REPO.glob("*.md"),
        *REPO.glob("*/*.md"),
        *REPO.glob("train/**/*.yaml"),
        *REPO.glob("*/*.py"),
    ]:
        named |= set(re.findall(r"train/accelerate/([\w.-]+\.yaml)", path.read_text()))
    assert named and named <= set(EXPECTED), named - set(EXPECTED)
    used = {re.search(r"--config_file train/accelerate/(\S+)", c).group(1) for c in readme_launch_commands()
            if "--config_file" in c}  # fmt: skip
    assert used == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name: str) -> None:
    config = load_config_from_file(str(CONFIGS / name))
    distributed_type, stage, _ = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert config.num_machines == 1 and config.machine_rank == 0 and config.num_processes >= 1
    assert config.use_cpu == (name == "cpu.yaml")
    if stage is not None and distributed_type == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == stage
    if distributed_type == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == stage
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


@pytest.mark.parametrize("command", readme_launch_commands())
def test_readme_command_validates_to_its_processes_environment(command: str, monkeypatch) -> None:
    args, config, env = launch_env(command, monkeypatch)
    assert args.training_script == "train.cli" and args.module
    recipe = args.training_script_args[args.training_script_args.index("--recipe") + 1]
    assert (REPO / f"train/recipes/{recipe}.yaml").is_file()
    if config is None:  # the two-CPU-process commands: flags only
        if args.use_deepspeed:  # ZeRO-2 over gloo (tests/train/test_deepspeed.py runs it)
            assert args.zero_stage == 2 and args.num_processes == 2
        else:
            assert args.multi_gpu and env["ACCELERATE_USE_CPU"] == "true"
        return
    name = Path(args.config_file).name
    distributed_type, stage, refused = EXPECTED[name]
    assert plugin_stage(distributed_type, env, monkeypatch) == stage
    assert (parameter_sharding(distributed_type, stage) not in (None, "FSDP")) == refused
    if args.num_machines > 1:  # every machine agrees on the rendezvous, the total and its own rank
        assert args.main_process_ip == "10.0.0.1" and args.num_processes == 8 * args.num_machines
        assert args.machine_rank in range(args.num_machines)
        if args.use_deepspeed:
            assert args.deepspeed_multinode_launcher == "standard"
    elif name != "cpu.yaml":
        assert args.num_processes == 8
    if name != "cpu.yaml":
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_trainer_names_the_schemes_that_shard_parameters() -> None:
    assert parameter_sharding("MULTI_GPU", None) is None
    assert parameter_sharding("DEEPSPEED", 2) is None
    assert parameter_sharding("DEEPSPEED", 3) == "DeepSpeed ZeRO-3"
    assert parameter_sharding("FSDP", None) == "FSDP"
