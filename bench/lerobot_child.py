"""LeRobot's DiffusionPolicy, timed on request: the half of bench/lerobot_side.py that runs inside the
LeRobot virtualenv (.bench/lerobot-venv). Never imports genil_ros.

Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"op": "setup", "down_dims": [...], "camera": bool, "threads": n, "steps": 10, "batch": 64}
  {"op": "chunk", "runs": n}     -> {"ms": [...]}  reset() + select_action(obs): one chunk per call
  {"op": "train", "iters": n}    -> {"s": [...]}   forward (loss) + backward + AdamW step on a batch
  {"op": "quit"}
Inputs are given already normalised (LeRobot 0.4 normalises in its processor pipeline, outside the model).
Low-dim: LeRobot needs an image or an environment state, so the 4 joint positions go in as both
``observation.state`` and ``observation.environment_state``.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    import lerobot
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    policy = obs = batch = opt = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "setup":
            torch.set_num_threads(int(cmd["threads"]))
            torch.manual_seed(0)
            feats = {"observation.state": PolicyFeature(FeatureType.STATE, (4,))}
            if cmd["camera"]:
                feats["observation.images.front"] = PolicyFeature(FeatureType.VISUAL, (3, 96, 96))
            else:
                feats["observation.environment_state"] = PolicyFeature(FeatureType.ENV, (4,))
            cfg = DiffusionConfig(
                input_features=feats, output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
                n_obs_steps=2, horizon=16, n_action_steps=8, down_dims=tuple(cmd["down_dims"]), kernel_size=5,
                n_groups=8, diffusion_step_embed_dim=128, use_film_scale_modulation=True, crop_shape=(86, 86),
                pretrained_backbone_weights=None, use_group_norm=True, spatial_softmax_num_keypoints=32,
                noise_scheduler_type="DDIM", num_train_timesteps=100, num_inference_steps=int(cmd["steps"]),
                prediction_type="epsilon", clip_sample=True, device="cpu")
            policy = DiffusionPolicy(cfg).eval()
            obs = {k: torch.rand(1, *f.shape) for k, f in feats.items()}
            B = int(cmd["batch"])
            batch = {k: torch.rand(B, 2, *f.shape) for k, f in feats.items()}
            batch["action"] = torch.rand(B, 16, 4) * 2 - 1
            batch["action_is_pad"] = torch.zeros(B, 16, dtype=torch.bool)
            opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)
            reply = {"params": sum(p.numel() for p in policy.parameters()), "torch": torch.__version__,
                     "lerobot": getattr(lerobot, "__version__", "?")}
        elif op == "chunk":
            policy.eval()
            ms = []
            with torch.no_grad():
                for _ in range(int(cmd["runs"])):
                    t0 = time.perf_counter()
                    policy.reset()
                    policy.select_action(dict(obs))
                    ms.append((time.perf_counter() - t0) * 1e3)
            reply = {"ms": ms}
        elif op == "train":
            policy.train()
            s = []
            for _ in range(int(cmd["iters"])):
                t0 = time.perf_counter()
                loss, _ = policy.forward(dict(batch))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                s.append(time.perf_counter() - t0)
            reply = {"s": s}
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
