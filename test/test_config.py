"""Typed configuration: every error names the file and the key."""

import subprocess
import sys
import textwrap

import pytest
import yaml

from genil_ros.config import ConfigError, ExperimentConfig, TaskConfig, config_from_dict, dump_config, load_config
from genil_ros.paths import config_path


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
task:
  joint_names: [a, b]
  cameras: [{name: wrist, topic: /wrist/image}]
"""


def test_shipped_configs_load():
    cfg = load_config(config_path("sim_task.yaml"))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.task.action_dim == 4 and cfg.task.cameras[0].name == "front"
    h = cfg.task.horizon
    assert h.n_action_steps <= h.horizon - h.n_obs_steps + 1


def test_defaults_and_types(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "train: {lr: 1}\n"))
    assert cfg.task.cameras[0].height == 96
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
    assert cfg.task.state_dim == 2 and cfg.task.action_dim == 2


def test_roundtrip_dump(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    again = load_config(write(tmp_path, dump_config(cfg), "again.yaml"))
    assert again == cfg


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, GOOD + "policy: {down_dim: [64]}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "policy.down_dim" in msg and "did you mean 'down_dims'" in msg


def test_wrong_type(tmp_path):
    p = write(tmp_path, GOOD + "train: {batch_size: many}\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: train\.batch_size: expected an integer, got 'many'"):
        load_config(p)


def test_wrong_type_in_list(tmp_path):
    p = write(tmp_path, "task:\n  joint_names: [a, 3]\n")
    with pytest.raises(ConfigError, match=r"task\.joint_names\[1\]: expected a string"):
        load_config(p)


def test_bool_is_not_an_int(tmp_path):
    p = write(tmp_path, GOOD + "train: {num_epochs: true}\n")
    with pytest.raises(ConfigError, match=r"train\.num_epochs"):
        load_config(p)


def test_bad_literal(tmp_path):
    p = write(tmp_path, GOOD + "policy: {inference_scheduler: euler}\n")
    with pytest.raises(ConfigError, match=r"policy\.inference_scheduler: 'euler' is not one of 'ddpm', 'ddim'"):
        load_config(p)


@pytest.mark.parametrize("to,tp,ta,key", [
    (2, 16, 16, "n_action_steps"),  # T_a > T_p - T_o + 1 = 15
    (2, 16, 0, "n_action_steps"),
    (20, 16, 1, "n_obs_steps"),
    (0, 16, 8, "n_obs_steps"),
])
def test_impossible_horizons(tmp_path, to, tp, ta, key):
    p = write(tmp_path, GOOD + f"  horizon: {{n_obs_steps: {to}, horizon: {tp}, n_action_steps: {ta}}}\n")
    with pytest.raises(ConfigError, match=rf"task\.horizon\.{key}"):
        load_config(p)


def test_limit_horizon_is_accepted(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "  horizon: {n_obs_steps: 2, horizon: 16, n_action_steps: 15}\n"))
    assert cfg.task.horizon.n_action_steps == 15


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_broken_yaml(tmp_path):
    p = write(tmp_path, "task:\n  joint_names: [a, b\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: invalid YAML at line \d+"):
        load_config(p)


def test_top_level_not_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_joint_names(tmp_path):
    with pytest.raises(ConfigError, match=r"task\.joint_names: must list at least one joint"):
        load_config(write(tmp_path, "train: {seed: 1}\n"))


def test_duplicate_joint(tmp_path):
    with pytest.raises(ConfigError, match=r"duplicate joint names \['a'\]"):
        load_config(write(tmp_path, "task: {joint_names: [a, b, a]}\n"))


def test_camera_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"task\.cameras\[0\]\.topic: is required"):
        load_config(write(tmp_path, "task: {joint_names: [a], cameras: [{name: c}]}\n"))


def test_command_action_needs_topic(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.action_topic: is required"):
        load_config(write(tmp_path, GOOD + "dataset: {action_source: command}\n"))


def test_section_alone():
    t = config_from_dict({"joint_names": ["x"]}, TaskConfig, section="task")
    assert t.action_dim == 1
    with pytest.raises(ConfigError, match=r"<dict>: task\.control_rate_hz"):
        config_from_dict({"joint_names": ["x"], "control_rate_hz": 0}, TaskConfig, section="task")


def test_cli_reports_one_line(tmp_path):
    """A bad config given to a command: one line naming the file, non-zero exit, no traceback."""
    p = write(tmp_path, "task: [\n")
    out = subprocess.run([sys.executable, "-m", "genil_ros.cli", "check-config", str(p)], capture_output=True,
                         text=True)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "invalid YAML" in err[0] and str(p) in err[0], out.stderr
    assert "Traceback" not in out.stderr


def test_cli_unknown_command():
    out = subprocess.run([sys.executable, "-m", "genil_ros.cli", "trian"], capture_output=True, text=True)
    assert out.returncode == 2 and "did you mean 'train'" in out.stderr


def test_typed_task_form_and_both_forms_agreeing(tmp_path):
    typed = {"task": {
        "observations": [{"name": "arm", "type": "joint_position", "joints": ["a", "b"]},
                         {"name": "obj", "type": "vector", "topic": "/object", "dims": ["x", "y", "z"]},
                         {"name": "front", "type": "camera", "topic": "/camera/image_raw"}],
        "actions": [{"name": "arm", "type": "joint_position", "joints": ["a", "b"], "topic": "/arm/commands"},
                    {"name": "gripper", "type": "gripper", "joints": ["f"], "topic": "/gripper/commands",
                     "binary": True, "open_position": 0.04}]}}
    cfg = config_from_dict(typed, source="typed.yaml")
    assert cfg.task.state_dim == 5 and cfg.task.action_dim == 3 and cfg.task.joint_names == []
    assert [c.name for c in cfg.task.camera_entries] == ["front"]
    # a legacy config after validation carries both forms; dumped and loaded again it still agrees
    legacy = config_from_dict({"task": {"joint_names": ["a", "b"], "use_velocity": True},
                               "dataset": {"action_source": "command", "action_topic": "/cmd"}})
    again = config_from_dict(yaml.safe_load(dump_config(legacy)), source="dumped.yaml")
    assert again.task.layout == legacy.task.layout and again.task.state_dim == 4
    # both forms present and disagreeing: one line naming the key
    bad = yaml.safe_load(dump_config(legacy))
    bad["task"]["joint_names"] = ["a", "c"]
    with pytest.raises(ConfigError, match=r"bad.yaml: task.joint_names: the joint_names form and "
                                          r"observations/actions disagree"):
        config_from_dict(bad, source="bad.yaml")
    with pytest.raises(ConfigError, match=r"typed.yaml: task.actions\[1\].closed_position"):
        typed["task"]["actions"][1]["open_position"] = 0.0
        config_from_dict(typed, source="typed.yaml")


def test_renamed_key_migrates_only_where_asked(tmp_path, monkeypatch):
    """A checkpoint's config.yaml from an older genil_ros loads (migrate=True, one warning per key); the same
    key in a user's config file stays an unknown-key error that names the new key."""
    from genil_ros.config_migrations import RENAMED_KEYS

    old = write(tmp_path, GOOD + "finetune: {disc_max_accuracy: 0.95, iterations: 7}\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: finetune.disc_max_accuracy: unknown key \(renamed: it is "
                                          r"finetune.disc_max_saturation now\)"):
        load_config(old)
    with pytest.warns(UserWarning, match=r"cfg.yaml: finetune.disc_max_accuracy \(0.95\) is from an older "
                                         r"genil_ros: replaced by finetune.disc_max_saturation.*keeps its default"):
        cfg = load_config(old, migrate=True)
    assert cfg.finetune.disc_max_saturation == 0.8 and cfg.finetune.iterations == 7  # the rest is kept
    # a plain rename carries the value over (converted); a new key already there wins over the old one
    monkeypatch.setitem(RENAMED_KEYS, "train.learning_rate", ("train.lr", lambda v: v / 10))
    with pytest.warns(UserWarning, match=r"train.learning_rate \(0.01\).*renamed to train.lr \(value 0.001\)"):
        assert load_config(write(tmp_path, GOOD + "train: {learning_rate: 0.01}\n"), migrate=True).train.lr == 0.001
    with pytest.warns(UserWarning, match="dropped: train.lr is there too"):
        both = write(tmp_path, GOOD + "train: {learning_rate: 0.01, lr: 0.5}\n")
        assert load_config(both, migrate=True).train.lr == 0.5
    with pytest.raises(ConfigError, match=r"train.learning_rate: unknown key \(renamed: it is train.lr now\)"):
        load_config(both)

