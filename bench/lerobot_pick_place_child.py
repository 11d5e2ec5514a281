"""LeRobot's DiffusionPolicy trained and queried on request: the half of bench/lerobot_pick_place.py that runs
inside the LeRobot virtualenv (.bench/lerobot-venv). Never imports genil_ros.

Reads one JSON command per line on stdin, answers one JSON line on stdout (progress goes to stderr):
  {"op": "setup", "config": {...DiffusionConfig fields...}, "state_dim": n, "env_dim": m, "action_dim": a,
   "threads": t, "seed": s}
  {"op": "train", "data": "windows.npz", "steps": n, "batch": 64, "out": DIR}
      -> {"losses": [...], "seconds": s, "samples_per_s": x}; trains with LeRobot's own recipe (the policy's
         optimizer and scheduler presets, grad-clip 10) on the windows in the file and saves the policy and
         the normalisation statistics to DIR (LeRobot's save_pretrained + stats.json)
  {"op": "load", "dir": DIR}
  {"op": "predict", "obs": "obs.npy"}  -> {"actions": "actions.npy"}: (B, T_o, state+env) raw observations
      in, (B, T_a, A) raw actions out (the executed part of the chunk, from generate_actions)
  {"op": "quit"}

windows.npz holds ``obs`` (N, T_o, state_dim + env_dim) and ``action`` (N, T_p, A), raw units, built by the
parent from the very training samples genil_ros trained on. Normalisation is LeRobot's default for a
diffusion policy (MIN_MAX to [-1, 1] for state, environment state and action), applied here because
LeRobot 0.4 normalises in its processor pipeline, outside the model. The first ``state_dim`` columns of an
observation are ``observation.state`` (the robot: arm joints, gripper), the rest
``observation.environment_state`` (the object position).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

EPS = 1e-8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Side:
    def __init__(self, cmd: dict):
        import torch
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        torch.set_num_threads(int(cmd["threads"]))
        torch.manual_seed(int(cmd["seed"]))
        self.torch = torch
        self.sd, self.ed, self.ad = int(cmd["state_dim"]), int(cmd["env_dim"]), int(cmd["action_dim"])
        feats = {"observation.state": PolicyFeature(FeatureType.STATE, (self.sd,)),
                 "observation.environment_state": PolicyFeature(FeatureType.ENV, (self.ed,))}
        c = dict(cmd["config"])
        c["down_dims"] = tuple(c["down_dims"])
        self.cfg = DiffusionConfig(input_features=feats,
                                   output_features={"action": PolicyFeature(FeatureType.ACTION, (self.ad,))},
                                   device="cpu", **c)
        self.policy = DiffusionPolicy(self.cfg)
        self.stats = None

    # ------------------------------------------------------------------ normalisation (MIN_MAX)
    def _norm(self, x, key):
        lo, hi = self.stats[key]
        return (x - lo) / np.maximum(hi - lo, EPS) * 2.0 - 1.0

    def _unnorm(self, y, key):
        lo, hi = self.stats[key]
        return (y + 1.0) / 2.0 * np.maximum(hi - lo, EPS) + lo

    def _batch(self, obs: np.ndarray) -> dict:
        t = self.torch
        o = self._norm(obs, "obs").astype(np.float32)
        return {"observation.state": t.from_numpy(np.ascontiguousarray(o[..., :self.sd])),
                "observation.environment_state": t.from_numpy(np.ascontiguousarray(o[..., self.sd:]))}

    # ------------------------------------------------------------------ ops
    def train(self, cmd: dict) -> dict:
        t = self.torch
        data = np.load(cmd["data"])
        obs, act = data["obs"].astype(np.float64), data["action"].astype(np.float64)
        self.stats = {"obs": (obs.reshape(-1, obs.shape[-1]).min(0), obs.reshape(-1, obs.shape[-1]).max(0)),
                      "action": (act.reshape(-1, act.shape[-1]).min(0), act.reshape(-1, act.shape[-1]).max(0))}
        nobs = self._batch(obs)
        nact = t.from_numpy(self._norm(act, "action").astype(np.float32))
        steps, bs = int(cmd["steps"]), int(cmd["batch"])
        opt = self.cfg.get_optimizer_preset().build(self.policy.get_optim_params())
        sched = self.cfg.get_scheduler_preset().build(opt, steps)
        clip = float(self.cfg.get_optimizer_preset().grad_clip_norm)
        gen = t.Generator().manual_seed(int(cmd.get("seed", 0)))
        pad = t.zeros(bs, act.shape[1], dtype=t.bool)
        self.policy.train()
        losses, t0 = [], time.perf_counter()
        for step in range(steps):
            idx = t.randint(0, len(nact), (bs,), generator=gen)
            batch = {k: v[idx] for k, v in nobs.items()}
            batch.update({"action": nact[idx], "action_is_pad": pad})
            loss, _ = self.policy.forward(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t.nn.utils.clip_grad_norm_(self.policy.parameters(), clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if (step + 1) % 100 == 0 or step + 1 == steps:
                el = time.perf_counter() - t0
                log(f"lerobot train {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f} "
                    f"{(step + 1) * bs / el:.0f} samples/s")
        seconds = time.perf_counter() - t0
        out = Path(cmd["out"])
        out.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(out)
        (out / "stats.json").write_text(json.dumps({k: [v[0].tolist(), v[1].tolist()]
                                                     for k, v in self.stats.items()}))
        self.policy.eval()
        return {"losses": losses[::10], "final_loss": float(np.mean(losses[-100:])), "seconds": seconds,
                "samples_per_s": steps * bs / seconds}

    def load(self, cmd: dict) -> dict:
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        d = Path(cmd["dir"])
        self.policy = DiffusionPolicy.from_pretrained(d, config=self.cfg, local_files_only=True).eval()
        saved = json.loads((d / "stats.json").read_text())
        self.stats = {k: (np.array(v[0]), np.array(v[1])) for k, v in saved.items()}
        return {"loaded": str(d)}

    def predict(self, cmd: dict) -> dict:
        obs = np.load(cmd["obs"]).astype(np.float64)
        with self.torch.no_grad():
            act = self.policy.diffusion.generate_actions(self._batch(obs)).numpy()
        out = cmd["obs"].replace("obs", "actions")
        np.save(out, self._unnorm(act.astype(np.float64), "action").astype(np.float32))
        return {"actions": out}


def main() -> int:
    import lerobot

    side = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        try:
            if op == "setup":
                side = Side(cmd)
                import torch

                reply = {"params": sum(p.numel() for p in side.policy.parameters()), "torch": torch.__version__,
                         "lerobot": getattr(lerobot, "__version__", "?")}
            elif op in ("train", "load", "predict"):
                reply = getattr(side, op)(cmd)
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as e:  # report, do not hang the parent
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
